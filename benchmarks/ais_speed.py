"""Seconds of AIS through the Pyro programs against the model's lowered log-joint, side by side.

AIS evaluates the model at every leapfrog step (chains x steps x leapfrog steps per batch of
images). Through the programs each evaluation is a conditioned Pyro trace; the lowered
log-joint (`ppvae.infer.lowered_joint`, the default wherever a model has one) computes the
same densities in plain torch. Two workloads, each in rounds whose order rotates
(``train_speed.round_order``), the ratio the median of each round's lowered / programs:

- ``ppvae.log_evidence(method="ais")`` of the default 784-400-20 MLP VAE (untrained: the
  cost of a step does not depend on the weights) on ``--images`` Fashion-MNIST test images,
  ``--chains`` x ``--steps``: the arithmetic of the decoder, on a CPU most of the cost;
- the host's cost per leapfrog step: a tiny model (8x8 images, 8 hidden units, 4 images x 2
  chains) whose arithmetic is negligible, so what is left is Python, tracing and kernel
  launches: what a GPU waits on.

Both ways give the same log weights to the last bit (checked here on every round). On a GPU
a third way runs the lowered log-joint with each batch's step captured in a CUDA graph (what
``log_evidence`` does there by default; ``cuda_graph=False`` launches the kernels one by one),
checked against the eager chains to 1e-3 nats.

    python benchmarks/ais_speed.py [--images 100] [--chains 16] [--steps 20] [--rounds 6] [--accelerator cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from train_speed import paired_ratio, round_order

import ppvae
import ppvae.estimator.evidence as evidence


def timed(model: ppvae.VAE, x: torch.Tensor, way: str, **options) -> tuple[float, torch.Tensor]:
    """Seconds of one AIS run of ``model`` on ``x`` through ``way``, and its log weights."""
    chosen = evidence.lowered_densities
    evidence.lowered_densities = (lambda m: None) if way == "programs" else chosen
    try:
        if x.is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        estimate = ppvae.log_evidence(
            model, x, method="ais", progress=False, diagnostics=True, cuda_graph=way == "graphed", **options
        )
        if x.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        evidence.lowered_densities = chosen
    assert estimate.evaluation == ("pyro" if way == "programs" else "lowered")
    assert estimate.graphed == (way == "graphed"), f"{way}: the chains' step was not captured"
    return seconds, estimate.log_weights


def measure(model, x, rounds: int, ways: list[str], **options) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {way: [] for way in ways}
    timed(model, x, "lowered", **{**options, "steps": 2})  # warm up the allocator and the caches
    for round_ in range(rounds):
        weights = {}
        for way in round_order(ways, round_):
            seconds, weights[way] = timed(model, x, way, **options)
            times[way].append(seconds)
        assert torch.equal(weights["lowered"], weights["programs"]), "the two ways gave different chains"
        if "graphed" in weights:
            assert torch.allclose(weights["graphed"], weights["lowered"], rtol=0, atol=1e-3), "the graph's chains"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100, help="test images for the default VAE")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.accelerator)
    torch.manual_seed(0)

    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20).to(device)
    x = ppvae.data.load("fashion-mnist", split="test", limit=args.images).x.to(device)
    x = torch.bernoulli(x, generator=torch.Generator(device).manual_seed(0))
    tiny = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [8]}).to(device)
    x_tiny = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3, device=device))
    tiny_steps = 50
    ways = ["programs", "lowered", *(["graphed"] if device.type == "cuda" else [])]
    rows = [
        (
            f"default VAE, {args.images} images x {args.chains} chains x {args.steps} steps (s)",
            measure(vae, x, args.rounds, ways, chains=args.chains, steps=args.steps, seed=0),
            1.0,
        ),
        (
            "host cost per leapfrog step, tiny model (ms)",
            measure(tiny, x_tiny, args.rounds, ways, chains=2, steps=tiny_steps, seed=0),
            1e3 / (tiny_steps * 10),
        ),
    ]
    print(f"AIS on {device.type}, {args.rounds} rounds, {torch.get_num_threads()} CPU threads; same log weights: yes\n")
    graphed = "graphed" in ways
    header = "| workload | Pyro programs | lowered log-joint | lowered / programs, median [95% CI] |"
    extra = " lowered in a CUDA graph | graph / programs | graph / lowered |" if graphed else ""
    print(header + extra)
    print("| --- | --- | --- | --- |" + (" --- | --- | --- |" if graphed else ""))
    for name, times, scale in rows:
        cells = [f"{statistics.median(times[way]) * scale:.2f}" for way in ways]
        line = f"| {name} | {cells[0]} | {cells[1]} | {ratio(times['lowered'], times['programs'])} |"
        if graphed:
            line += f" {cells[2]} | {ratio(times['graphed'], times['programs'])} |"
            line += f" {ratio(times['graphed'], times['lowered'])} |"
        print(line)


def ratio(times: list[float], base: list[float]) -> str:
    median, low, high = paired_ratio(times, base)
    return f"{median:.3f} [{low:.3f}, {high:.3f}]"


if __name__ == "__main__":
    main()
