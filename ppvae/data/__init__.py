"""Datasets, binarisation and loaders: the bottom layer of ppvae.

``load(name_or_path, split=...)`` returns an `ImageDataset` for the named
datasets (MNIST, Fashion-MNIST, KMNIST, EMNIST letters) or for a user's own
array file or image folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ppvae.data.binarize import BINARIZE_METHODS, binarize, check_binarize, fixed_binarization
from ppvae.data.dataset import ImageDataset
from ppvae.data.dequantize import dequantize
from ppvae.data.files import as_image_tensor, check_finite, load_path
from ppvae.data.idx import read_idx, write_idx
from ppvae.data.lazy import FolderImages, NpyImages
from ppvae.data.sources import DATASET_NAMES, DATASETS, DatasetNotFoundError, default_root, load_named

Data = ImageDataset | torch.Tensor | torch.utils.data.Dataset
"""What every model and evaluation accepts: a ppvae dataset, an image tensor, or any dataset of images."""

__all__ = [
    "BINARIZE_METHODS",
    "Data",
    "FolderImages",
    "NpyImages",
    "DATASETS",
    "DATASET_NAMES",
    "DatasetNotFoundError",
    "ImageDataset",
    "as_image_tensor",
    "as_images",
    "in_memory",
    "binarize",
    "check_binarize",
    "default_root",
    "dequantize",
    "fixed_binarization",
    "load",
    "read_idx",
    "refuse_tuples_and_paths",
    "to_float_images",
    "write_idx",
]


def load(
    name: str | Path,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = True,
    limit: int | None = None,
    lazy: bool = False,
) -> ImageDataset | NpyImages | FolderImages:
    """Load a dataset by name ("fashion-mnist", "mnist", "kmnist", "emnist-letters", and "alphanumeric":
    MNIST's digits and EMNIST's letters as 36 classes, 0-9 then A-Z) or from a path.

    Named datasets are read from ``root`` (default ``$PPVAE_DATA`` or
    ``~/.cache/ppvae``), then from Debian's dataset packages, then fetched through
    torchvision if ``download``. ``limit`` keeps the first ``limit`` images.
    A path (.npy, .pt or a folder of images) loads everything; use
    ``ImageDataset.random_split`` to hold some out. With ``lazy=True`` a .npy is memory-mapped
    and a folder decoded image by image as training asks (`NpyImages`, `FolderImages`):
    memory stays flat however large the data.
    """
    text = str(name)
    is_path = isinstance(name, Path) or "/" in text or text.endswith((".npy", ".pt", ".pth")) or Path(text).is_dir()
    if lazy:
        if not is_path or not (text.endswith(".npy") or Path(text).is_dir()):
            raise ValueError(f"lazy=True reads a .npy file or a folder of images, not {text!r}")
        data = NpyImages(text) if text.endswith(".npy") else FolderImages(text)
        return torch.utils.data.Subset(data, range(min(limit, len(data)))) if limit is not None else data
    data = load_path(text) if is_path else load_named(text, split, root, download_missing=download)
    return data.subset(limit) if limit is not None else data


def _stack_dataset(data: torch.utils.data.Dataset) -> torch.Tensor:
    """Every image of a map-style dataset in one tensor (items are images or (image, label) pairs)."""
    if len(data) == 0:
        raise ValueError("no images (the dataset is empty)")
    loader = torch.utils.data.DataLoader(data, batch_size=1024, shuffle=False)
    return torch.cat([batch[0] if isinstance(batch, (tuple, list)) else batch for batch in loader])


def to_float_images(x: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Float images (N, C, H, W): uint8 is scaled to [0, 1]; a flat (N, D) batch is reshaped to ``shape``."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif not x.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {x.dtype}")
    elif x.dtype != torch.float32:
        x = x.float()
    check_finite(x)
    if x.dim() == 2:
        if shape is None or x.shape[1] != int(torch.Size(shape).numel()):
            raise ValueError(f"flat images of width {x.shape[1]} do not match the image shape {shape}")
        return x.reshape(x.shape[0], *shape)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x


def refuse_tuples_and_paths(data: Any) -> None:
    """One line for two habits: handing images and labels together as a tuple (scikit-learn's), and handing
    a file's path where images go (the command line's ``--data``)."""
    if isinstance(data, (str, os.PathLike)):
        raise ValueError(f"got the path {str(data)!r} for the images: read them first, ppvae.data.load({str(data)!r})")
    if isinstance(data, tuple):
        raise ValueError(
            f"got a tuple of {len(data)} for the images: pass the images alone and their labels as y (fit(x, y=labels))"
        )


def in_memory(data: Data) -> bool:
    """Whether ``data`` is all in memory (a ppvae dataset or a tensor), not a dataset read image by image."""
    return isinstance(data, (ImageDataset, torch.Tensor))


def as_images(data: Data, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The images of a dataset or tensor as float (N, C, H, W); a flat (N, D) tensor is reshaped to ``shape``.

    uint8 images are scaled to [0, 1]; any other map-style dataset is read into one tensor.
    """
    refuse_tuples_and_paths(data)
    x = data.x if isinstance(data, ImageDataset) else data
    if isinstance(x, torch.utils.data.Dataset) and not isinstance(x, torch.Tensor):
        x = _stack_dataset(x)
    if not isinstance(x, torch.Tensor):
        x = as_image_tensor(x)
    x = to_float_images(x, shape)
    if x.shape[0] == 0:
        raise ValueError("no images (the data is empty)")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"images of shape {tuple(x.shape[1:])} do not match the model's image shape {tuple(shape)}")
    return x
