"""What the VampPrior's density costs: MixtureSameFamily's (N, K, D) broadcast against `NormalMixture`'s products.

AIS and importance sampling score every draw under the prior; with a VampPrior of K = 500 pseudo-images
that score broadcast z (N, D) against (K, D) before `ppvae.parts.normal_mixture`. Each round times, in a
shuffled order, one log p(z) with its gradient in z (as an HMC step takes it) of a VampPrior VAE's prior (the
default VAE with 500 pseudo-images, untrained) both ways, and for scale the same for its likelihood
log p(x | z) on a batch of Fashion-MNIST images; each figure is the median over rounds.

    python benchmarks/mixture_density.py [--rounds 20] [--images 128] [--chains 4] [--components 500]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import ppvae


def timed(score, z: torch.Tensor) -> float:
    """Seconds for one score and its gradient in z, as HMC takes it."""
    started = time.perf_counter()
    torch.autograd.grad(score().sum(), z)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = (ppvae.data.load("fashion-mnist", split="test", limit=args.images).x > 0.5).float()
    model = ppvae.VAE(x_shape=(1, 28, 28), prior={"name": "vamp", "components": args.components})
    z = torch.randn(args.chains, args.images, model.z_dim, requires_grad=True)
    rows = {  # the prior built at each score, as the model's programs build it (its pseudo-images encoded)
        "log p(z), MixtureSameFamily": lambda: model.prior().as_mixture_same_family().log_prob(z),
        "log p(z), NormalMixture": lambda: model.prior().log_prob(z),
        "log p(x | z), the likelihood": lambda: model.likelihood(model.networks.decoder(z)).log_prob(x),
    }
    assert torch.allclose(rows["log p(z), MixtureSameFamily"](), rows["log p(z), NormalMixture"](), atol=1e-3)
    times = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name in random.sample(list(rows), len(rows)):
            times[name].append(timed(rows[name], z))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference = median["log p(z), NormalMixture"]
    print(
        f"{args.chains} chains x {args.images} images, K = {args.components} components, z = {model.z_dim}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds\n"
    )
    print("| score, with its gradient in z | ms (median) | x NormalMixture |\n| --- | --- | --- |")
    for name, seconds in median.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / reference:.1f} |")


if __name__ == "__main__":
    main()
