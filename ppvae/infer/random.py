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


class OwnStream:
    """One training's place in torch's global random stream, put back at each of its turns.

    Pyro draws from torch's global generator, which every thread of the process shares: a model built or
    sampled without a seed in another thread, between two training steps, would move the training's
    stream. Used as ``with PYRO_LOCK, stream:`` around each turn (a step, a batch drawn), it sets the
    training's state on entering and keeps it on leaving, so draws made elsewhere between turns change
    nothing in the training. A copy of the CPU generator's state (5 kB) and, on a GPU, of its seed and
    offset (host values: no device sync) per turn.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        device = torch.device(device)
        self.cuda_index = (device.index or 0) if device.type == "cuda" else None
        self.state: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def __enter__(self) -> OwnStream:
        if self.state is not None:
            torch.set_rng_state(self.state[0])
            if self.cuda_index is not None:
                torch.cuda.set_rng_state(self.state[1], self.cuda_index)
        return self

    def __exit__(self, *exc: object) -> None:
        cuda = torch.cuda.get_rng_state(self.cuda_index) if self.cuda_index is not None else None
        self.state = (torch.get_rng_state(), cuda)
