"""The ``ppvae`` command: train, evaluate, sample, plot, parts and demo, each working on run folders."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import ppvae
from ppvae import viz
from ppvae.data import BINARIZE_METHODS, DATASETS, ImageDataset
from ppvae.infer import OBJECTIVES
from ppvae.models.runs import read_spec, save_figures
from ppvae.parts import REGISTRIES
from ppvae.report import evaluation_table, run_report

DEFAULT_DATASET = "fashion-mnist"


# -- data -----------------------------------------------------------------------------------------


def data_source(args: argparse.Namespace) -> dict:
    """What the run trains on, recorded in the run so that evaluate can find the same test set."""
    if getattr(args, "data", None):
        return {"path": str(Path(args.data).resolve()), "test_fraction": 0.1, "limit": args.limit}
    return {"dataset": args.dataset, "root": args.root, "limit": args.limit, "test_limit": args.test_limit}


def load_data(source: dict, split: str) -> ImageDataset:
    """The train or test split of a recorded data source."""
    if "path" in source:
        train, test = ppvae.data.load(source["path"]).random_split(source.get("test_fraction", 0.1), seed=0)
        data = train if split == "train" else test
    else:
        data = ppvae.data.load(source["dataset"], split=split, root=source.get("root"))
    limit = source.get("limit") if split == "train" else source.get("test_limit")
    return data.subset(limit) if limit else data


def _binarize(value: str) -> str | None:
    return None if value.lower() == "none" else value


def add_data_arguments(p: argparse.ArgumentParser, training: bool = True) -> None:
    group = p.add_argument_group("data")
    group.add_argument("--dataset", default=DEFAULT_DATASET if training else None, choices=sorted(DATASETS), help="a named dataset")
    group.add_argument("--data", metavar="PATH", help="your own images: a .npy/.pt array or a folder of image files")
    group.add_argument("--root", help="folder holding the dataset's IDX files (default: $PPVAE_DATA, then Debian's path)")
    group.add_argument("--limit", type=int, help="use only the first N training images")
    group.add_argument("--test-limit", type=int, help="use only the first N test images")


# -- commands -------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> dict:
    source = data_source(args)
    train, test = load_data(source, "train"), load_data(source, "test")
    print(f"training on {train}\ntesting on {test}")
    model = ppvae.VAE(x_shape=train.shape, z_dim=args.z_dim, network={"name": "mlp", "hidden": args.hidden})
    model.fit(
        train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, binarize=args.binarize, test=test,
        elbo=args.elbo, num_particles=args.num_particles, seed=args.seed, device=args.device,
        progress=not args.quiet, checkpoint_dir=args.out,
    )  # fmt: skip
    model.fit_config["data"] = source
    model.save(args.out)
    last = model.history[-1]
    print(f"wrote {args.out}: test ELBO {last['test_elbo']:.2f} nats per image after {len(model.history)} epochs")
    return last


def _run_test_data(args: argparse.Namespace, spec: dict) -> ImageDataset:
    if args.dataset or args.data:
        return load_data(data_source(args), "test")
    source = spec.get("fit", {}).get("data")
    if source is None:
        raise SystemExit(f"{args.run} does not record its data; pass --dataset or --data")
    if args.test_limit:
        source = {**source, "test_limit": args.test_limit}
    return load_data(source, "test")


def cmd_evaluate(args: argparse.Namespace) -> dict:
    spec = read_spec(args.run)
    model = ppvae.load(args.run, device=args.device)
    test = _run_test_data(args, spec)
    started = time.perf_counter()
    scores = model.evaluate(test, batch_size=args.batch_size, seed=args.seed, num_samples=args.num_samples,
                            progress=not args.quiet)  # fmt: skip
    scores["seconds"] = time.perf_counter() - started
    print(f"{model!r} on {test}\n")
    print(evaluation_table(scores, model.x_dim, None if model.binary_likelihood else 256))
    (Path(args.run) / "evaluation.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def cmd_sample(args: argparse.Namespace) -> str:
    model = ppvae.load(args.run, device=args.device)
    out = Path(args.out or Path(args.run) / "samples.png")
    viz.image_grid(model.sample(args.n, seed=args.seed).cpu(), out, title=f"{args.n} samples", nrow=min(args.n, 8))
    print(f"wrote {out}")
    return str(out)


def cmd_plot(args: argparse.Namespace) -> list[str]:
    model = ppvae.load(args.run)
    paths = [str(p) for p in save_figures(model, Path(args.run))]
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
    """Train the default VAE on Fashion-MNIST, evaluate it and write a report with figures."""
    out = Path(args.out)
    source = {"dataset": DEFAULT_DATASET, "root": args.root, "limit": args.limit, "test_limit": None}
    train, test = load_data(source, "train"), load_data(source, "test")
    print(f"ppvae demo: a VAE on {train}, {args.epochs} epochs; writing {out}/")
    model = ppvae.VAE(x_shape=train.shape, z_dim=20)
    model.fit(train, epochs=args.epochs, binarize="dynamic", test=test, seed=args.seed, device=args.device,
              progress=not args.quiet, checkpoint_dir=out)  # fmt: skip
    model.fit_config["data"] = source
    model.save(out)
    scores = model.evaluate(test)
    (out / "evaluation.json").write_text(json.dumps(scores, indent=2) + "\n")
    report = run_report(model, out, scores, title="ppvae demo: a VAE on Fashion-MNIST")
    print(evaluation_table(scores, model.x_dim))
    print(f"\nreport: {report}")
    return report


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppvae", description="Variational autoencoders as Pyro programs.")
    parser.add_argument("--version", action="version", version=f"ppvae {ppvae.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train a VAE and write a run folder")
    add_data_arguments(p)
    p.add_argument("--z-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[400], help="hidden layer widths of the MLP")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--binarize", type=_binarize, default="auto", choices=[*BINARIZE_METHODS, "auto"])
    p.add_argument("--elbo", default="trace", choices=OBJECTIVES)
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="run folder to write")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("evaluate", help="test ELBO, its parts and (with --num-samples) log p(x) of a run, in nats")
    p.add_argument("run")
    add_data_arguments(p, training=False)
    p.add_argument("--num-samples", type=int, metavar="K", help="also estimate log p(x) by importance sampling with K samples")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("sample", help="a PNG grid of samples from a run's model")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG path (default: RUN/samples.png)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser("plot", help="redraw a run's figures")
    p.add_argument("run")
    p.set_defaults(func=cmd_plot)

    p = commands.add_parser("parts", help="list every registered prior, likelihood, guide and network")
    p.set_defaults(func=cmd_parts)

    p = commands.add_parser("demo", help="train on Fashion-MNIST, evaluate, write runs/demo/report.md")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--limit", type=int, help="train on the first N images only")
    p.add_argument("--root", help="folder holding Fashion-MNIST's IDX files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ppvae.data.DatasetNotFoundError, FileNotFoundError, ValueError) as error:
        print(f"ppvae {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
