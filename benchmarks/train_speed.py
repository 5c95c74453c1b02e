"""Seconds per training epoch: ppvae's VAE against a hand-written PyTorch VAE of the same architecture.

Both train the 784-400-20 MLP VAE on Fashion-MNIST with dynamic binarisation,
a Bernoulli likelihood summed over the batch and Adam, in one process, in
alternating rounds so that machine noise falls on all alike. The PyTorch
loop uses the analytic Gaussian KL; ppvae runs with elbo="meanfield" (the
same analytic KL, through Pyro's TraceMeanField_ELBO) and elbo="trace"
(Pyro's Trace_ELBO, Monte-Carlo KL). Targets: <= 1.05x and <= 1.15x.

ppvae trains through its engine (Lightning Fabric, one process) and steps with torch's fused Adam. The PyTorch loop runs twice, with
torch's default Adam (what a hand-written loop usually has) and with the
same fused Adam, so the table shows both the speed a user sees and the
cost of the Pyro program alone.

With ``--devices 2`` a data-parallel row is added: the same meanfield VAE on 2 CPU
processes (DDP, gloo), each with half of each global batch. On a 2-core machine this
cannot be faster (the processes share the cores and add an all-reduce per step); it
shows what DDP costs here. On a GPU machine pass ``--accelerator cuda``.

    python benchmarks/train_speed.py [--n 60000] [--rounds 3] [--epochs 1] [--devices 2] [--accelerator cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import ppvae


class TorchVAE(nn.Module):
    """The same networks as ppvae's default VAE, trained by a plain PyTorch loop."""

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: int = 400):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        loc, log_var = self.encoder(x).split(self.z_dim, dim=-1)
        z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
        logits = self.decoder(z)
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - loc.pow(2) - log_var.exp())
        return reconstruction + kl


def torch_epoch(model: TorchVAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, batch_size: int, generator) -> float:
    """One epoch, timed the way ppvae times its epochs (the loop only)."""
    started = time.perf_counter()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator, device=x.device)
    total = torch.zeros((), device=x.device)
    for i in range(0, n, batch_size):
        xb = torch.bernoulli(x[order[i : i + batch_size]])
        loss = model.loss(xb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    total.item()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="training images (default: all of Fashion-MNIST)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per variant per round")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--devices", type=int, default=1, help="also time a data-parallel run on this many processes")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.accelerator)

    train = ppvae.data.load("fashion-mnist", split="train", limit=args.n)
    x_flat = train.x.reshape(len(train), -1).to(device)
    print(f"{len(train)} images, batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    models = {"meanfield": ppvae.VAE(z_dim=20), "trace": ppvae.VAE(z_dim=20)}
    references = {"pytorch": TorchVAE().to(device), "pytorch-fused": TorchVAE().to(device)}
    optimizers = {
        "pytorch": torch.optim.Adam(references["pytorch"].parameters(), lr=1e-3),
        "pytorch-fused": torch.optim.Adam(references["pytorch-fused"].parameters(), lr=1e-3, fused=True),
    }
    generator = torch.Generator(device=device).manual_seed(0)
    times: dict[str, list[float]] = {"pytorch": [], "pytorch-fused": [], "meanfield": [], "trace": []}
    if args.devices > 1:
        models[f"meanfield, {args.devices} processes"] = ppvae.VAE(z_dim=20)
    for round_ in range(args.rounds):
        for name, model in models.items():
            devices = args.devices if "processes" in name else 1
            model.fit(train, epochs=args.epochs, batch_size=args.batch_size, binarize="dynamic", elbo=name.split(",")[0],
                      seed=round_, progress=False, accelerator=args.accelerator, devices=devices)  # fmt: skip
            times.setdefault(name, []).extend(record["seconds"] for record in model.history[-args.epochs :])
            for ref, reference in references.items():
                times[ref] += [torch_epoch(reference, optimizers[ref], x_flat, args.batch_size, generator) for _ in range(args.epochs)]
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in times.items()))

    base, fused = statistics.median(times["pytorch"]), statistics.median(times["pytorch-fused"])
    print("\n| loop | s / epoch (median) | ratio to PyTorch, default Adam | ratio to PyTorch, fused Adam | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| hand-written PyTorch, default Adam | {base:.3f} | 1.000 | {base / fused:.3f} | |")
    print(f"| hand-written PyTorch, fused Adam | {fused:.3f} | {fused / base:.3f} | 1.000 | |")
    for name, target in (("meanfield", "<= 1.05"), ("trace", "<= 1.15")):
        median = statistics.median(times[name])
        print(f'| ppvae elbo="{name}" | {median:.3f} | {median / base:.3f} | {median / fused:.3f} | {target} |')
    for name in (n for n in times if "processes" in n):
        median = statistics.median(times[name])
        print(f'| ppvae elbo="meanfield", {args.devices} processes (DDP) | {median:.3f} | {median / base:.3f} '
              f'| {median / fused:.3f} | none |')


if __name__ == "__main__":
    main()
