"""Does the denoising chain approach the data distribution? Its samples against the VAE's, as the chain runs.

A generalized denoising autoencoder (salt-and-pepper corruption, walkback) and a VAE (z_dim 20) train for the
same number of epochs on Fashion-MNIST. The chain then runs from uniform noise, 500 chains at once; at each
step listed, its 500 means are measured as the VAE's 500 samples (E[x | z], z from the prior) are:

    MMD^2 to test images     kernel two-sample distance to 500 test images (lower: closer to the data)
    nearest training image   mean Euclidean distance of each sample to its nearest training image (a copy
                             would be 0; test images themselves sit at the distance given on the last row)
    confidently labelled     share of samples that a classifier trained on the real training images (an
                             MLP, 0.88 accurate on the test images) labels with probability above 0.9

Each ``--dae`` is one denoising autoencoder's settings as JSON (the constructor's arguments; repeat it for
several rows), so corruptions, their levels and walkback compare under one budget and one instrument:

    python benchmarks/denoising_chain.py [--epochs 10] [--steps 1 10 100 1000] [--out runs/denoising-chain]
        [--dae '{"corruption": {"name": "salt_pepper", "level": 0.3}, "walkback": 1}' ...] [--seeds 0 1 2]

With several ``--seeds`` each DAE trains and runs its chains once per seed (the training's seed, and the chains'),
and a last table gives each setting's MMD² at the last step over the seeds: how much the chain varies from run
to run, which one run cannot say.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from cvae_labels import train_classifier  # the same measuring instrument: an MLP on real training images
from torch import nn

import ppvae
from ppvae import latent, viz
from ppvae.estimator.figures import save_figure_atomic
from ppvae.parts.corruptions import CORRUPTIONS

SAMPLES = 500


@torch.no_grad()
def measures(images: torch.Tensor, test: torch.Tensor, train: torch.Tensor, classifier: nn.Module) -> dict:
    confident = classifier(images).softmax(-1).max(-1).values > 0.9
    return {
        "mmd2": latent.mmd(images, test),
        "nearest": latent.nearest_distance(images, train).mean().item(),
        "confident": confident.double().mean().item(),
    }


DEFAULT_DAE = {"corruption": {"name": "salt_pepper", "level": 0.5}, "walkback": 4}  # the DAE's defaults


def describe(settings: dict) -> str:
    """A row's name for a DAE's settings: its corruption, noise level and walkback."""
    spec = settings.get("corruption", "salt_pepper")
    name, level = ppvae.parts.normalize_spec(spec, "corruption")["name"], CORRUPTIONS.build(spec).level
    return f"{name} {level:g}, walkback {settings.get('walkback', 0)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument(
        "--dae", type=json.loads, action="append", help=f"a DAE's settings as JSON (default: {json.dumps(DEFAULT_DAE)})"
    )
    parser.add_argument("--no-vae", action="store_true", help="leave out the VAE's row (and its training)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train and run each DAE once per seed")
    parser.add_argument("--out", default="runs/denoising-chain")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = ppvae.data.load("fashion-mnist", split="train")
    test = ppvae.data.load("fashion-mnist", split="test")
    classifier = train_classifier(train)
    with torch.no_grad():
        real = (classifier(test.x).argmax(-1) == test.y).double().mean().item()
    reference, pool = test.x[-SAMPLES:], train.x[:10_000]
    last, steps = max(args.steps), sorted(args.steps)

    rows, seconds, figure_rows, spread = [], [], {}, {}
    for settings, seed in [(settings, seed) for settings in args.dae or [DEFAULT_DAE] for seed in args.seeds]:
        name = describe(settings) + (f", seed {seed}" if len(args.seeds) > 1 else "")
        started = time.perf_counter()
        dae = ppvae.DenoisingAutoencoder(**settings).fit(train, epochs=args.epochs, seed=seed, progress=False)
        seconds.append(f"{name}: {time.perf_counter() - started:.0f} s")
        chain = dae.chain(SAMPLES, steps=last, keep=steps, seed=2 * seed)  # the means at those steps
        for step, images in zip(steps, chain):
            rows.append((f"{name}: from noise, step {step}", measures(images, reference, pool, classifier)))
        spread.setdefault(describe(settings), []).append(rows[-1][1]["mmd2"])
        from_test = dae.chain(test.subset(SAMPLES), steps=last, keep=[last], seed=2 * seed + 1)[0]
        rows.append((f"{name}: from test images, step {last}", measures(from_test, reference, pool, classifier)))
        figure_rows[f"{name}, step {last}"] = chain[-1][:10].cpu()
        print(
            *(
                f"| {row} | {m['mmd2']:.4f} | {m['nearest']:.2f} | {m['confident']:.3f} |"
                for row, m in rows[-len(steps) - 1 :]
            ),
            sep="\n",
            flush=True,
        )
    if not args.no_vae:
        started = time.perf_counter()
        vae = ppvae.VAE(z_dim=20).fit(train, epochs=args.epochs, progress=False)
        seconds.append(f"the VAE: {time.perf_counter() - started:.0f} s")
        rows.append(("VAE samples", measures(vae.sample(SAMPLES, seed=0), reference, pool, classifier)))
    rows.append(("test images themselves", measures(test.x[:SAMPLES], reference, pool, classifier)))

    lines = [
        "| samples | MMD² to test images | distance to nearest training image | confidently labelled |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {m['mmd2']:.4f} | {m['nearest']:.2f} | {m['confident']:.3f} |" for name, m in rows]
    if len(args.seeds) > 1:
        lines += [
            "",
            f"| chain from noise, step {last}, seeds {', '.join(map(str, args.seeds))} | MMD² to test images, "
            "mean ± s.e. | per seed |",
            "| --- | --- | --- |",
        ]
        for name, values in spread.items():
            v = torch.tensor(values, dtype=torch.float64)
            per_seed = ", ".join(f"{x:.4f}" for x in values)
            lines.append(f"| {name} | {v.mean():.4f} ± {v.std() / len(v) ** 0.5:.4f} | {per_seed} |")
    table = "\n".join(lines)
    note = (
        f"{SAMPLES} samples each; every model trained {args.epochs} epochs ({', '.join(seconds)}); the classifier "
        f"is {real:.3f} accurate on the real test images."
    )
    print(table + "\n\n" + note)
    (out / "denoising_chain.md").write_text(table + "\n\n" + note + "\n")
    save_figure_atomic(
        viz.image_rows, out / "chain.png", figure_rows, title=f"Ten denoising chains from noise at step {last}"
    )


if __name__ == "__main__":
    main()
