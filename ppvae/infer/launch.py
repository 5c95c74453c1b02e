"""Devices, processes and precision: a Lightning Fabric for the loop, and the launch of its processes.

One process on one device runs the training function in place. Several
processes (``devices=2``) are started by Fabric's spawn launcher, which works
from a script, a notebook or a test alike, and the result of rank 0 comes back;
under ``torchrun`` the processes already exist and each runs the function.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.plugins import Precision
from lightning_fabric.strategies import SingleDeviceStrategy
from lightning_fabric.wrappers import is_wrapped
from torch import nn

ACCELERATORS = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed")


def resolve_accelerator(accelerator: str) -> str:
    """``"auto"``: CUDA where torch sees a GPU, else the CPU. ``"cuda"`` without a GPU is an error."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError("accelerator='cuda' but torch sees no CUDA device on this machine; use accelerator='cpu'")
    return accelerator


def check_device(device: str | torch.device) -> torch.device:
    """A device this machine has ("cpu", "cuda", "cuda:1"), or an error that says which it has."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N')") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda' (or 'cuda:N')")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"device {str(device)!r} but torch sees no CUDA device on this machine; use 'cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r} but this machine has {count} CUDA device(s)")
    return device


def under_torchrun() -> bool:
    """True inside a process that torchrun (or another launcher) started with the distributed variables set."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def resolve_strategy(strategy: str, devices: int) -> str:
    """What Fabric is asked for: one device runs in place; ``"ddp"`` spawns processes unless torchrun made them."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if devices == 1:
        if strategy not in ("auto", "ddp", "ddp_spawn"):
            raise ValueError(f"strategy={strategy!r} needs devices > 1")
        return "auto"
    if strategy in ("auto", "ddp"):
        return "ddp" if under_torchrun() else "ddp_spawn"
    return strategy


def check_devices(devices: int, accelerator: str) -> int:
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive number of processes, got {devices!r}")
    if accelerator == "cuda" and devices > torch.cuda.device_count():
        raise ValueError(f"devices={devices} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return devices


def check_engine(
    accelerator: str = "auto", devices: int = 1, strategy: str = "auto", precision: str = "32-true"
) -> tuple[str, str]:
    """The engine options checked, with messages that say what exists; returns (accelerator, Fabric's strategy)."""
    accelerator = resolve_accelerator(accelerator)
    devices = check_devices(devices, accelerator)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "16-mixed" and accelerator == "cpu":
        raise ValueError("precision='16-mixed' needs a GPU; on the CPU use 'bf16-mixed' or '32-true'")
    return accelerator, resolve_strategy(strategy, devices)


@contextmanager
def plain_cuda_check(device: torch.device) -> Iterator[None]:
    """Within: torch's own CUDA check, where training runs on the CPU of a machine without a GPU.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that checking for CUDA
    never initialises it before processes fork. Every ``Adam.step`` checks for CUDA; on a
    CUDA build of torch without a driver the NVML check loads its library afresh each time
    and fails (0.2-0.3 ms a step here, about 4% of an MLP epoch). With no GPU to
    initialise, torch's cached check is safe; elsewhere Lightning's setting stays.
    """
    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    if device.type != "cpu" or name not in os.environ or torch.cuda.device_count() > 0:
        yield
        return
    value = os.environ.pop(name)
    try:
        yield
    finally:
        os.environ[name] = value


def make_fabric(
    accelerator: str = "auto",
    devices: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
    loggers: Sequence[Any] = (),
) -> Fabric:
    """A Fabric for the loop, its arguments checked first (see `check_engine`)."""
    accelerator, strategy = check_engine(accelerator, devices, strategy, precision)
    quiet_engine_logs()  # on a GPU, one process too: Fabric's note on TF32 matmuls would print in every notebook
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fabric's notes on environments and launchers; our messages say what matters
        return Fabric(
            accelerator=accelerator, devices=devices, strategy=strategy, precision=precision, loggers=list(loggers)
        )


def unwrapped(
    fabric: Fabric, module: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[nn.Module, torch.optim.Optimizer] | None:
    """The module and optimizer that ``fabric.setup`` wrapped, where its wrappers add nothing to a step; else None.

    On one device at full precision (``"32-true"``), with no callback that acts after an optimizer step,
    Fabric's module forward, ``fabric.backward`` and optimizer step come down to the module's forward,
    ``loss.backward()`` and the optimizer's step. The checks between (a precision context, a hook on the
    loss, a search of the callbacks) cost about 1.5% of the default VAE's step on a CPU
    (``benchmarks/step_overhead.py``). Data-parallel, mixed or double precision and other strategies do
    work in the wrappers, and keep them.
    """
    strategy = fabric.strategy
    if type(strategy) is not SingleDeviceStrategy or type(strategy.precision) is not Precision:
        return None
    if not (is_wrapped(module) and is_wrapped(optimizer)):
        return None
    callbacks = optimizer.__dict__.get("_callbacks")  # the wrapper's own list; unknown in another Fabric: wrapped
    if callbacks is None or any(callable(getattr(c, "on_after_optimizer_step", None)) for c in callbacks):
        return None
    return module.module, optimizer.optimizer


def quiet_engine_logs() -> QuietEngineLogs:
    """Fabric's own INFO lines (backend and process banners) off; its warnings and errors stay."""
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    return QuietEngineLogs()


class QuietEngineLogs:
    """Handed to spawned processes: unpickling it quiets Fabric's logs there before Fabric sets up the
    process group (each spawned interpreter configures Fabric's logger afresh, at INFO)."""

    def __reduce__(self):
        return quiet_engine_logs, ()


def _run_and_save(fabric: Fabric, quiet: QuietEngineLogs, path: str, function: Callable[..., Any], *args: Any) -> None:
    """Run ``function``; rank 0 saves its result to ``path``. Fabric's return queue is read only after the
    processes end, so a result larger than a pipe's buffer would block rank 0 forever; a file does not."""
    result = function(fabric, *args)
    if fabric.is_global_zero:
        torch.save(result, path)
    # An orderly end: every rank waits for the others, then tears its process group down. Left to the
    # interpreter's exit, a rank that finished first could destroy gloo's threads while they still ran
    # ("terminate called without an active exception", SIGABRT), seen once in CI.
    fabric.barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def launch(fabric: Fabric, function: Callable[..., Any], *args: Any) -> Any:
    """``function(fabric, *args)`` on every process; returns rank 0's result (in place for one process).

    From spawned processes the result comes back through a temporary file, so it must be made of
    tensors and plain containers (``torch.load(weights_only=True)`` reads it).
    """
    if fabric.world_size == 1:
        return function(fabric, *args)
    if under_torchrun():
        fabric.launch()
        return function(fabric, *args)
    port = os.environ.get("MASTER_PORT")
    with tempfile.TemporaryDirectory(prefix="ppvae-launch-") as directory:
        path = os.path.join(directory, "result.pt")
        try:
            fabric.launch(_run_and_save, QuietEngineLogs(), path, function, *args)
        finally:  # Fabric leaves its port in the environment, where the next launch would reuse it
            if port is None:
                os.environ.pop("MASTER_PORT", None)
        return torch.load(path, map_location="cpu", weights_only=True)
