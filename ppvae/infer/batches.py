"""Batch sources: where the training loop's minibatches come from.

Two sources, one contract (``batches(epoch)`` yields ``(x, c)`` on the device,
``len()`` batches per epoch, the same on every rank). Each batch's condition c
is built by the ``conditioner(x, y)`` from its images (after the transform) and
its labels y, if the data has any:

- `TensorBatches`, the fast path: images already in one tensor on the
  device, batches are index slices of it, no DataLoader;
- `LoaderBatches`: any map-style ``torch.utils.data.Dataset`` (a folder
  read lazily, a memory-mapped array) through a ``DataLoader``, so memory does
  not grow with the dataset.

Both draw the epoch's order from `shard_order`: one permutation seeded by
(seed, epoch), padded to a multiple of the number of processes and dealt out
like cards, as ``DistributedSampler`` does. With a global batch of B, the B
images of step k on P processes are exactly those of step k on one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ppvae.infer.host_memory import HeapTrimmer
from ppvae.infer.random import derive_seed, generator

Batch = tuple[torch.Tensor, torch.Tensor | None]
Transform = Callable[[torch.Tensor], torch.Tensor]
Conditioner = Callable[[torch.Tensor, "torch.Tensor | None"], "torch.Tensor | None"]


def shard_order(
    num_examples: int, seed: int, epoch: int, world_size: int = 1, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The indices rank ``rank`` of ``world_size`` visits in ``epoch``.

    One permutation of ``num_examples`` seeded by (seed, epoch), the same on every rank;
    padded by wrapping around to a multiple of ``world_size`` (every rank takes the same
    number of steps); rank r takes positions r, r + P, r + 2P, ...
    """
    order = torch.randperm(num_examples, generator=generator(derive_seed(seed, epoch), device), device=device)
    total = math.ceil(num_examples / world_size) * world_size
    if total > num_examples:
        order = torch.cat([order, order[: total - num_examples]])
    return order[rank::world_size]


def slices(size: int, *tensors: torch.Tensor | None) -> Iterator[tuple[torch.Tensor | None, ...]]:
    """Consecutive slices of ``size`` rows of every tensor at once (a None stays None): the batch loop of every
    estimator, which scores a whole set a batch at a time. Between batches, host memory the last one freed is
    handed back to the system where it piles up (`ppvae.infer.host_memory`)."""
    n = next(t.shape[0] for t in tensors if t is not None)
    trim = HeapTrimmer()
    for start in range(0, n, size):
        yield tuple(None if t is None else t[start : start + size] for t in tensors)
        trim()


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Each process's share of a global batch; the global batch must divide evenly."""
    if batch_size % world_size:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must divide evenly across {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    return batch_size // world_size


def finish_batch(
    x: torch.Tensor, y: torch.Tensor | None, transform: Transform | None, conditioner: Conditioner | None
) -> Batch:
    """A batch as the programs take it: images transformed (binarised), then the condition built from them
    and the labels ``y`` (None without a conditioner: the programs take no condition)."""
    if transform is not None:
        x = transform(x)
    return x, (conditioner(x, y) if conditioner is not None else None)


@dataclass
class TensorBatches:
    """Minibatches sliced from images (N, C, H, W) and optional labels (N,) already on the device.

    ``transform`` runs on each batch (dynamic binarisation draws a fresh sample there);
    ``conditioner(x, y)`` then gives the batch's condition (one-hot labels; a completion
    model draws which pixels are visible there, from the loop's seeded noise like the transform).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    batch_size: int = 128
    seed: int = 0
    transform: Transform | None = None
    conditioner: Conditioner | None = None
    world_size: int = 1
    rank: int = 0

    def for_rank(self, world_size: int, rank: int, device: torch.device | None = None) -> TensorBatches:
        """This source as process ``rank`` of ``world_size`` sees it, its tensors on ``device``."""
        local_batch_size(self.batch_size, world_size)
        x = self.x if device is None else self.x.to(device)
        y = self.y if device is None or self.y is None else self.y.to(device)
        return replace(self, x=x, y=y, world_size=world_size, rank=rank)

    @property
    def num_examples(self) -> int:
        return self.x.shape[0]

    @property
    def local_batch_size(self) -> int:
        return local_batch_size(self.batch_size, self.world_size)

    def __len__(self) -> int:
        per_rank = math.ceil(self.num_examples / self.world_size)
        return math.ceil(per_rank / self.local_batch_size)

    def head(self, n: int) -> Batch:
        """The first ``n`` examples in storage order, untransformed: for data-dependent initialisation."""
        return self.x[:n], None if self.y is None else self.y[:n]

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = shard_order(self.num_examples, self.seed, epoch, self.world_size, self.rank, self.x.device)
        size = self.local_batch_size
        for start in range(0, order.shape[0], size):
            index = order[start : start + size]
            x = self.x[index]
            yield finish_batch(x, None if self.y is None else self.y[index], self.transform, self.conditioner)


class ShardSampler(Sampler[int]):
    """`shard_order` as a sampler for a DataLoader; call ``set_epoch`` before each epoch."""

    def __init__(self, num_examples: int, seed: int, world_size: int = 1, rank: int = 0):
        self.num_examples, self.seed, self.world_size, self.rank = num_examples, seed, world_size, rank
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_examples / self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(shard_order(self.num_examples, self.seed, self.epoch, self.world_size, self.rank).tolist())


@dataclass
class LoaderBatches:
    """Minibatches read from any map-style dataset through a DataLoader, a batch at a time.

    Items are images or (image, label) pairs; ``prepare`` turns a collated batch of images
    into float images on the device (uint8 arrives as is and is scaled there: a quarter of
    the bytes to move). ``transform`` and ``conditioner`` act as for `TensorBatches`.
    """

    dataset: Dataset
    prepare: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 128
    seed: int = 0
    transform: Transform | None = None
    conditioner: Conditioner | None = None
    num_workers: int = 0
    world_size: int = 1
    rank: int = 0
    device: torch.device | None = None

    def for_rank(self, world_size: int, rank: int, device: torch.device | None = None) -> LoaderBatches:
        local_batch_size(self.batch_size, world_size)
        return replace(self, world_size=world_size, rank=rank, device=device)

    @property
    def num_examples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        per_rank = math.ceil(self.num_examples / self.world_size)
        return math.ceil(per_rank / local_batch_size(self.batch_size, self.world_size))

    def _to_device(self, batch) -> Batch:
        images, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        x = self.prepare(images.to(self.device, non_blocking=True) if self.device is not None else images)
        return x, None if labels is None else torch.as_tensor(labels).to(x.device)

    def head(self, n: int) -> Batch:
        """The first ``n`` examples in storage order, untransformed, and their labels."""
        first = torch.utils.data.Subset(self.dataset, range(min(n, self.num_examples)))
        parts = [self._to_device(b) for b in DataLoader(first, batch_size=max(1, min(n, 1024)), num_workers=0)]
        x = torch.cat([p[0] for p in parts])
        y = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        return x, y

    def batches(self, epoch: int) -> Iterator[Batch]:
        sampler = ShardSampler(self.num_examples, self.seed, self.world_size, self.rank)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=local_batch_size(self.batch_size, self.world_size),
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device is not None and self.device.type == "cuda",
            generator=generator(derive_seed(self.seed, epoch, self.rank, 1)),  # worker seeds, not the noise stream
        )
        for batch in loader:
            yield finish_batch(*self._to_device(batch), self.transform, self.conditioner)
