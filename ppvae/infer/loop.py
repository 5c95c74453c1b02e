"""The training loop every model shares: SVI epochs on Lightning Fabric, knowing no VAE.

It receives a parameter-holding module, the two Pyro programs, an objective,
a batch source and per-step arguments for the programs (a KL weight, say),
and runs epochs:

    loss = objective.differentiable_loss(model, guide, x, c, **step_arguments(step))
    backward (scaled by the number of processes), optional clipping, one optimizer step

The loss is a module holding the parameters (`ObjectiveModule`, Pyro's
``ELBOModule`` pattern), so DDP sees the forward and synchronises gradients.
Fabric brings devices, processes, precision and clipping; the loop brings
what SVI needs: noise drawn from per-(seed, epoch, rank) streams, a
collective stop on a non-finite loss or parameter that puts back the last
finite weights, and one hook per epoch where the caller evaluates, logs,
checkpoints and may ask to stop. Pyro's validation is off during an epoch's
steps (another thread's program that runs between them sees it off too; ppvae's
own scoring turns it off anyway). Each step holds `PYRO_LOCK`, so another
thread may score a model between steps without disturbing either.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyro
import torch
from lightning_fabric import Fabric
from torch import nn

from ppvae.infer.batches import LoaderBatches, TensorBatches
from ppvae.infer.graphed import EagerStep, GraphedStep
from ppvae.infer.launch import plain_cuda_check
from ppvae.infer.progress import progress_bar
from ppvae.infer.random import OwnStream, derive_seed
from ppvae.infer.threads import PYRO_LOCK, serialised

CHECK_EVERY = 20  # steps between checks of the loss (one device sync each), and progress-bar updates


class ObjectiveModule(nn.Module):
    """``forward(*args, **kwargs)`` is ``objective.differentiable_loss(model, guide, *args, **kwargs)``.

    Holds ``module`` (whose parameters the programs use) as a submodule, so that wrapping
    this in DDP or a precision plugin covers every parameter the loss touches.
    """

    def __init__(self, module: nn.Module, model: Callable, guide: Callable, objective: Any):
        super().__init__()
        self.module = module
        self.programs = (model, guide)
        self.objective = objective

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.objective.differentiable_loss(*self.programs, *args, **kwargs)


@serialised
def validate_programs(objective: Any, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
    """Run the loss once with Pyro's validation on (shapes, supports, model/guide agreement), no gradients.

    Done once before training so that the loop itself can run with validation off.
    """
    with pyro.validation_enabled(True), torch.no_grad():
        return float(objective.loss(model, guide, *args, **kwargs))


class EpochHook(Protocol):
    """What the caller does after each epoch, on rank 0: evaluate, log, checkpoint; returns True to stop.

    ``training_state`` holds the epoch, the global step, the optimizer's state and whether a CUDA graph
    replays the steps (``graphed``)."""

    def __call__(self, record: dict[str, Any], training_state: dict[str, Any]) -> bool: ...


@dataclass
class LoopResult:
    """How the loop ended: ``stopped`` is None (all epochs), "early_stopping" or "diverged"; ``graphed``:
    whether a CUDA graph took the steps."""

    epoch: int
    global_step: int
    stopped: str | None = None
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    graphed: bool = False


@dataclass
class TrainingLoop:
    """Epochs of SVI on a module and optimizer already set up by ``fabric``.

    ``step_arguments(step)`` gives the keyword arguments the programs take at global step
    ``step`` (counted from 1). ``seed`` names the random streams (see ``ppvae.infer.random``).
    ``graph=True`` captures the step in a CUDA graph (`ppvae.infer.graphed`; ``announce`` receives the
    line that says why, where it stays eager).
    """

    fabric: Fabric
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    batches: TensorBatches | LoaderBatches
    step_arguments: Callable[[int], dict[str, Any]]
    seed: int = 0
    clip_norm: float | None = None
    progress: bool = True
    on_epoch_end: EpochHook | None = None
    graph: bool = False
    announce: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.parameters = [p for p in self.loss.parameters() if p.requires_grad]
        self.last_finite = self._snapshot()
        self.training_step: EagerStep | GraphedStep = EagerStep(self.fabric, self.loss, self.optimizer, self.clip_norm)
        if self.graph:
            self.training_step = GraphedStep(self.training_step, self.fabric.device, self.announce)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.loss.state_dict().items()}

    def _any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is True on any process: every rank takes the same decision."""
        if self.fabric.world_size == 1:
            return flag
        return bool(self.fabric.all_reduce(torch.tensor(float(flag), device=self.fabric.device), reduce_op="max") > 0)

    def _parameters_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.parameters]).all())

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _diverged(self, epoch: int, step: int, steps: int, what: str) -> LoopResult:
        self.loss.load_state_dict(self.last_finite)
        advice = f"lower the learning rate (lr={self.lr:g} now; try lr={self.lr / 10:g})"
        if self.clip_norm is None:
            advice += " or clip gradients with clip_norm=10"
        message = (
            f"training diverged: {what} at epoch {epoch}, step {step} of {steps}, with lr={self.lr:g}. "
            f"The model keeps the weights of the last finite epoch ({epoch - 1}). To go on, {advice}."
        )
        return LoopResult(epoch - 1, 0, "diverged", message)

    def run(self, first_epoch: int, last_epoch: int, global_step: int = 0) -> LoopResult:
        """Train epochs ``first_epoch`` .. ``last_epoch`` (inclusive), counting steps from ``global_step``."""
        with plain_cuda_check(self.fabric.device):
            result = self._run(first_epoch, last_epoch, global_step)
        result.graphed = self.training_step.captured
        return result

    def _run(self, first_epoch: int, last_epoch: int, global_step: int) -> LoopResult:
        fabric, world = self.fabric, self.fabric.world_size
        steps = len(self.batches)
        per_rank = math.ceil(self.batches.num_examples / world)
        show = self.progress and fabric.is_global_zero
        local_batch = self.batches.batch_size // world
        records = []
        stream = OwnStream(fabric.device)  # this training's noise, whatever other threads draw between its turns
        for epoch in range(first_epoch, last_epoch + 1):
            with PYRO_LOCK, stream:
                torch.manual_seed(derive_seed(self.seed, epoch, fabric.global_rank))  # this rank's noise this epoch
            self.loss.train()
            started = time.perf_counter()
            losses = torch.zeros(steps, device=fabric.device)
            checked = 0
            arguments: dict[str, Any] = {}
            bar = progress_bar(
                per_rank * world, f"epoch {epoch}/{last_epoch}", "img", show, lines=0, dynamic_ncols=True
            )
            # Pyro's validation off for the epoch's steps (the programs were validated once, before training),
            # not step by step: entering the context costs about 1% of a small model's step on a CPU
            with bar, warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)  # ours says more
                batches = iter(self.batches.batches(epoch))
                for step in range(steps):
                    global_step += 1
                    arguments = self.step_arguments(global_step)
                    # one turn in the training's stream, the lock held: the batch is drawn (dynamic binarisation)
                    # and the step taken with no other thread between them; another may run between steps
                    with PYRO_LOCK, stream:
                        x, c = next(batches)
                        losses[step] = self.training_step(x, c, arguments)
                    if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                        window = losses[checked : step + 1]
                        bad = ~torch.isfinite(window)
                        if self._any_rank(bool(bad.any())):
                            first = checked + int(bad.nonzero()[0]) + 1 if bad.any() else step + 1
                            return self._diverged(epoch, first, steps, "the loss became non-finite")
                        checked = step + 1
                        if show:
                            done = min((step + 1) * local_batch, per_rank) * world
                            bar.set_postfix(loss=f"{losses[: step + 1].sum().item() / max(done / world, 1):.2f}")
                            bar.update(done - bar.n)
            if self._any_rank(not self._parameters_finite()):
                return self._diverged(epoch, steps, steps, "a parameter became non-finite")
            self.last_finite = self._snapshot()
            total = losses.sum()
            if world > 1:
                total = fabric.all_reduce(total, reduce_op="sum")
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": total.item() / (per_rank * world),
                "seconds": time.perf_counter() - started,
            }
            record.update({k: float(v) for k, v in arguments.items() if isinstance(v, (int, float))})
            state = {
                "epoch": epoch,
                "global_step": global_step,
                "optimizer": self.optimizer.state_dict(),
                "graphed": self.training_step.captured,
            }
            stop = False
            if fabric.is_global_zero and self.on_epoch_end is not None:
                stop = bool(self.on_epoch_end(record, state))
            fabric.log_dict(
                {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"}, step=epoch
            )
            records.append(record)
            if world > 1:
                stop = fabric.broadcast(stop, src=0)
            if stop:
                return LoopResult(epoch, global_step, "early_stopping", records=records)
        return LoopResult(last_epoch, global_step, records=records)
