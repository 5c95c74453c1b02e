"""Factor analysis on Fashion-MNIST: ppvae's EM against scikit-learn's FactorAnalysis and against ppvae's
own SVI (``method="svi"``, the same Pyro program trained like any other model).

Pixels are dequantised as (pixel + u) / 256 with u ~ U[0, 1) (seeded), 20 factors,
scored by the exact held-out log-likelihood in nats per image.

    python benchmarks/fa_fit.py [--z-dim 20] [--svi-epochs 10]
"""

from __future__ import annotations

import argparse
import time

from sklearn.decomposition import FactorAnalysis as SklearnFA

import ppvae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--z-dim", type=int, default=20)
    parser.add_argument("--svi-epochs", type=int, default=10, help="epochs of SVI (0: skip it)")
    args = parser.parse_args()
    train = ppvae.data.dequantize(ppvae.data.load("fashion-mnist").x, seed=0).flatten(1)
    test = ppvae.data.dequantize(ppvae.data.load("fashion-mnist", split="test").x, seed=1).flatten(1)

    fa = ppvae.FactorAnalysis(x_shape=(1, 28, 28), z_dim=args.z_dim)
    started = time.perf_counter()
    fa.fit(train)
    seconds = time.perf_counter() - started
    print(
        f"| ppvae EM | {seconds:.1f} s, {fa.history[-1]['iterations']} iterations | "
        f"{fa.log_evidence(test).mean():.2f} |"
    )

    started = time.perf_counter()
    reference = SklearnFA(n_components=args.z_dim).fit(train.numpy())
    seconds = time.perf_counter() - started
    print(
        f"| scikit-learn, defaults | {seconds:.1f} s, {reference.n_iter_} iterations | "
        f"{reference.score(test.numpy()):.2f} |"
    )

    if args.svi_epochs:
        svi = ppvae.FactorAnalysis(x_shape=(1, 28, 28), z_dim=args.z_dim, method="svi")
        started = time.perf_counter()
        svi.fit(train, epochs=args.svi_epochs, progress=False)
        seconds = time.perf_counter() - started
        print(
            f"| ppvae SVI (Adam 1e-3, batch 128) | {seconds:.1f} s, {args.svi_epochs} epochs | "
            f"{svi.log_evidence(test).mean():.2f} |"
        )


if __name__ == "__main__":
    main()
