"""Sizes checked against the machine's memory before anything is allocated.

A spec file someone sends (``z_dim = 1e9``), a typo on the command line (``--z-dim 1000000``) or a
number of particles that multiplies every batch would otherwise allocate until the kernel kills the
process, with no message. A model is built first on PyTorch's meta device, which records shapes and
allocates nothing, to count its parameters; training holds about eight copies of them (weights,
gradients, Adam's two moments, the checkpoint's copies of the weights and moments, the last finite
weights, and the weights to put back if the fit fails).
"""

from __future__ import annotations

import os
from typing import Any

import torch

COPIES_IN_TRAINING = 8  # see the module's docstring: measured, a z_dim of 10**6 on 8x8 images took 23 GB
BYTES_PER_FLOAT = 4
ROW_FLOATS_PER_PIXEL = 4  # a (particle, image) row through the networks: a rough 4 floats per pixel


def physical_memory() -> int | None:
    """Bytes of memory this machine has, or None where the system does not say (then nothing is refused)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


def check_model_size(cls: type, config: dict[str, Any], where: str) -> None:
    """Refuse, in one line, a model whose training would need more memory than the machine has."""
    memory = physical_memory()
    if memory is None:
        return
    try:
        with torch.device("meta"):
            probe = cls(**config)
    except Exception:  # a part that needs real values to build (a flow); the real build checks its arguments
        return
    parameters = sum(p.numel() for p in probe.parameters())
    need = parameters * BYTES_PER_FLOAT * COPIES_IN_TRAINING
    if need > memory:
        raise ValueError(
            f"{where}: {cls.__name__} with these sizes has {parameters:,} parameters, which take "
            f"{_gib(parameters * BYTES_PER_FLOAT)} and about {_gib(need)} to train, more than this machine's "
            f"{_gib(memory)}: choose smaller sizes (z_dim, hidden)"
        )


def check_particles(batch_size: int, num_particles: int, x_dim: int) -> None:
    """Refuse a batch of particles whose pass through the networks would not fit in memory."""
    memory = physical_memory()
    rows = batch_size * num_particles
    need = rows * x_dim * ROW_FLOATS_PER_PIXEL * BYTES_PER_FLOAT
    if memory is not None and need > memory:
        raise ValueError(
            f"num_particles={num_particles:,} with batch_size={batch_size} sends {rows:,} samples of {x_dim:,} "
            f"pixels through the networks at each step, about {_gib(need)}, more than this machine's "
            f"{_gib(memory)}: lower num_particles or batch_size"
        )
