"""Datasets, binarisation and loaders: the bottom layer of ppvae.

``load(name_or_path, split=...)`` returns an :class:`ImageDataset` for the named
datasets (MNIST, Fashion-MNIST, KMNIST, EMNIST letters) or for a user's own
array file or image folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppvae.data.binarize import BINARIZE_METHODS, binarize, check_binarize, fixed_binarization
from ppvae.data.dataset import ImageDataset
from ppvae.data.dequantize import dequantize
from ppvae.data.files import as_image_tensor, load_path
from ppvae.data.idx import read_idx, write_idx
from ppvae.data.sources import DATASETS, DatasetNotFoundError, default_root, load_named

__all__ = [
    "BINARIZE_METHODS",
    "DATASETS",
    "DatasetNotFoundError",
    "ImageDataset",
    "as_image_tensor",
    "as_images",
    "binarize",
    "check_binarize",
    "default_root",
    "dequantize",
    "fixed_binarization",
    "load",
    "read_idx",
    "write_idx",
]


def load(
    name: str | Path,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = True,
    limit: int | None = None,
) -> ImageDataset:
    """Load a dataset by name ("fashion-mnist", "mnist", "kmnist", "emnist-letters") or from a path.

    Named datasets are read from ``root`` (default ``$PPVAE_DATA`` or
    ``~/.cache/ppvae``), then from Debian's dataset packages, then fetched through
    torchvision if ``download``. ``limit`` keeps the first ``limit`` images.
    A path (.npy, .pt or a folder of images) loads everything; use
    ``ImageDataset.random_split`` to hold some out.
    """
    text = str(name)
    is_path = isinstance(name, Path) or "/" in text or text.endswith((".npy", ".pt", ".pth")) or Path(text).is_dir()
    data = load_path(text) if is_path else load_named(text, split, root, download_missing=download)
    return data.subset(limit) if limit is not None else data


def as_images(data: "ImageDataset | torch.Tensor", shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The images of a dataset or tensor as float (N, C, H, W); a flat (N, D) tensor is reshaped to ``shape``."""
    x = data.x if isinstance(data, ImageDataset) else data
    if not isinstance(x, torch.Tensor):
        x = as_image_tensor(x)
    if x.dim() == 2:
        if shape is None or x.shape[1] != int(torch.Size(shape).numel()):
            raise ValueError(f"flat images of width {x.shape[1]} do not match the image shape {shape}")
        return x.reshape(x.shape[0], *shape)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"images of shape {tuple(x.shape[1:])} do not match the model's image shape {tuple(shape)}")
    return x if x.is_floating_point() else x.float()
