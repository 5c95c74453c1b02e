"""Is the GPU worth it? The same ppvae work on this machine's CPU and on its GPU, side by side.

Three workloads a user runs, each on every accelerator named, in rounds whose
order rotates (see ``train_speed.round_order``):

- one training epoch of the default 784-400-20 MLP VAE (Bernoulli, dynamic
  binarisation, batch ``--batch-size``) on ``--n`` Fashion-MNIST images;
- one epoch of the same VAE with the conv networks (``channels`` 32, 64);
- ``ppvae.log_evidence`` with K = ``--samples`` importance samples for
  ``--images`` test images, from the MLP VAE (the headline number).

Each cell is the median over rounds; the speed-up is the median of each round's
CPU / GPU ratio. The MLP VAE at batch 128 is bound by the Python of each step,
not by arithmetic, so expect little there; the conv VAE and the evidence are
arithmetic.

    python benchmarks/device_speed.py [--n 60000] [--rounds 5] [--accelerators cpu cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from train_speed import paired_ratio, round_order

import ppvae

NETWORKS = {"MLP VAE epoch": "mlp", "conv VAE epoch": {"name": "conv", "channels": [32, 64]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--images", type=int, default=1000, help="test images for log p(x)")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples K per image")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accelerators", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    args = parser.parse_args()
    if "cuda" in args.accelerators and not torch.cuda.is_available():
        parser.error("no CUDA device here; pass --accelerators cpu to try the script on the CPU alone")

    train = ppvae.data.load("fashion-mnist", split="train", limit=args.n)
    test = ppvae.data.load("fashion-mnist", split="test", limit=args.images)
    name = torch.cuda.get_device_name() if "cuda" in args.accelerators else "no GPU"
    print(
        f"{len(train)} training images, {len(test)} test images, K={args.samples}, batch {args.batch_size}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {name}"
    )

    models = {
        (work, acc): ppvae.VAE(z_dim=20, network=net) for work, net in NETWORKS.items() for acc in args.accelerators
    }

    def epoch(work: str, accelerator: str, seed: int) -> float:
        model = models[(work, accelerator)]
        model.fit(
            train,
            epochs=1,
            batch_size=args.batch_size,
            binarize="dynamic",
            seed=seed,
            progress=False,
            accelerator=accelerator,
        )
        return model.history[-1]["seconds"]

    def evidence(accelerator: str, seed: int) -> float:
        model = models[("MLP VAE epoch", accelerator)]
        started = time.perf_counter()
        ppvae.log_evidence(model, test, num_samples=args.samples, seed=seed, progress=False).cpu()
        return time.perf_counter() - started

    def run(task: tuple[str, str], seed: int) -> float:
        work, accelerator = task
        return evidence(accelerator, seed) if work == "log p(x)" else epoch(work, accelerator, seed)

    works = [*NETWORKS, "log p(x)"]
    tasks = [(work, acc) for work in works for acc in args.accelerators]
    for task in tasks:  # warm-up: first-call costs are not an epoch's (and log p(x) needs a trained model)
        run(task, 0)
    times: dict[tuple[str, str], list[float]] = {task: [] for task in tasks}
    for round_ in range(args.rounds):
        for task in round_order(tasks, round_):
            times[task].append(run(task, round_ + 1))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{w} on {a} {v[-1]:.3f} s" for (w, a), v in times.items()), flush=True
        )

    print(
        f"\nmedian over {args.rounds} rounds; speed-up: median of each round's CPU / GPU ratio [bootstrap 95% "
        "interval]\n"
    )
    header = " | ".join(f"{acc} (s)" for acc in args.accelerators)
    both = {"cpu", "cuda"} <= set(args.accelerators)
    print(f"| work | {header} |" + (" GPU speed-up |" if both else ""))
    print("| --- | " + " | ".join("---" for _ in args.accelerators) + " |" + (" --- |" if both else ""))
    for work in works:
        cells = " | ".join(f"{statistics.median(times[(work, acc)]):.3f}" for acc in args.accelerators)
        speedup = ""
        if both:
            median, low, high = paired_ratio(times[(work, "cpu")], times[(work, "cuda")])
            speedup = f" {median:.1f} [{low:.1f}, {high:.1f}] |"
        print(f"| {work} | {cells} |{speedup}")


if __name__ == "__main__":
    main()
