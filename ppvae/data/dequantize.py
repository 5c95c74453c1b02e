"""Uniform dequantisation: 256-level pixels made continuous, so that densities over them are comparable.

A density model of pixels that take only 256 values can reach any height on
them; adding uniform noise, x = (pixel + u) / 256 with u ~ U[0, 1), turns the
data continuous, and the log-density of the dequantised data is a lower bound
on the log-probability of the discrete pixels (Theis et al., 2016). Factor
analysis and every VAE with a continuous likelihood are compared on it.
"""

from __future__ import annotations

import torch

from ppvae.data.dataset import ImageDataset


def dequantize(data: ImageDataset | torch.Tensor, levels: int = 256, seed: int = 0) -> ImageDataset | torch.Tensor:
    """(pixel + u) / levels with u ~ U[0, 1), for images in [0, 1] on ``levels`` grey levels; seeded.

    Returns the same kind of object it was given. Raises ValueError for data that is
    not quantised on ``levels`` levels (already continuous, or outside [0, 1]).
    """
    x = data.x if isinstance(data, ImageDataset) else torch.as_tensor(data)
    x = x if x.is_floating_point() else x.float()
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"dequantize needs pixels in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    pixels = torch.round(x * (levels - 1))
    if not torch.allclose(pixels / (levels - 1), x, atol=1e-4):
        raise ValueError(f"the data is not on {levels} grey levels (is it dequantised already?)")
    generator = torch.Generator().manual_seed(seed)  # on the CPU: one seed, the same pixels on every device
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    continuous = (pixels + noise) / levels
    if isinstance(data, ImageDataset):
        return ImageDataset(continuous, data.y, f"{data.name} (dequantised)", data.split, data.classes)
    return continuous
