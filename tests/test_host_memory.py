"""Host memory freed between batches goes back to the system (ppvae.infer.host_memory)."""

import gc

import pytest
import torch

from ppvae.infer import batches
from ppvae.infer.batches import slices
from ppvae.infer.host_memory import HeapTrimmer, malloc_trim, resident_mb

glibc = pytest.mark.skipif(
    malloc_trim() is None or resident_mb() is None, reason="needs glibc's malloc_trim and /proc (Linux)"
)


def strand(megabytes: int) -> torch.Tensor:
    """Leave ``megabytes`` of freed memory inside glibc's heap, below a live tensor that keeps the heap's top
    from being returned: 64 kB tensors, under any mmap threshold, then one more, then all but the last freed.
    Returns the last, which must stay alive.

    The pin is as large as the others so that it lands above them: glibc fills every free chunk of 64 kB or more
    before it extends the heap, so once the others reach the top nothing lower can take the pin. A small pin may
    fit a small hole that earlier tests left low in the heap; the tensors freed above it then join the top, and
    glibc returns the top on ``free`` by itself, before the trimmer is asked.
    """
    many = [torch.ones(16_384) for _ in range(megabytes * 16)]
    pin = torch.ones(16_384)
    del many
    return pin


def settle() -> None:
    """Free what earlier tests left in reference cycles, then return every free page: the resident size is then
    what this test's own allocations make it."""
    gc.collect()
    malloc_trim()(0)


@glibc
def test_the_trimmer_returns_stranded_memory_once_the_process_has_grown_by_its_slack():
    settle()  # what earlier tests freed is returned first, so the stranded memory is resident anew
    trim = HeapTrimmer(slack_mb=100)
    before = resident_mb()
    pin = strand(400)
    stranded = resident_mb()
    assert stranded > before + 300, "the test did not strand memory: nothing to measure"
    trim()
    assert trim.trims == 1
    assert resident_mb() < stranded - 300
    trim()  # no growth since: nothing to do
    assert trim.trims == 1
    del pin


@glibc
def test_the_trimmer_leaves_growth_within_its_slack_alone():
    settle()
    trim = HeapTrimmer(slack_mb=10_000)
    pin = strand(200)
    trim()
    assert trim.trims == 0
    del pin


def test_slices_trims_between_batches(monkeypatch):
    """The estimators' batch loop looks at host memory after every batch it hands out."""
    looks = []
    monkeypatch.setattr(batches, "HeapTrimmer", lambda: lambda: looks.append(1))
    assert len(list(slices(3, torch.arange(8)))) == 3
    assert len(looks) == 3
