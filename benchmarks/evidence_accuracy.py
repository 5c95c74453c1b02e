"""How far is each log p(x) estimator from the truth, and what does it cost? A z=2 VAE, where quadrature is exact.

The setting of the evidence issue: a z_dim=2 VAE (MLP, Bernoulli) trained 2 epochs on
6,000 Fashion-MNIST images, scored on 40 statically binarised test images. The exact
log p(x) comes from dense quadrature (with its refinement error); against it, importance
sampling with the guide and the defensive mixture at several K, and annealed importance
sampling from the guide at several numbers of steps (from the prior at the first two):
mean error (estimate minus exact; negative is below), the worst three images, the share
of images whose Pareto k-hat exceeds 0.7 (IS), and the seconds each took.

    python benchmarks/evidence_accuracy.py [--images 40] [--epochs 2] [--limit 6000] [--ais-steps 100 500 2000]
"""

from __future__ import annotations

import argparse
import time

import ppvae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=6000, help="training images")
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000, 10000], help="values of K")
    parser.add_argument(
        "--ais-steps", type=int, nargs="+", default=[100, 500, 2000], help="AIS intermediate distributions"
    )
    parser.add_argument("--chains", type=int, default=16, help="AIS chains per image")
    args = parser.parse_args()
    train = ppvae.data.load("fashion-mnist", split="train", limit=args.limit)
    test = ppvae.data.load("fashion-mnist", split="test").subset(args.images)
    model = ppvae.VAE(x_shape=train.shape, z_dim=2)
    model.fit(train, epochs=args.epochs, progress=False)
    started = time.perf_counter()
    exact = ppvae.log_evidence(model, test, method="quadrature", diagnostics=True, progress=False)
    print(
        f"quadrature: {exact.points}x{exact.points} grid, spacing {exact.spacing:.4f}, refinement error at most "
        f"{exact.error.max():.2e} nats, {time.perf_counter() - started:.1f} s; mean log p(x) "
        f"{exact.log_evidence.mean():.2f}\n"
    )
    print("| estimator | K | mean error (nats) | worst three (nats) | k-hat > 0.7 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for proposal in ("guide", "defensive"):
        for k in args.samples:
            started = time.perf_counter()
            estimate = ppvae.log_evidence(
                model, test, num_samples=k, proposal=proposal, diagnostics=True, progress=False
            )
            seconds = time.perf_counter() - started
            error = estimate.log_evidence - exact.log_evidence
            worst = error.sort().values[:3].tolist()
            flagged = (estimate.pareto_k > 0.7).double().mean().item()
            name = "IS, guide" if proposal == "guide" else "IS, defensive (0.8 q + 0.2 prior)"
            print(
                f"| {name} | {k} | {error.mean():+.3f} | {', '.join(f'{w:+.2f}' for w in worst)} | {flagged:.0%} "
                f"| {seconds:.1f} |",
                flush=True,
            )
    for start in ("guide", "prior"):
        for steps in args.ais_steps if start == "guide" else args.ais_steps[:2]:  # from the prior: slower to converge
            estimate = ppvae.log_evidence(
                model,
                test,
                method="ais",
                proposal=start,
                chains=args.chains,
                steps=steps,
                diagnostics=True,
                progress=False,
            )
            error = estimate.log_evidence - exact.log_evidence
            worst = error.sort().values[:3].tolist()
            print(
                f"| AIS from the {start}, {args.chains} chains x {steps} steps | - | {error.mean():+.3f} | "
                f"{', '.join(f'{w:+.2f}' for w in worst)} | - | {estimate.seconds:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
