"""Random streams that make training reproducible and resumable.

Every random number a run draws comes from a stream named by integers: the
run's seed, the epoch, the process's rank. An epoch's data order is
``derive_seed(seed, epoch)`` (the same on every rank, so ranks shard one
permutation), and its noise, z and dynamic binarisation, is
``derive_seed(seed, epoch, rank)`` (different on every rank). A checkpoint
therefore needs only the seed and the epoch to restore every stream exactly,
on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed for the stream named by ``keys`` (NumPy's SeedSequence: distinct keys, unrelated streams)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


@contextmanager
def seeded(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Draw from torch's generator seeded with ``seed``, then restore its state, so that evaluating
    or sampling mid-training never resets the training's random stream. ``None``: no change."""
    if seed is None:
        yield
        return
    with fork_rng(device):
        torch.manual_seed(seed)
        yield


@contextmanager
def fork_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """Whatever the block draws, the stream after it is as before it: for work that reads a program (a trace
    to learn its sites) without being part of the estimate that follows."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
