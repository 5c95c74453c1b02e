"""Seconds per training epoch: ppvae's VAE against a hand-written PyTorch VAE of the same architecture.

Both train the 784-400-20 MLP VAE on Fashion-MNIST with dynamic binarisation,
a Bernoulli likelihood summed over the batch and Adam, in one process, in
alternating rounds so that machine noise falls on all alike. The PyTorch
loop uses the analytic Gaussian KL; ppvae runs with elbo="meanfield" (the
same analytic KL) and elbo="trace" (Monte-Carlo KL), each in the step fit takes
by default (``compile="auto"``: the ELBO lowered to plain torch, checked against
the Pyro programs), through the Pyro programs themselves (``compile=False``),
and, for meanfield, lowered and compiled (``compile=True``; its compiling, tens
of seconds, falls in the warm-up, not in the epochs timed). Targets: <= 1.05x
and <= 1.15x.

ppvae trains through its engine (Lightning Fabric, one process) and steps with
torch's fused Adam. The PyTorch loop runs twice, with torch's default Adam
(what a hand-written loop usually has) and with the same fused Adam, so the
table shows both the speed a user sees and the cost of the Pyro program alone.
It runs as in a process without Lightning (see ``plain_cuda_check``).

A shared machine drifts by more than the differences measured here, so every
round runs one epoch of each loop, in an order that rotates (each loop takes
every place in turn), and each ratio is the median over rounds of that round's
ratio, with a bootstrap 95% interval: drift between rounds cancels, and the
interval says whether a target is met or the rounds cannot tell.

On a GPU (``--accelerator cuda``) the hand-written loop also runs captured in a CUDA graph, the fair anchor
there, and ppvae's lowered steps run in theirs (`ppvae.infer.graphed`).

With ``--devices 2`` a data-parallel row is added: the same meanfield VAE on 2 CPU
processes (DDP, gloo), each with half of each global batch. On a 2-core machine this
cannot be faster (the processes share the cores and add an all-reduce per step); it
shows what DDP costs here. On a GPU machine pass ``--accelerator cuda``.

    python benchmarks/train_speed.py [--n 60000] [--rounds 11] [--devices 2] [--accelerator cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import ppvae
from ppvae.infer.launch import plain_cuda_check


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


class TorchStep:
    """The hand-written step: loss, backward, optimizer step."""

    def __init__(self, model: TorchVAE, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        loss = self.model.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class GraphedTorchStep(TorchStep):
    """The hand-written step captured in a CUDA graph (fused, capturable Adam; a static batch buffer), as
    torch's documentation captures a whole network: the fair anchor on a GPU. Its first full batch warms up
    three steps on a side stream before the capture; a batch of another size steps eagerly."""

    def __init__(self, model: TorchVAE, optimizer: torch.optim.Optimizer):
        super().__init__(model, optimizer)
        self.graph, self.static_x, self.static_loss = None, None, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is not None and x.shape != self.static_x.shape:
            return super().__call__(x)
        if self.graph is None:
            self.static_x = x.clone()
            side, current = torch.cuda.Stream(), torch.cuda.current_stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(3):
                    super().__call__(self.static_x)
            current.wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.optimizer.zero_grad(set_to_none=True)
                self.static_loss = self.model.loss(self.static_x)
                self.static_loss.backward()
                self.optimizer.step()
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_loss


def torch_epoch(step: TorchStep, x: torch.Tensor, batch_size: int, generator) -> float:
    """One epoch, timed the way ppvae times its epochs (the loop only)."""
    started = time.perf_counter()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator, device=x.device)
    total = torch.zeros((), device=x.device)
    with plain_cuda_check(x.device):  # the CUDA check of a process that never imported Lightning
        for i in range(0, n, batch_size):
            total += step(torch.bernoulli(x[order[i : i + batch_size]]))
    total.item()
    return time.perf_counter() - started


def round_order(names: list[str], round_: int) -> list[str]:
    """The order of one round: rotated every second round and reversed every other one.

    Over 2 x len(names) rounds each loop runs once in every place, after each of its
    neighbours, so that neither a place's effect nor a predecessor's falls on one loop
    (merely reversing the order leaves the middle loops in the middle).
    """
    shift = round_ // 2 % len(names)
    order = names[shift:] + names[:shift]
    return order if round_ % 2 == 0 else order[::-1]


def paired_ratio(times: list[float], base: list[float], draws: int = 2000) -> tuple[float, float, float]:
    """Median over rounds of times[r] / base[r], and a bootstrap 95% interval of that median."""
    ratios = [t / b for t, b in zip(times, base)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return statistics.median(ratios), medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def ratio_cell(times: list[float], base: list[float]) -> str:
    if times is base:
        return "1.000"
    median, low, high = paired_ratio(times, base)
    return f"{median:.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="training images (default: all of Fashion-MNIST)")
    parser.add_argument("--rounds", type=int, default=11, help="rounds of one epoch of each loop")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--devices", type=int, default=1, help="also time a data-parallel run on this many processes")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.accelerator)

    train = ppvae.data.load("fashion-mnist", split="train", limit=args.n)
    x_flat = train.x.reshape(len(train), -1).to(device)
    print(f"{len(train)} images, batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    settings = {  # each loop: fit's options
        "meanfield": {"elbo": "meanfield"},
        "meanfield, programs": {"elbo": "meanfield", "compile": False},
        "meanfield, compiled": {"elbo": "meanfield", "compile": True},
        "trace": {"elbo": "trace"},
        "trace, programs": {"elbo": "trace", "compile": False},
    }
    if args.devices > 1:
        settings[f"meanfield, {args.devices} processes"] = {"elbo": "meanfield", "devices": args.devices}
    models = {name: ppvae.VAE(z_dim=20) for name in settings}
    networks = {name: TorchVAE().to(device) for name in ("pytorch", "pytorch-fused", "pytorch-graphed")}
    references = {
        "pytorch": TorchStep(networks["pytorch"], torch.optim.Adam(networks["pytorch"].parameters(), lr=1e-3)),
        "pytorch-fused": TorchStep(
            networks["pytorch-fused"], torch.optim.Adam(networks["pytorch-fused"].parameters(), lr=1e-3, fused=True)
        ),
    }
    if device.type == "cuda":
        adam = torch.optim.Adam(networks["pytorch-graphed"].parameters(), lr=1e-3, fused=True, capturable=True)
        references["pytorch-graphed"] = GraphedTorchStep(networks["pytorch-graphed"], adam)
    generator = torch.Generator(device=device).manual_seed(0)

    def epoch(name: str, seed: int) -> float:
        if name in references:
            return torch_epoch(references[name], x_flat, args.batch_size, generator)
        models[name].fit(
            train,
            epochs=1,
            batch_size=args.batch_size,
            binarize="dynamic",
            seed=seed,
            progress=False,
            accelerator=args.accelerator,
            **settings[name],
        )
        return models[name].history[-1]["seconds"]

    names = [*references, *models]
    for name in names:  # warm-up: first-call costs (allocations, kernels, process start) are not an epoch's
        epoch(name, 0)
    print(
        "steps taken: "
        + ", ".join(
            f"{k}: {m.fit_record.options['step']}{' in a CUDA graph' if m.fit_record.options['cuda_graph'] else ''}"
            for k, m in models.items()
        )
    )
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in round_order(names, round_):
            times[name].append(epoch(name, round_ + 1))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

    base, fused = times["pytorch"], times["pytorch-fused"]
    print(f"\nmedian over {args.rounds} rounds of each round's ratio, [bootstrap 95% interval]\n")
    graphed = times.get("pytorch-graphed")
    anchor = " ratio to PyTorch in a CUDA graph |" if graphed else ""
    columns = "| loop | s / epoch (median) | ratio to PyTorch, default Adam | ratio to PyTorch, fused Adam |"
    print(f"{columns}{anchor} target |")
    print("| --- | --- | --- | --- |" + (" --- |" if graphed else "") + " --- |")
    default = "lowered, the default" + ("; in a CUDA graph" if graphed else "")
    rows = [
        ("hand-written PyTorch, default Adam", base, ""),
        ("hand-written PyTorch, fused Adam", fused, ""),
        *([("hand-written PyTorch, fused Adam, in a CUDA graph", graphed, "")] if graphed else []),
        (f'ppvae elbo="meanfield" ({default})', times["meanfield"], "<= 1.05; GPU: <= 1.15 of the graph"),
        ('ppvae elbo="meanfield", compile=True', times["meanfield, compiled"], "<= 1.05"),
        ('ppvae elbo="meanfield", compile=False (the Pyro programs)', times["meanfield, programs"], "none"),
        (f'ppvae elbo="trace" ({default})', times["trace"], "<= 1.15"),
        ('ppvae elbo="trace", compile=False (the Pyro programs)', times["trace, programs"], "none"),
    ]
    rows += [
        (f'ppvae elbo="meanfield", {args.devices} processes (DDP, lowered)', v, "none")
        for k, v in times.items()
        if "processes" in k
    ]
    for label, values, target in rows:
        to_graph = f" {ratio_cell(values, graphed)} |" if graphed else ""
        print(
            f"| {label} | {statistics.median(values):.3f} | {ratio_cell(values, base)} "
            f"| {ratio_cell(values, fused)} |{to_graph} {target} |"
        )


if __name__ == "__main__":
    main()
