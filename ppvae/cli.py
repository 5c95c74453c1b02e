"""The ``ppvae`` command: train, evaluate, compare, sample, plot, parts and demo, each working on run folders."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import ppvae
from ppvae import viz
from ppvae.atomic import write_text_atomic
from ppvae.compare import Comparison
from ppvae.data import BINARIZE_METHODS, DATASET_NAMES, ImageDataset
from ppvae.demo import run_demo
from ppvae.estimator import METHODS, model_names
from ppvae.estimator.evidence import PROPOSALS, point_mass
from ppvae.estimator.figures import run_figures
from ppvae.estimator.options import CHANGEABLE_ON_RESUME
from ppvae.estimator.runs import CHECKPOINT, data_source_of, read_spec
from ppvae.estimator.runs import build as build_run_model
from ppvae.infer import ACCELERATORS, OBJECTIVES, PRECISIONS, STRATEGIES
from ppvae.parts import REGISTRIES, normalize_spec
from ppvae.report import evaluation_table
from ppvae.specs import build_model, part_flags, read_toml, spec_differences

DEFAULT_DATASET = "fashion-mnist"


# -- data -----------------------------------------------------------------------------------------


def data_table(args: argparse.Namespace, table: dict | None = None) -> dict:
    """The data a command names: the spec file's ``[data]`` table with the flags over it, nothing filled in."""
    table = dict(table or {})
    for key in ("dataset", "data", "root", "limit", "test_limit"):
        if getattr(args, key, None) is not None:
            table[key] = getattr(args, key)
    if getattr(args, "dequantize", False):
        table["dequantize"] = True
    unknown = sorted(set(table) - {"dataset", "data", "root", "limit", "test_limit", "dequantize"})
    if unknown:
        raise ValueError(f"unknown [data] keys {unknown}; known: dataset, data, root, limit, test_limit, dequantize")
    return table


def data_source(args: argparse.Namespace, table: dict | None = None) -> dict:
    """What the run trains on, recorded in the run so that evaluate can find the same test set.

    Flags override the spec file's ``[data]`` table.
    """
    table = data_table(args, table)
    if table.get("data"):
        source = {"path": str(Path(table["data"]).resolve()), "test_fraction": 0.1}
    else:
        source = {"dataset": table.get("dataset", DEFAULT_DATASET), "root": table.get("root")}
    for key in ("limit", "test_limit"):
        _check_count(f"--{key.replace('_', '-')}", table.get(key))
    return {
        **source,
        "limit": table.get("limit"),
        "test_limit": table.get("test_limit"),
        "dequantize": bool(table.get("dequantize", False)),
    }


def _data_keys(table: dict) -> list[str]:
    """The keys of a data source that a ``[data]`` table sets (``data``, a file, is recorded as its ``path``)."""
    return ["path" if key == "data" else key for key in table]


def _check_count(flag: str, value: object) -> None:
    """A count the user gave (a limit, a number of images, a batch size): a positive integer, or absent."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{flag} must be a positive whole number, got {value!r}")


def load_data(source: dict, split: str, dequantized: bool = True) -> ImageDataset:
    """The train or test split of a recorded data source (dequantised, seeded, if the run was)."""
    if "path" in source:
        train, test = ppvae.data.load(source["path"]).random_split(source.get("test_fraction", 0.1), seed=0)
        data = train if split == "train" else test
    else:
        data = ppvae.data.load(source["dataset"], split=split, root=source.get("root"))
    limit = source.get("limit") if split == "train" else source.get("test_limit")
    data = data.subset(limit) if limit is not None else data
    if dequantized and source.get("dequantize"):
        data = ppvae.data.dequantize(data, seed=0 if split == "train" else 1)
    return data


def _binarize(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _compile(value: str) -> str | bool:
    choices = {"auto": "auto", "true": True, "false": False}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError(f"choose auto, true or false, not {value!r}")
    return choices[value.lower()]


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("data")
    group.add_argument("--dataset", choices=sorted(DATASET_NAMES), help=f"a named dataset (default {DEFAULT_DATASET})")
    group.add_argument("--data", metavar="PATH", help="your own images: a .npy/.pt array or a folder of image files")
    group.add_argument(
        "--root", help="folder holding the dataset's IDX files (default: $PPVAE_DATA, then Debian's path)"
    )
    group.add_argument("--limit", type=int, help="use only the first N training images")
    group.add_argument("--test-limit", type=int, help="use only the first N test images")


# -- commands -------------------------------------------------------------------------------------

FIT_DEFAULTS = ppvae.LatentVariableModel.fit_defaults()  # one source of truth: the signature of fit
SET_BY_COMMAND = ("test", "out", "resume", "overwrite", "progress", "y")  # fit arguments the train command fills itself
FIT_FLAGS = tuple(k for k in FIT_DEFAULTS if k not in SET_BY_COMMAND)
RESUME_FLAGS = ("epochs", "accelerator", "devices", "strategy", "num_workers")  # what a resumed run may change


def command_spec(args: argparse.Namespace, extra: Sequence[str]) -> tuple[dict, dict, dict]:
    """(model, fit, data) as the command gives them: the ``--spec`` file, then flags; no defaults filled in."""
    tables = read_toml(args.spec) if args.spec else {"model": {}, "fit": {}, "data": {}}
    model = tables["model"]
    unknown = sorted(set(tables["fit"]) - set(FIT_FLAGS))
    if unknown:
        raise ValueError(f"unknown [fit] keys {unknown}; known: {', '.join(FIT_FLAGS)}")
    model_keys = ("model", "z_dim", "beta", "prior", "likelihood", "guide", "network", "method", "visible")
    for key in (*model_keys, "corruption", "classifier_weight", "classifier_network"):
        value = getattr(args, key)
        if key == "z_dim" and isinstance(value, list) and len(value) == 1:
            value = value[0]  # one layer
        if value is not None:
            model["name" if key == "model" else key] = value
    if getattr(args, "layer_hidden", None):
        model["layer_hidden"] = args.layer_hidden
    if args.hidden:
        model["network"] = {**normalize_spec(model.get("network", "mlp"), "network"), "hidden": args.hidden}
    model = part_flags(model, extra)
    fit = dict(tables["fit"])
    fit.update({key: getattr(args, key) for key in FIT_FLAGS if getattr(args, key, None) is not None})
    return model, fit, data_table(args, tables["data"])


def run_spec(args: argparse.Namespace, extra: Sequence[str]) -> tuple[dict, dict, dict]:
    """(model, fit, data source) for ``train``: defaults, then the ``--spec`` file, then flags."""
    model, fit, table = command_spec(args, extra)
    return model, fit, data_source(args, table)


def cmd_train(args: argparse.Namespace, extra: Sequence[str] = ()) -> dict:
    if args.resume:
        model, train, test, fit = resume_spec(args, extra)
    else:
        model_spec, fit, source = run_spec(args, extra)
        train, test = load_data(source, "train"), load_data(source, "test")
        model = build_model(model_spec, train.shape, train)
        model.fit_record.data_source = source
    print(f"training on {train}\ntesting on {test}")
    model.fit(
        train, test=test, out=args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, **fit
    )
    last = model.history[-1]
    score = last.get("test_elbo", last.get("test_log_likelihood"))
    epochs = len(model.history)
    trained = (
        f"by EM in {last['iterations']} iterations"
        if "iterations" in last
        else f"after {epochs} epoch{'s' if epochs != 1 else ''}"
    )
    print(
        f"wrote {args.out}: {model!r}, test {'ELBO' if 'test_elbo' in last else 'log p(x)'} {score:.2f} nats "
        f"per image {trained}"
    )
    return last


def cmd_sweep(args: argparse.Namespace, extra: Sequence[str] = ()) -> ppvae.Sweep:
    given = {k: getattr(args, k) for k in ("beta", "z_dim") if getattr(args, k)}
    several = [k for k, values in given.items() if len(values) > 1]
    if len(given) == 1:
        parameter = next(iter(given))
    elif len(several) == 1:
        parameter = several[0]
    else:
        raise ValueError("sweep one setting: give several values to --beta or to --z-dim (the other at most one)")
    values = given.pop(parameter)
    for key in ("beta", "z_dim"):  # the one held fixed goes to the model spec as a single value
        setattr(args, key, given[key][0] if key in given else None)
    model_spec, fit, source = run_spec(args, extra)
    fit["overwrite"] = args.overwrite
    train, test = load_data(source, "train"), load_data(source, "test")
    name = model_spec.pop("name", "VAE")
    result = ppvae.sweep(
        train,
        test,
        **{parameter: values},
        model=name,
        model_options=model_spec,
        fit_options=fit,
        out=args.out,
        num_samples=args.num_samples,
        k=args.k,
        projection=args.projection,
        progress=not args.quiet,
    )
    print("\n" + result.to_markdown())
    print(
        f"\nwrote {Path(args.out) / 'sweep.md'}, sweep.json, {', '.join(p.name for p in result.figures.values())} "
        f"and a run folder per value"
    )
    return result


def resume_spec(args: argparse.Namespace, extra: Sequence[str]) -> tuple:
    """(model, train, test, fit options) to continue the run in ``--out``, built from the run itself.

    The training command may be given again with ``--resume``: options equal to the run's are accepted, one
    that differs is refused naming both values; ``--epochs`` sets the total to reach (the run's own by
    default), ``--lr`` and ``--clip-norm`` may change (the run records them), the engine flags are free.
    """
    spec = read_spec(args.out)
    source = data_source_of(spec)
    if source is None:
        raise ValueError(f"{args.out} does not record its data, so it cannot be resumed from the command line")
    model_spec, fit, given_data = command_spec(args, extra)
    train, test = load_data(source, "train"), load_data(source, "test")
    model = build_run_model(spec, args.out)
    differ = [
        f"{_flag(key)} {_shown(ours)} (the run's: {_shown(theirs)})"
        for key, (ours, theirs) in spec_differences(
            model_spec, build_model({"name": spec["model"], **model_spec}, train.shape, train), model
        ).items()
    ]
    ours = data_source(args, given_data)
    differ += [
        f"{_flag(key)} {_shown(ours.get(key))} (the run's: {_shown(source.get(key))})"
        for key in _data_keys(given_data)
        if ours.get(key) != source.get(key)
    ]
    recorded = spec.get("fit", {})
    options = {k: v for k, v in fit.items() if k in RESUME_FLAGS or k in CHANGEABLE_ON_RESUME}
    for key, value in fit.items():
        if key in RESUME_FLAGS or key not in recorded or value == recorded[key]:
            continue
        if key == "binarize" and value == "auto":
            continue
        if key in CHANGEABLE_ON_RESUME and value == FIT_DEFAULTS[key]:  # fit reads its default as 'not asked'
            differ.append(
                f"{_flag(key)} {value} (the run's: {recorded[key]}; this is fit's default, which a resumed fit "
                "reads as 'keep the run's')"
            )
        elif key not in CHANGEABLE_ON_RESUME:
            differ.append(f"{_flag(key)} {_shown(value)} (the run's: {_shown(recorded[key])})")
    if differ:
        raise ValueError(
            f"--resume continues the run in {args.out} as it was built and fitted, and this command changes "
            f"{'; '.join(differ)}: give the run's values or leave them out (--epochs may grow; --lr and "
            "--clip-norm may change), or start a new run with --overwrite"
        )
    options.setdefault("epochs", recorded.get("epochs", FIT_DEFAULTS["epochs"]))
    model.fit_record.data_source = source
    return model, train, test, options


def _flag(key: str) -> str:
    return "--model" if key == "name" else f"--{key.replace('_', '-')}"


def _shown(value: object) -> str:
    """A value as it is typed on the command line: lists spaced, parts by their options."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, dict):  # a part: its name, then the options it was given
        return " ".join([str(value.get("name")), *(f"{k}={v}" for k, v in value.items() if k != "name")])
    return str(value)


def _run_test_data(args: argparse.Namespace, spec: dict, dequantized: bool = True) -> ImageDataset:
    if args.dataset or args.data:
        return load_data(data_source(args), "test", dequantized)
    source = data_source_of(spec)
    if source is None:
        raise ValueError(f"{args.run} does not record its data; pass --dataset or --data")
    _check_count("--test-limit", args.test_limit)
    if args.test_limit:
        source = {**source, "test_limit": args.test_limit}
    return load_data(source, "test", dequantized)


def cmd_evaluate(args: argparse.Namespace) -> dict:
    _check_count("--batch-size", args.batch_size)
    spec = read_spec(args.run)
    model = ppvae.load(args.run, device=args.device)
    test = _run_test_data(args, spec)
    started = time.perf_counter()
    scores = model.evaluate(
        test,
        batch_size=args.batch_size,
        seed=args.seed,
        num_samples=args.num_samples,
        method=args.method,
        progress=not args.quiet,
        **evidence_options(args),
    )
    scores["seconds"] = time.perf_counter() - started
    print(f"{model!r} on {test}\n")
    levels = None if model.capabilities.binary else 256
    print(evaluation_table(scores, model.x_dim, levels, point_mass=point_mass(model)))
    write_text_atomic(Path(args.run) / "evaluation.json", strict_json(scores) + "\n")
    return scores


def cmd_compare(args: argparse.Namespace) -> Comparison:
    """Score several runs on one test set: a markdown table and side-by-side figures."""
    models = {Path(run).name: ppvae.load(run, device=args.device) for run in args.runs}
    args.run = args.runs[0]
    test = _run_test_data(args, read_spec(args.runs[0]), dequantized=False)  # compare dequantises per model
    comparison = ppvae.compare(
        models,
        test,
        num_samples=1000 if args.num_samples is None else args.num_samples,
        out=args.out,
        seed=args.seed,
        progress=not args.quiet,
        show=False,
        method=args.method,
        **evidence_options(args),
    )
    table = comparison.to_markdown()
    print(table)
    out = Path(args.out)
    write_text_atomic(out / "comparison.json", json.dumps(comparison.rows, indent=2) + "\n")
    figures = "".join(f"\n![{name}]({path.name})\n" for name, path in comparison.figures.items())
    write_text_atomic(out / "comparison.md", f"# Comparison on {test}\n\n{table}\n{figures}")
    print(f"\nwrote {out / 'comparison.md'} and {', '.join(p.name for p in comparison.figures.values())}")
    return comparison


def evidence_options(args: argparse.Namespace) -> dict:
    """The estimator's settings given on the command line (the evidence door refuses them under another
    method)."""
    _check_count("--num-samples", args.num_samples or None)  # 0: no log p(x)
    for flag in ("chains", "steps"):
        _check_count(f"--{flag}", getattr(args, flag))
    if args.num_samples == 0 and args.method == "is":
        raise ValueError("--num-samples 0 asks for no log p(x), --method is for one: give K >= 1, or leave one out")
    if args.num_samples is not None and args.method not in (None, "is"):
        raise ValueError(f"--num-samples is importance sampling's; --method {args.method} does not take it")
    return {flag: getattr(args, flag) for flag in ("chains", "steps", "proposal") if getattr(args, flag) is not None}


def add_evidence_arguments(p: argparse.ArgumentParser, default_samples: str) -> None:
    """--method and the options of its estimators, for evaluate and compare."""
    group = p.add_argument_group("evidence (log p(x))")
    group.add_argument(
        "--method",
        choices=METHODS,
        help="is (importance sampling), ais (annealed importance sampling), "
        "quadrature (z_dim <= 2) or exact (factor analysis); default: exact where a model has it, else is",
    )
    group.add_argument("--num-samples", type=int, metavar="K", help=f"importance samples ({default_samples})")
    group.add_argument(
        "--proposal",
        choices=PROPOSALS,
        help="where IS draws its samples and AIS starts its chains: guide (q(z | x), the default), prior, or "
        "defensive (IS: q mixed with the prior); an autoencoder's point-mass guide needs prior",
    )
    group.add_argument("--chains", type=int, help="AIS chains per image (default 16)")
    group.add_argument("--steps", type=int, help="AIS intermediate distributions (default 500)")


def strict_json(values: dict) -> str:
    """JSON that every parser reads: a non-finite number (a standard error of one image) becomes null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    return json.dumps(clean, indent=2, allow_nan=False)


def cmd_sample(args: argparse.Namespace) -> str:
    _check_count("-n", args.n)
    model = ppvae.load(args.run, device=args.device)
    out = Path(args.out or Path(args.run) / "samples.png")
    if args.label is not None and model.capabilities.condition != "labels":
        raise ValueError(f"{args.run} holds an unconditional {type(model).__name__}; --label needs a CVAE")
    if not model.capabilities.samples_from_prior:  # a completion model: fill in test images
        test = _run_test_data(args, read_spec(args.run), dequantized=False)
        x = model.prepare(test.subset(args.n), seed=args.seed)
        visible = args.visible or 2
        rows = ppvae.completion_rows({type(model).__name__: model}, x, visible, samples=3, seed=args.seed)
        viz.image_rows(rows, out, title=f"{args.n} test images completed from {visible} quadrant(s)")
    else:
        if args.visible is not None:
            raise ValueError(f"{args.run} holds a {type(model).__name__}; --visible is for completion models")
        label = f" of {args.label}" if args.label is not None else ""
        samples = model.sample(args.n, y=args.label, seed=args.seed).cpu()
        viz.image_grid(samples, out, title=f"{args.n} samples{label}", nrow=min(args.n, 8))
    print(f"wrote {out}")
    return str(out)


def cmd_plot(args: argparse.Namespace) -> list[str]:
    model = ppvae.load(args.run, device=args.device)
    if not args.kinds:  # the run's own figures
        paths = [str(p) for p in run_figures(model, model.fit_record, Path(args.run))]
        print("wrote " + ", ".join(paths))
        return paths
    unknown = [k for k in args.kinds if k not in ppvae.plots.KINDS]
    if unknown:
        raise ValueError(f"unknown figure {', '.join(unknown)}; choose from {', '.join(ppvae.plots.KINDS)}")
    by_class = [k for k in args.kinds if k in ("manifold", "traverse")]
    if by_class and args.label is None and model.capabilities.condition == "labels":
        example = (model.classes or ["3"])[0]
        raise ValueError(
            f"a {type(model).__name__} draws {' and '.join(by_class)} for one class: add --label (--label {example!r})"
        )
    needs_data = any(k not in ("manifold", "traverse", "training") for k in args.kinds)
    test = (
        _run_test_data(args, read_spec(args.run), dequantized=False)
        if needs_data or args.dataset or args.data
        else None
    )
    projection = tuple(int(d) for d in args.projection.split(",")) if "," in args.projection else args.projection
    options = {"projection": projection, "y": args.label, "seed": args.seed}
    options.update({k: v for k, v in (("source", args.source), ("target", args.target)) if v is not None})
    paths = [str(ppvae.plot(model, kind, test, args.run, **options)) for kind in args.kinds]
    print("wrote " + ", ".join(paths))
    return paths


def cmd_parts(args: argparse.Namespace) -> None:
    for kind, registry in REGISTRIES.items():
        print(f"{kind}s:")
        for name, options, doc in registry.describe():
            shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
            print(f"  {name:22s} {doc}" + (f"\n  {'':22s} options: {shown}" if shown else ""))
        print()


def cmd_demo(args: argparse.Namespace) -> Path:
    """Train the default VAE on Fashion-MNIST, estimate its evidence, compare it with factor analysis, report."""
    for flag in ("num_samples", "evidence_images", "ais_images", "ais_steps"):
        _check_count(f"--{flag.replace('_', '-')}", getattr(args, flag))
    return run_demo(
        args.out,
        epochs=args.epochs,
        limit=args.limit,
        root=args.root,
        seed=args.seed,
        device=args.device,
        num_samples=args.num_samples,
        evidence_images=args.evidence_images,
        ais_images=args.ais_images,
        ais_steps=args.ais_steps,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )


# -- parser ---------------------------------------------------------------------------------------


def add_run_options(p: argparse.ArgumentParser, seed: bool = True, quiet: bool = True) -> None:
    """The options every command that computes shares: --seed, --device and --quiet."""
    if seed:
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_training_arguments(p: argparse.ArgumentParser, swept: bool = False) -> None:
    """The model, data, fit and engine flags of ``train`` (``swept``: --beta and --z-dim take several values)."""
    p.add_argument(
        "--spec", metavar="TOML", help="a spec file with [model], [fit] and [data] tables; flags override it"
    )
    group = p.add_argument_group("model")
    group.add_argument(
        "--model",
        choices=sorted(model_names()),
        help="VAE (default), cvae (learns from the labels), m2 (learns from a few labels and many images: "
        "--labels N), factor-analysis, completion (a CVAE that fills in hidden quadrants) or completion-network "
        "(its deterministic baseline)",
    )
    if swept:
        group.add_argument("--z-dim", type=int, nargs="+", help="latent sizes to sweep (or a single size)")
        group.add_argument("--beta", type=float, nargs="+", help="KL weights to sweep")
    else:
        group.add_argument(
            "--z-dim",
            type=int,
            nargs="+",
            help="latent dimensions (default 20); several are a hierarchy of stochastic layers, z1 (next to x) "
            "first: --z-dim 64 32",
        )
        group.add_argument("--beta", type=float, help="weight of the KL term (a beta-VAE)")
    for kind, registry in REGISTRIES.items():
        group.add_argument(f"--{kind}", choices=registry.names(), help=f"the {kind} by name")
    group.add_argument("--hidden", type=int, nargs="+", help="hidden layer widths of the MLP (as --network-hidden)")
    group.add_argument(
        "--layer-hidden", type=int, nargs="+", help="with several --z-dim: hidden widths between two stochastic layers"
    )
    group.add_argument("--method", choices=["em", "svi"], help="factor analysis: closed-form EM (default) or SVI")
    group.add_argument(
        "--classifier-weight",
        type=float,
        metavar="ALPHA",
        help="m2: weight of the classifier's log-likelihood on each labelled image (0: none)",
    )
    group.add_argument(
        "--classifier-network",
        choices=REGISTRIES["network"].names(),
        help="m2: the network of its classifier q(y | x) (default: --network)",
    )
    group.add_argument(
        "--visible",
        type=int,
        nargs="+",
        choices=[1, 2, 3],
        help="completion models: the numbers of visible quadrants training shows (default 1 2 3)",
    )
    add_data_arguments(p)
    p.add_argument(
        "--dequantize", action="store_true", help="(pixel + u) / 256: continuous data for continuous likelihoods"
    )
    group = p.add_argument_group("fit")
    group.add_argument("--epochs", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--lr", type=float)
    group.add_argument("--binarize", type=_binarize, choices=[*BINARIZE_METHODS, "auto"])
    group.add_argument("--elbo", choices=OBJECTIVES)
    group.add_argument("--num-particles", type=int, help="samples per image (K for --elbo iwae)")
    group.add_argument(
        "--kl-warmup", type=int, metavar="EPOCHS", help="raise the KL weight from ~0 to beta over EPOCHS"
    )
    group.add_argument("--clip-norm", type=float, metavar="NORM", help="clip the gradient norm at NORM")
    group.add_argument("--seed", type=int, help="fixes the weights, the data order and the noise")
    group.add_argument(
        "--labels",
        type=int,
        dest="labelled",
        metavar="N",
        help="m2: keep N training labels, N / classes of each class drawn with --seed; the rest are hidden",
    )
    group.add_argument(
        "--labelled-share",
        type=float,
        metavar="SHARE",
        help="m2: repeat the labelled images until they make up SHARE of each epoch (default 0.5; 0: each image once)",
    )
    group.add_argument(
        "--compile",
        type=_compile,
        metavar="{auto,true,false}",
        help="auto: each step runs the model's ELBO lowered to plain torch where it has one (checked against its "
        "Pyro programs on the first batch; on a GPU also captured in a CUDA graph); true: also torch.compile it "
        "(seconds of compiling first); false: the programs",
    )
    group.add_argument(
        "--validation",
        type=float,
        metavar="FRACTION",
        help="hold out this fraction of the training images; the best epoch on it is the one kept",
    )
    group.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better validation ELBO (needs --validation)",
    )
    group.add_argument(
        "--snapshot-epochs",
        type=int,
        nargs="+",
        metavar="EPOCH",
        help="keep the latent means of test images after these epochs, for `ppvae plot RUN training`",
    )
    group = p.add_argument_group("engine (Lightning Fabric)")
    group.add_argument("--accelerator", choices=ACCELERATORS, help="default auto: a GPU if torch sees one")
    group.add_argument(
        "--devices", type=int, metavar="N", help="data-parallel processes (one per GPU, or CPU processes)"
    )
    group.add_argument("--strategy", choices=STRATEGIES)
    group.add_argument("--precision", choices=PRECISIONS)
    group.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers for data read from disk")


class Parser(argparse.ArgumentParser):
    """argparse's parser, its mistakes in one line like every other user's mistake (the usage is a --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ppvae", description="Variational autoencoders as Pyro programs.")
    parser.add_argument("--version", action="version", version=f"ppvae {ppvae.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a model and write a run folder. Part options: --<part>-<option> VALUE, for example "
        "--prior mixture --prior-components 10 or --likelihood normal --likelihood-scale learned (see `ppvae parts`).",
    )
    add_training_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, up to --epochs in all (the run's own by default); "
        "the training command may be given again: options must equal the run's, but --lr and --clip-norm may change",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (a folder that holds anything is refused without --resume or --overwrite)",
    )
    p.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "sweep",
        help="train one model at several values of beta or z_dim: table and figures",
        description="Train the model at each value of --beta (or --z-dim), then tabulate test ELBO, reconstruction, "
        "KL, log p(x), active units and k-NN accuracy, and draw samples, per-dimension variances and the latent "
        "means per value. Example: ppvae sweep --beta 0.001 0.1 1 4 16 1024 --out runs/beta",
    )
    add_training_arguments(p, swept=True)
    p.add_argument(
        "--num-samples", type=int, default=1000, metavar="K", help="importance samples for log p(x) (0: skip)"
    )
    p.add_argument("--k", type=int, default=5, help="neighbours for the k-NN accuracy of the latent means")
    p.add_argument(
        "--projection",
        choices=["pca", "tsne"],
        default="pca",
        help="how latent means of more than 2 dimensions are drawn in 2-D (tsne needs scikit-learn)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="folder for the table, the figures and a run folder per value")
    p.add_argument("--overwrite", action="store_true", help="replace the run folders of an earlier sweep in --out")
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser("evaluate", help="test ELBO, its parts and (with --num-samples) log p(x) of a run, in nats")
    p.add_argument("run")
    add_data_arguments(p)
    add_evidence_arguments(p, "also estimate log p(x) by importance sampling with K samples")
    p.add_argument("--batch-size", type=int, default=1000)
    add_run_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("compare", help="score runs side by side on one test set: table and figures")
    p.add_argument("runs", nargs="+", metavar="RUN")
    add_data_arguments(p)
    add_evidence_arguments(p, "default 1000; 0: no log p(x)")
    p.add_argument("--out", default="runs/compare", help="folder for comparison.md, .json and the figures")
    add_run_options(p)
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("sample", help="a PNG grid of samples from a run's model")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--label", help="a conditional model's class: an index or a name (--label sneaker)")
    p.add_argument(
        "--visible",
        type=int,
        choices=[1, 2, 3],
        help="a completion model: complete N test images from this many quadrants (default 2)",
    )
    p.add_argument("--out", help="PNG path (default: RUN/samples.png)")
    add_data_arguments(p)
    add_run_options(p, quiet=False)
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser(
        "plot",
        help="draw a run's figures: its own, or latent-space figures by kind",
        description="Without KIND, redraw the run's own figures (loss, samples, reconstructions). Kinds: scatter, "
        "manifold, traverse, interpolate, attribute, uncertainty, training. Each is written as RUN/KIND.png.",
    )
    p.add_argument("run")
    p.add_argument("kinds", nargs="*", metavar="KIND")
    add_data_arguments(p)
    p.add_argument(
        "--projection",
        default="pca",
        help="scatter/training with z_dim > 2: pca, tsne or a pair of dimensions such as 0,3",
    )
    p.add_argument("--label", help="a conditional model's class for manifold and traverse")
    p.add_argument("--source", help="attribute: the class to move from (default Sneaker)")
    p.add_argument("--target", help="attribute: the class to move to (default Ankle boot)")
    add_run_options(p, quiet=False)
    p.set_defaults(func=cmd_plot)

    p = commands.add_parser("parts", help="list every registered prior, likelihood, guide and network")
    p.set_defaults(func=cmd_parts)

    p = commands.add_parser(
        "demo", help="train on Fashion-MNIST, evaluate, compare with factor analysis, write runs/demo/report.md"
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--limit", type=int, help="train on the first N images only")
    p.add_argument("--num-samples", type=int, default=1000, metavar="K", help="importance samples for log p(x)")
    p.add_argument("--evidence-images", type=int, default=2000, metavar="N", help="test images scored by log p(x)")
    p.add_argument(
        "--ais-images", type=int, default=100, metavar="N", help="test images scored by AIS (and simulated for BDMC)"
    )
    p.add_argument("--ais-steps", type=int, default=100, metavar="T", help="AIS intermediate distributions")
    p.add_argument("--root", help="folder holding Fashion-MNIST's IDX files")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's runs in --out (make demo does)")
    add_run_options(p)
    p.set_defaults(func=cmd_demo)
    for (
        command
    ) in commands.choices.values():  # --debug before or after the command (SUPPRESS: the top level's default stands)
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )
    return parser


USER_ERRORS = (ppvae.data.DatasetNotFoundError, ValueError, OSError)
"""What a user's mistake raises (a bad flag, file, folder or spec): one line and exit code 2."""


def interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves: for train, the run folder's last checkpoint and how to continue it."""
    out = getattr(args, "out", None)
    checkpoint = Path(out) / CHECKPOINT if args.command == "train" and out else None
    if checkpoint is None or not checkpoint.exists():
        return "interrupted"
    return (
        f"interrupted; {out} keeps the checkpoint of the last finished epoch: continue with "
        f"`ppvae train --out {out} --resume --epochs N`"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user's mistake is one line on stderr and exit code 2 (``--debug`` shows the
    traceback), Ctrl-C one line and 130; anything else is a bug, reported in one line with exit code 1."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    takes_part_flags = args.command in ("train", "sweep")
    if extra and not takes_part_flags:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args, extra) if takes_part_flags else args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"ppvae {args.command}: {interrupted(args)}", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"ppvae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"ppvae {args.command}: unexpected error ({type(error).__name__}: {message}); run again with --debug "
            "for the traceback, and please report it",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
