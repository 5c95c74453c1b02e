"""The one way ppvae writes a file: atomically, and never through a link.

A temporary file in the same folder, fsync, ``os.replace``, then fsync of the folder: a reader
sees the old file or the new one, never a torn one, and a kill at any moment leaves the old one
whole. ``os.replace`` replaces a symlink at the path itself, never its target, so a link planted
in a run folder someone sends cannot redirect a write. Folders inside a run folder are checked by
`inside`: a planted link to a folder elsewhere is refused, naming it. A leaf module: figures
(``ppvae.viz``) and data files write through it too.

Each folder keeps a record of the files ppvae wrote into it (``.ppvae-written``, one name per line), so
that replacing a run removes ppvae's own files and never a user's, even one with the same name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

WRITTEN = ".ppvae-written"


def _replace(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file, fsynced, then renamed over it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # replaces a symlink at ``path`` itself, never its target
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one, and record
    that ppvae wrote it."""
    path = Path(path)
    note_written(path.parent, path.name)
    _replace(path, data)
    return path


def written(folder: str | Path) -> set[str]:
    """The names of the files (and folders) ppvae recorded writing into ``folder``."""
    record = Path(folder) / WRITTEN
    if not record.is_file() or record.is_symlink():
        return set()
    return {name for name in record.read_text().splitlines() if name}


def _record(folder: Path, names: set[str]) -> None:
    """Replace the folder's record of what ppvae wrote with ``names``."""
    _replace(folder / WRITTEN, "".join(f"{name}\n" for name in sorted(names)).encode())


def note_written(folder: str | Path, *names: str) -> None:
    """Add ``names`` to the folder's record of what ppvae wrote (before writing them: a kill in between leaves
    a name too many, which removing ignores, never a file of ppvae's that it would not remove)."""
    known = written(folder)
    if not set(names) <= known:
        _record(Path(folder), known | set(names))


def remove_written(folder: str | Path, names: Iterable[str]) -> list[str]:
    """Remove those of ``names`` that ppvae wrote into ``folder`` (a folder among them with what it holds, a
    link as the link itself), leaving any other file alone; returns the names removed."""
    folder = Path(folder)
    ours = written(folder)
    removed = []
    for name in names:
        path = folder / name
        if name not in ours or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(name)
    if removed:
        _record(folder, ours - set(removed))
    return removed


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def remove_temporaries(folder: str | Path, older_than: float = 300.0) -> list[str]:
    """Remove the temporary files a write killed halfway left in ``folder`` (``.<name>.<random>.tmp`` for a
    name ppvae writes there), those last touched more than ``older_than`` seconds ago: a write in progress
    in another process (an evaluation beside a training, another rank) is younger and keeps its file."""
    folder = Path(folder)
    ours = written(folder) | {WRITTEN}
    now = time.time()
    removed = []
    for path in folder.glob(".*.tmp"):
        try:
            if path.is_symlink() or now - path.stat().st_mtime < older_than:
                continue
        except FileNotFoundError:  # renamed into place by its writer meanwhile
            continue
        if any(path.name.startswith(f".{name}.") for name in ours):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def inside(folder: str | Path, *parts: str) -> Path:
    """``folder/parts...``, refused if any of ``parts`` that exists is a symlink: what ppvae writes into a
    folder stays in it."""
    path = Path(folder)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise ValueError(
                f"{path} is a link (to {os.readlink(path)}); ppvae writes a run's files only inside its folder: "
                "remove the link"
            )
    return path
