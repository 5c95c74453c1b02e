"""Files that survive a kill, and folders that one process at a time may write.

Every write is atomic (`ppvae.atomic`, the one writer every file ppvae writes goes through):
a reader sees the old file or the new one, never a torn one, and a symlink at the path is
replaced, never followed. A Ctrl-C can be held until a group of writes is whole
(`interrupt_after`). `RunLock` is an exclusive claim on a folder that dies with its process.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ppvae.atomic import inside, write_bytes_atomic, write_text_atomic

__all__ = [
    "RunFolderBusy",
    "RunLock",
    "inside",
    "interrupt_after",
    "save_torch_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]

try:
    import fcntl
except ImportError:  # Windows: the lock is a file created exclusively
    fcntl = None

LOCK = ".ppvae-lock"


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block ends, then act on it as it would have (in the main thread;
    elsewhere signals never arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt


# -- one writer at a time ---------------------------------------------------------------------------


class RunFolderBusy(ValueError):
    """Another training holds the run folder."""


class RunLock:
    """An exclusive claim on a run folder for one training, so that a second training into it is refused
    instead of mixing one run's spec with the other's weights. Released when the training ends, or when
    its process dies (an advisory ``flock`` on the folder; on Windows a lock file created exclusively)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._descriptor: int | None = None

    def __enter__(self) -> RunLock:
        busy = RunFolderBusy(
            f"another training is writing {self.directory} (it holds the folder's lock); wait "
            "for it to end or train into another folder"
        )
        if fcntl is not None:
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise busy from None
        else:
            try:
                descriptor = os.open(self.directory / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                raise RunFolderBusy(f"{busy} (if no training runs, delete {self.directory / LOCK})") from None
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None
            if fcntl is None:
                (self.directory / LOCK).unlink(missing_ok=True)
