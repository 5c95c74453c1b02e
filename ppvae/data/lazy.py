"""Datasets read lazily from disk, for data that should not (or cannot) sit in memory.

`NpyImages` memory-maps a ``.npy`` array; `FolderImages` decodes
image files as they are asked for. Both are map-style torch datasets that
hold a path, not the pixels, so they pickle in bytes to the processes of a
data-parallel run, and each process opens the file itself. Items are uint8 or
float images (C, H, W), with the label where there is one; training scales
uint8 to [0, 1] on the device (``ppvae.data.to_float_images``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ppvae.data.files import IMAGE_SUFFIXES, read_image_file


class NpyImages(Dataset):
    """Images in a ``.npy`` file, memory-mapped: (N, H, W), (N, C, H, W) or (N, H, W, C), uint8 or float in [0, 1].

    ``labels``: an optional ``.npy`` of N integer labels (read into memory: 8 bytes an image).
    Batches are read with one fancy index per batch (``__getitems__``), not image by image.
    """

    def __init__(self, path: str | Path, labels: str | Path | None = None, classes: Sequence[str] | None = None):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist")
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        if array.ndim not in (3, 4):
            raise ValueError(f"{self.path}: expected images (N, H, W), (N, C, H, W) or (N, H, W, C), got {array.shape}")
        if array.dtype != np.uint8 and array.dtype.kind != "f":
            raise ValueError(f"{self.path}: images must be uint8 or floating point, got {array.dtype}")
        self.channels_last = array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4)
        c, h, w = (
            (1, *array.shape[1:])
            if array.ndim == 3
            else ((array.shape[3], *array.shape[1:3]) if self.channels_last else array.shape[1:])
        )
        self.shape = (int(c), int(h), int(w))
        self.length = int(array.shape[0])
        self.y = None
        if labels is not None:
            self.y = torch.as_tensor(np.load(Path(labels).expanduser(), allow_pickle=False)).long()
            if self.y.shape != (self.length,):
                raise ValueError(
                    f"{labels}: expected {self.length} labels, got an array of shape {tuple(self.y.shape)}"
                )
        self.classes = list(classes) if classes else None
        self.name = self.path.stem
        self._array: np.ndarray | None = None  # opened on first use, in each process

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return self.length

    def _images(self, index) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        x = torch.from_numpy(np.ascontiguousarray(self._array[index]))
        if self._array.ndim == 3:
            return x.unsqueeze(-3)
        return x.movedim(-1, -3) if self.channels_last else x

    def __getitem__(self, index: int):
        x = self._images(index)
        return x if self.y is None else (x, self.y[index])

    def __getitems__(self, indices: list[int]) -> list:
        """A batch in one read: indices sorted for the memory map, then put back in the asked order."""
        order = np.argsort(indices, kind="stable")
        batch = self._images(np.asarray(indices)[order])
        images = torch.empty_like(batch)
        images[torch.from_numpy(order)] = batch
        if self.y is None:
            return list(images)
        return list(zip(images, self.y[indices]))

    def __repr__(self) -> str:
        return f"NpyImages({self.name!r}, {self.length} images of shape {self.shape}, memory-mapped)"


class FolderImages(Dataset):
    """Image files under a folder, decoded when asked for; sub-folders, if any, name the classes."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a folder")
        self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"{self.path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in this folder")
        folders = [p.parent.relative_to(self.path).as_posix() for p in self.files]
        self.classes = sorted(set(folders) - {"."}) or None
        self.y = None
        if self.classes:
            if "." in folders:
                raise ValueError(
                    f"{self.path}: images sit both at the top level and in class sub-folders; use one layout"
                )
            index = {c: i for i, c in enumerate(self.classes)}
            self.y = torch.tensor([index[f] for f in folders])
        self.shape = tuple(self._read(0).shape)
        self.name = self.path.name

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, index: int) -> torch.Tensor:
        image = read_image_file(self.files[index])
        if index and tuple(image.shape) != self.shape:
            raise ValueError(
                f"{self.files[index]}: shape {tuple(image.shape)} differs from {self.shape}; "
                "all images must share one shape"
            )
        return image

    def __getitem__(self, index: int):
        x = self._read(index)
        return x if self.y is None else (x, self.y[index])

    def __repr__(self) -> str:
        return f"FolderImages({self.name!r}, {len(self)} images of shape {self.shape}, read lazily)"
