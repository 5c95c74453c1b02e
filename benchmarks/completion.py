"""Image completion on Fashion-MNIST: the CVAE against the deterministic network of Pyro's CVAE tutorial.

Both models are trained on the same task (each training image shows 1, 2 or 3
quadrants, drawn afresh at every step) and scored on the same statically
binarised test images: the negative conditional log-likelihood of the hidden
pixels, nats per image, for 1, 2 and 3 visible quadrants. Exact for the network
(it has no latent variable); importance-sampled with K samples for the CVAE, with
minus its 10-particle ELBO beside it (the number Pyro's table reports). Also
writes completions.png: several CVAE completions beside the network's one.

    python benchmarks/completion.py [--epochs 10] [--test 1000] [--num-samples 1000] [--out runs/completion]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ppvae
from ppvae import viz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=60000, help="training images")
    parser.add_argument("--test", type=int, default=1000, help="test images scored")
    parser.add_argument("--num-samples", type=int, default=1000, help="K of the CVAE's importance sampling")
    parser.add_argument("--z-dim", type=int, default=20)
    parser.add_argument("--out", default="runs/completion", help="a run folder per model, and the comparison figure")
    args = parser.parse_args()
    train = ppvae.data.load("fashion-mnist", split="train", limit=args.limit)
    test = ppvae.data.load("fashion-mnist", split="test").subset(args.test)
    out = Path(args.out)
    models = {
        "network": ppvae.CompletionNetwork(x_shape=train.shape),
        "CVAE": ppvae.CompletionVAE(x_shape=train.shape, z_dim=args.z_dim),
    }
    scores, seconds = {}, {}
    for name, model in models.items():
        started = time.perf_counter()
        model.fit(train, epochs=args.epochs, test=test, seed=0, progress=False, out=out / name, overwrite=True)
        seconds[name] = time.perf_counter() - started
        started = time.perf_counter()
        scores[name] = ppvae.completion_scores(model, test, num_samples=args.num_samples, particles=10)
        print(
            f"{name}: trained in {seconds[name]:.0f} s, scored in {time.perf_counter() - started:.0f} s: "
            f"{scores[name]}",
            flush=True,
        )
    x = models["CVAE"].prepare(test)[:10]
    for k in ppvae.models.completion.QUADRANTS:
        rows = ppvae.completion_rows(models, x, k, samples=4)
        viz.image_rows(
            rows,
            out / f"completions-{k}.png",
            title=f"{k} quadrant{'s' if k > 1 else ''} shown: the network's one guess against four CVAE draws",
        )
    print(
        f"\nNegative conditional log-likelihood of the hidden pixels (nats per image, {args.test} binarised test "
        f"images; CVAE: importance sampling with K={args.num_samples}, and minus the 10-particle ELBO)\n"
    )
    print("| model | 1 quadrant shown | 2 quadrants | 3 quadrants | fit (s) |")
    print("| --- | --- | --- | --- | --- |")
    network, cvae = scores["network"], scores["CVAE"]
    print(
        "| deterministic network (exact) | "
        + " | ".join(f"{network[k]['nll']:.1f}" for k in (1, 2, 3))
        + f" | {seconds['network']:.0f} |"
    )
    print(
        f"| CVAE, importance sampled (K={args.num_samples}) | "
        + " | ".join(f"{cvae[k]['nll']:.1f}" for k in (1, 2, 3))
        + f" | {seconds['CVAE']:.0f} |"
    )
    print("| CVAE, 10-particle ELBO | " + " | ".join(f"{cvae[k]['elbo_nll']:.1f}" for k in (1, 2, 3)) + " | |")


if __name__ == "__main__":
    main()
