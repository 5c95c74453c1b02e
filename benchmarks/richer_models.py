"""What do the literature's richer posteriors and priors buy on Fashion-MNIST? One table, one training budget.

Every row trains on dynamically binarised Fashion-MNIST with the same epochs, batch size, learning rate and
seed, and is scored on the same statically binarised test images (the seeded binarisation every ppvae model
uses for held-out grey images):

- ELBO: the true ELBO per image on the test images (nats, with its standard error);
- IS: log p(x) by importance sampling from the guide with K draws, and the share of images whose Pareto
  k-hat exceeds 0.7 (where IS is not to be trusted);
- AIS: log p(x) by annealed importance sampling on the first ``--ais-images`` test images, and the gain over
  the default row on the same images (paired: the mean per-image difference and its standard error);
- BDMC gap: upper minus lower AIS bound on ``--bdmc-images`` images simulated from the model (small: AIS is
  accurate on this model's own data with these settings);
- active units per layer (Burda et al., 2016), parameters and the time of a training epoch.

A table built over several sessions is built on several machines, so the rows' own training seconds do not
compare. ``--speed`` measures instead the epoch time of every row side by side in one run (``--speed-rounds``
rounds through the rows on the first ``--speed-images`` training images, the median of each row's second
epochs); the table then gives each row's time per epoch as a multiple of the default's.

The rows: the default VAE; IWAE-trained at k=5 and k=50 (Burda et al., 2016); two stochastic layers (ELBO
and IWAE k=5); a VampPrior (Tomczak & Welling, 2018); a flow prior; a flow guide (an inverse autoregressive
flow, Kingma et al., 2016); and two combinations: two layers with a flow prior and a flow guide, and the
VampPrior trained by IWAE at k=5 (a hierarchy refuses the VampPrior, whose mixture is q(z | x) at its
pseudo-inputs and so lives on the first layer). ``--rows`` picks some by name.

    python benchmarks/richer_models.py [--epochs 10] [--limit 60000] [--test-limit 10000] [--ais-images 1000]
        [--rows default iwae-5 ...] [--out runs/richer] [--accelerator cuda]
    python benchmarks/richer_models.py --speed [--speed-images 6000] [--speed-rounds 3] [--out runs/richer]

Prints a markdown table and writes table.md, results.json, samples.pt and samples.png (16 samples per row) to
``--out``. Rows that ``--out`` already holds, measured with the same settings, are kept and not run again, so a
long table (the full test set on a 2-core CPU, or on a GPU whose time comes in short turns) can be built over
several runs, a few rows each, in any order: the gains are computed from the stored per-image AIS values
whenever the default row is among them. The files are small (per-image values to 1e-3 nats, samples as 8-bit
images), so a folder can be committed where machines do not keep what a run leaves behind.

A row itself keeps what it has reached in ``--out``/partial/<row> (not committed): the trained model, then the
ELBO and IS, then AIS a chunk of 1,000 images at a time, so a row stopped midway (a session's end, Ctrl-C)
resumes at its last finished stage when run again with the same settings, and the folder goes when the row is
done. Every chunk is a slice of the one binarisation of the test set that ELBO and IS score (the row's seed),
so an image is the same binary image in every row and the gains can be paired image by image; each chunk's
chains draw from their own seed (the row's seed plus the chunk's number).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch

import ppvae
from ppvae import viz

LAYERS = [20, 10]
AIS_CHUNK = 1000  # test images an AIS stage scores: the most a stopped row loses
IAF = {"name": "flow", "transform": "affine_autoregressive", "layers": 2}
VAMP = {"name": "vamp", "components": 500}
ROWS = {
    "default": ("the default VAE (z=20)", {}, {}),
    "iwae-5": ("IWAE-trained, k=5", {}, {"elbo": "iwae", "num_particles": 5}),
    "iwae-50": ("IWAE-trained, k=50", {}, {"elbo": "iwae", "num_particles": 50}),
    "two-layers": ("two stochastic layers (20, 10)", {"z_dim": LAYERS}, {}),
    "two-layers-iwae-5": (
        "two stochastic layers, IWAE k=5",
        {"z_dim": LAYERS},
        {"elbo": "iwae", "num_particles": 5},
    ),
    "vamp": ("VampPrior (500 pseudo-inputs)", {"prior": VAMP}, {}),
    "flow-prior": ("flow prior (4 affine couplings)", {"prior": "flow"}, {}),
    "flow-guide": ("flow guide (2-layer IAF)", {"guide": IAF}, {}),
    "combined": (
        "two layers + flow prior + flow guide",
        {"z_dim": LAYERS, "prior": "flow", "guide": IAF},
        {},
    ),
    "vamp-iwae-5": (
        "VampPrior, IWAE k=5",
        {"prior": VAMP},
        {"elbo": "iwae", "num_particles": 5},
    ),
}


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else 0.0


def said(what: str, since: float) -> float:
    """One line of progress (a row takes half an hour on a CPU); returns the time to count the next from."""
    now = time.perf_counter()
    print(f"  {what} ({now - since:.0f} s)", flush=True)
    return now


class Stages:
    """What a row has measured so far, in ``partial``/stages.json: each stage's result and the seconds spent."""

    def __init__(self, partial: Path):
        self.path = partial / "stages.json"
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {"seconds": 0.0}

    def run(self, name: str, measure, what: str):
        """``measure()``'s result, measured now and kept, or kept from an earlier run."""
        if name not in self.done:
            started = time.perf_counter()
            value = measure()
            seconds = time.perf_counter() - started
            self.done[name] = value
            self.done["seconds"] += seconds
            self.path.write_text(json.dumps(self.done))
            print(f"  {what} ({seconds:.0f} s)", flush=True)
        return self.done[name]


def ais(model, images: torch.Tensor, args, seed: int) -> list[float]:
    """AIS log p(x) of each of ``images`` (binarised already) with the table's chains and steps."""
    estimate = ppvae.log_evidence(
        model,
        images,
        method="ais",
        binarize=None,
        chains=args.chains,
        steps=args.ais_steps,
        seed=seed,
        diagnostics=True,
        progress=False,
    )
    return estimate.log_evidence.tolist()


def ais_in_chunks(model, test, args, stages: Stages) -> torch.Tensor:
    """AIS log p(x) on the first ``--ais-images`` test images, AIS_CHUNK images a stage, each chunk a slice of the
    binarisation that ELBO and IS score."""
    images = min(args.ais_images, len(test))
    binary = model.prepare(test, seed=args.seed)
    chunks = []
    for number, start in enumerate(range(0, images, AIS_CHUNK)):
        indices = torch.arange(start, min(start + AIS_CHUNK, images))
        measure = functools.partial(ais, model, binary[indices], args, args.seed + number)
        what = f"AIS, {args.chains} chains x {args.ais_steps} steps, on images {start:,} to {int(indices[-1]):,}"
        chunks.append(torch.tensor(stages.run(f"ais {start}", measure, what), dtype=torch.float64))
    return torch.cat(chunks)


def score(model, test, args, partial: Path) -> dict:
    """The row's measures of ``model``, each stage kept in ``partial`` as it ends."""
    stages = Stages(partial)
    result = stages.run(
        "evaluate",
        lambda: model.evaluate(test, num_samples=args.num_samples, seed=args.seed, progress=False),
        f"ELBO and IS, K={args.num_samples}, on {len(test):,} test images",
    )
    ais_values = ais_in_chunks(model, test, args, stages)
    row = {
        "elbo": result["elbo"],
        "elbo_se": result["elbo_se"],
        "is": result["log_px"],
        "is_se": result["log_px_se"],
        "khat_unreliable": result.get("khat_unreliable", math.nan),  # NaN: K too small for a tail fit
        "ais": mean_se(ais_values)[0],
        "ais_se": mean_se(ais_values)[1],
        "ais_per_image": [round(v, 3) for v in ais_values.tolist()],  # 1e-3 nats: far below any error bar
        "active_units": {
            site: ppvae.latent.active_units(model, test.subset(2000), site=site).count for site in model.latent_sizes
        },
        "parameters": model.num_parameters(),
        "seconds_per_epoch": sum(r["seconds"] for r in model.history) / len(model.history),
    }
    if args.bdmc_images:

        def gap():
            _, both = ppvae.bdmc(model, args.bdmc_images, chains=args.chains, steps=args.ais_steps, progress=False)
            return (both.upper - both.log_evidence).mean().item()

        row["bdmc_gap"] = stages.run("bdmc", gap, f"the BDMC gap on {args.bdmc_images} simulated images")
    row["scoring_seconds"] = stages.done["seconds"]
    return row


def gain(row: dict, default: dict | None) -> tuple[float, float] | None:
    """The paired AIS gain of ``row`` over the default row, per image, with its standard error; else None."""
    if default is None or row is default:
        return None
    return mean_se(torch.tensor(row["ais_per_image"]) - torch.tensor(default["ais_per_image"]))


def table(results: dict[str, dict], speed: dict | None = None) -> str:
    """The rows in the order of ROWS, whatever the order they were measured in.

    The last column is each row's own training seconds per epoch, or, given ``speed`` (side by side, one
    machine), its time per epoch as a multiple of the default's.
    """
    relative = speed is not None and "default" in speed["seconds"]
    lines = [
        "| model | test ELBO | IS log p(x) (k-hat > 0.7) | AIS log p(x) | gain over default (AIS) | BDMC gap "
        f"| active units | parameters | {'time / epoch' if relative else 's / epoch'} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in (key for key in ROWS if key in results):
        r, paired = results[key], gain(results[key], results.get("default"))
        gain_text = f"{paired[0]:+.2f} ± {paired[1]:.2f}" if paired else "-"
        gap = f"{r['bdmc_gap']:.2f}" if "bdmc_gap" in r else "-"
        units = " / ".join(f"{n}" for n in r["active_units"].values())
        if relative:
            seconds = speed["seconds"].get(key)
            time_text = f"{seconds / speed['seconds']['default']:.1f}x" if seconds else "-"
        else:
            time_text = f"{r['seconds_per_epoch']:.1f}"
        lines.append(
            f"| {ROWS[key][0]} | {r['elbo']:.2f} ± {r['elbo_se']:.2f} | {r['is']:.2f} ({r['khat_unreliable']:.0%}) "
            f"| {r['ais']:.2f} ± {r['ais_se']:.2f} | {gain_text} | {gap} | {units} | {r['parameters']:,} "
            f"| {time_text} |"
        )
    return "\n".join(lines)


def trained_or_kept(key: str, train, args: argparse.Namespace, partial: Path) -> ppvae.VAE:
    """Row ``key``'s model: trained and saved to ``partial``/model, or loaded from there where an earlier run
    of the row trained it."""
    folder = partial / "model"
    if (folder / "spec.json").exists():
        model = ppvae.load(folder)
        if len(model.history) == args.epochs:
            print(f"  trained {args.epochs} epochs: kept from {folder}", flush=True)
            return model
    started = time.perf_counter()
    model = trained(key, train, args, epochs=args.epochs)
    model.save(folder, figures=False, overwrite=True)
    said(f"trained {args.epochs} epochs", started)
    return model


def trained(key: str, train, args: argparse.Namespace, epochs: int) -> ppvae.VAE:
    """Row ``key``'s model, trained with the table's one budget: dynamic binarisation, Adam, one seed."""
    _, model_options, fit_options = ROWS[key]
    model = ppvae.VAE(x_shape=train.shape, **model_options)
    return model.fit(
        train,
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        binarize="dynamic",
        seed=args.seed,
        progress=False,
        accelerator=args.accelerator,
        **fit_options,
    )


def epoch_seconds(train, args) -> dict:
    """Every row's seconds per training epoch, side by side: rounds through the rows, the median of each.

    Each round builds each row's model afresh and trains it two epochs on ``train``; the second epoch is
    timed, so one-off costs (the first batch's checks) stay out. Interleaving the rows spreads whatever else
    the machine does over all of them.
    """
    times: dict[str, list[float]] = {key: [] for key in ROWS}
    for turn in range(args.speed_rounds):
        for key, (name, _, _) in ROWS.items():
            model = trained(key, train, args, epochs=2)
            times[key].append(model.history[-1]["seconds"])
            print(f"  round {turn + 1}: {name}: {times[key][-1]:.2f} s", flush=True)
    return {
        "images": len(train),
        "rounds": args.speed_rounds,
        "threads": torch.get_num_threads(),
        "seconds": {key: statistics.median(values) for key, values in times.items()},
    }


def settings(args: argparse.Namespace) -> dict:
    """What a row's numbers depend on: every option but which rows to run and where to write them."""
    return {k: v for k, v in vars(args).items() if k not in ("rows", "out") and not k.startswith("speed")}


def measured_before(out: Path, args: argparse.Namespace) -> tuple[dict, dict, dict | None]:
    """The rows ``out`` holds from an earlier run with the same settings, their samples and the speed record."""
    path = out / "results.json"
    if not path.exists() or not (out / "samples.pt").exists():
        return {}, {}, None
    before = json.loads(path.read_text())
    if before.get("options") != settings(args):
        print(f"{path} was measured with other settings: its rows are measured again", flush=True)
        return {}, {}, None
    return before["rows"], torch.load(out / "samples.pt"), before.get("speed")


def partial_folder(folder: Path, args: argparse.Namespace) -> Path:
    """``folder``, where a row keeps its finished stages: emptied first if it holds stages measured with other
    settings."""
    record = folder / "settings.json"
    if record.exists() and json.loads(record.read_text()) != settings(args):
        print(f"  {folder} was measured with other settings: the row starts again", flush=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings(args)))
    return folder


def write(out: Path, args: argparse.Namespace, results: dict, samples: dict, speed: dict | None) -> None:
    """The table, the rows with their settings, the samples and their figure, in ``out``."""
    (out / "table.md").write_text(table(results, speed) + "\n")
    record = {"options": settings(args), "rows": results, **({"speed": speed} if speed else {})}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    torch.save(samples, out / "samples.pt")
    in_order = {ROWS[key][0]: samples[ROWS[key][0]].float() / 255 for key in ROWS if key in results}
    if in_order:
        viz.image_rows(in_order, out / "samples.png", title="Samples from each model of the table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument("--test-limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--num-samples", type=int, default=1000, help="K for importance sampling")
    parser.add_argument("--ais-images", type=int, default=1000, help="test images scored by AIS")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--bdmc-images", type=int, default=0, help="simulated images for the BDMC gap (0: none)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/richer")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--speed", action="store_true", help="measure every row's epoch time side by side, only")
    parser.add_argument("--speed-images", type=int, default=6000, help="training images a --speed epoch takes")
    parser.add_argument("--speed-rounds", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kept, kept_samples, speed = measured_before(out, args)
    if args.speed:
        train = ppvae.data.load("fashion-mnist", split="train", limit=args.speed_images)
        print(f"Epoch times on {len(train):,} training images, {args.speed_rounds} rounds:", flush=True)
        speed = epoch_seconds(train, args)
        write(out, args, kept, kept_samples, speed)
        default = speed["seconds"]["default"]
        for key, seconds in speed["seconds"].items():
            print(f"{ROWS[key][0]}: {seconds:.2f} s an epoch, {seconds / default:.1f}x the default", flush=True)
        return
    train = ppvae.data.load("fashion-mnist", split="train", limit=args.limit)
    test = ppvae.data.load("fashion-mnist", split="test", limit=args.test_limit)
    print(
        f"{len(train)} training images, {len(test)} test images; {args.epochs} epochs each; IS K={args.num_samples}; "
        f"AIS {args.chains} chains x {args.ais_steps} steps on {min(args.ais_images, len(test))} images\n",
        flush=True,
    )
    results, samples = {}, {}
    rows = list(kept) + [key for key in args.rows if key not in kept]
    for key in rows:
        name = ROWS[key][0]
        if key in kept:
            results[key], samples[name] = kept[key], kept_samples[name]
            print(f"{name}: kept from {out / 'results.json'}", flush=True)
        else:
            print(f"{name}:", flush=True)
            partial = partial_folder(out / "partial" / key, args)
            model = trained_or_kept(key, train, args, partial)
            results[key] = score(model, test, args, partial)
            samples[name] = (model.sample(16, seed=args.seed).cpu() * 255).round().to(torch.uint8)
        r = results[key]
        print(
            f"{name}: ELBO {r['elbo']:.2f}, IS {r['is']:.2f}, AIS {r['ais']:.2f}, "
            f"{r['seconds_per_epoch']:.1f} s/epoch, scored in {r['scoring_seconds']:.0f} s",
            flush=True,
        )
        write(out, args, results, samples, speed)  # after every row: a long run shows what it has so far
        shutil.rmtree(out / "partial" / key, ignore_errors=True)
    print("\n" + table(results, speed))


if __name__ == "__main__":
    main()
