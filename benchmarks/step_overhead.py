"""What ppvae's loss costs beyond a hand-written one: one batch's loss and backward, timed step by step.

`train_speed.py` times whole epochs, and a shared machine drifts between them by
more than the few percent this is about. Here each round takes one loss and
backward of every row, in a shuffled order, on the same batch of 128 binarised
Fashion-MNIST images, so that drift falls on all rows alike; each row's figure is
its median over rounds, and its ratio to the hand-written loss is the median of
each round's ratio, with a bootstrap 95% interval (`train_speed.paired_ratio`).
The optimizer is left out: ppvae and the hand-written loop take the same fused Adam
step. One thread by default, where a step's small operations weigh most and the
timing is steadiest. The last column counts the operations torch's profiler
records in one loss and backward (views and dtype conversions included): the part
of the overhead that does not drift.

A second table times whole training steps in the same rounds: loss, backward and
one fused Adam step, the hand-written step of `train_speed.py` against ppvae's
training step as its loop takes it (`EagerStep` on the loss and optimizer Fabric set
up, one device: it calls what Fabric wrapped) and the same step through Fabric's
wrappers, as Fabric's documentation writes a step. The engine's step should cost
what its loss costs, no more.

Rows: the hand-written VAE loss of `train_speed.py` (analytic Gaussian KL, one
fused cross-entropy over the batch); the same formulas on ppvae's own networks (what
the networks cost); ppvae's default VAE through its lowered ELBO
(`ppvae.infer.lowered`), the step ``fit`` takes, with elbo="meanfield" and "trace",
written on tensors by the parts' formulas; the same ELBO written through distribution
objects (q, the prior, the KL through torch's registry, the likelihood: what the lowered
step was before the default parts gave their formulas, and what other parts still take);
and through its Pyro programs (``compile=False``).

    python benchmarks/step_overhead.py [--rounds 1500] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import pyro
import torch
import torch.nn.functional as F
from train_speed import TorchStep, TorchVAE, paired_ratio

import ppvae
from ppvae.infer import ObjectiveModule, make_adam, make_elbo, make_fabric
from ppvae.infer.graphed import EagerStep
from ppvae.infer.lowered import LoweredELBO


def formulas_on(model: ppvae.VAE, x: torch.Tensor) -> torch.Tensor:
    """The hand-written loss's formulas on ``model``'s encoder and decoder."""
    z_dim = model.z_dim
    loc, log_var = model.networks.encoder(x, None).split(z_dim, dim=-1)
    z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
    logits = model.networks.decoder(z, None).reshape(x.shape)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return reconstruction - 0.5 * torch.sum(1 + log_var - loc.pow(2) - log_var.exp())


class ThroughObjects(ppvae.VAE):
    """The default VAE whose lowered ELBO builds its distributions, as a VAE of other parts does."""

    def _has_closed_forms(self) -> bool:
        return False


def engine_step(model: ppvae.VAE, through_wrappers: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """ppvae's training step on ``model``'s lowered meanfield ELBO, on one CPU: `EagerStep` as the loop takes
    it, or (``through_wrappers``) the step written with Fabric's wrapped module, ``fabric.backward`` and the
    wrapped optimizer."""
    fabric = make_fabric("cpu")
    objective = LoweredELBO(model.lowered_elbo, analytic_kl=True)
    loss, optimizer = fabric.setup(
        ObjectiveModule(model, model.model, model.guide, objective), make_adam(list(model.parameters()), 1e-3)
    )
    if not through_wrappers:
        step = EagerStep(fabric, loss, optimizer, clip_norm=None)
        return lambda x: step(x, None, {})

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        value = loss(x, None)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(value)
        optimizer.step()
        return value.detach()

    return wrapped


def operations(step: Callable[[], torch.Tensor]) -> int:
    """How many operations torch's profiler records in one loss and backward."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step().backward()
    return sum(event.count for event in profiler.key_averages())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pyro.enable_validation(False)  # as the training loop runs

    images = ppvae.data.load("fashion-mnist", split="test", limit=128).x
    x = torch.bernoulli(images)
    hand = TorchVAE()
    model = ppvae.VAE(z_dim=20)
    objects = ThroughObjects(z_dim=20)
    objects.load_state_dict(model.state_dict())
    programs = {name: make_elbo(name) for name in ("meanfield", "trace")}

    flat = x.reshape(128, -1)  # the hand-written VAE takes rows
    hand_step = TorchVAE()
    steps: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "hand-written step, fused Adam": TorchStep(hand_step, torch.optim.Adam(hand_step.parameters(), fused=True)),
        "ppvae's training step (EagerStep, as the loop takes it)": engine_step(ppvae.VAE(z_dim=20)),
        "the same step through Fabric's wrappers": engine_step(ppvae.VAE(z_dim=20), through_wrappers=True),
    }
    rows: dict[str, Callable[[], torch.Tensor]] = {
        "hand-written loss": lambda: hand.loss(flat),
        "the same formulas on ppvae's networks": lambda: formulas_on(model, x),
        'ppvae lowered, elbo="meanfield"': lambda: -model.lowered_elbo(x, analytic_kl=True),
        'ppvae lowered, elbo="trace"': lambda: -model.lowered_elbo(x, analytic_kl=False),
        'ppvae lowered through distribution objects, elbo="meanfield"': lambda: (
            -objects.lowered_elbo(x, analytic_kl=True)
        ),
        'ppvae lowered through distribution objects, elbo="trace"': lambda: -objects.lowered_elbo(x, analytic_kl=False),
        'ppvae programs, elbo="meanfield"': lambda: programs["meanfield"].differentiable_loss(
            model.model, model.guide, x
        ),
        'ppvae programs, elbo="trace"': lambda: programs["trace"].differentiable_loss(model.model, model.guide, x),
    }
    work = {name: (lambda row=row: row().backward()) for name, row in rows.items()}
    batches = {name: flat if name.startswith("hand") else x for name in steps}
    work |= {name: (lambda step=step, batch=batches[name]: step(batch)) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in work}
    names = list(work)
    rng = random.Random(0)
    for round_ in range(args.rounds + 30):  # the first 30: warm-up
        rng.shuffle(names)
        for name in names:
            started = time.perf_counter()
            work[name]()
            if round_ >= 30:
                times[name].append(time.perf_counter() - started)

    base = times["hand-written loss"]
    print(f"{args.rounds} rounds, batch 128, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| loss and backward of one batch | ms (median) | ratio to the hand-written loss | operations |")
    print("| --- | --- | --- | --- |")
    for name in rows:
        print(f"| {name} | {ratio_cells(times[name], base)} | {operations(rows[name])} |")
    base = times["hand-written step, fused Adam"]
    print("\n| one training step: loss, backward, fused Adam | ms (median) | ratio to the hand-written step |")
    print("| --- | --- | --- |")
    for name in steps:
        print(f"| {name} | {ratio_cells(times[name], base)} |")


def ratio_cells(measured: list[float], base: list[float]) -> str:
    """The median in ms and the paired ratio to ``base`` with its interval, as two table cells."""
    ratio, low, high = paired_ratio(measured, base)
    cell = "1.000" if measured is base else f"{ratio:.3f} [{low:.3f}, {high:.3f}]"
    return f"{statistics.median(measured) * 1e3:.2f} | {cell}"


if __name__ == "__main__":
    main()
