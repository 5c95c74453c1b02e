"""Corruptions C(x~ | x): what a denoising autoencoder learns to undo, each with its noise level.

A corruption is a small module whose call draws x~ from C(x~ | x) for images in [0, 1], elementwise
and independently per pixel, so that the chain x -> x~ -> x of Bengio et al. (2013) is ergodic
(every image can reach every other) where the level is above 0:

    salt_pepper  each pixel, with probability ``level``, replaced by 0 or 1 at random
    gaussian     x + N(0, ``level``^2), clipped to [0, 1]
    mask         each pixel, with probability ``level``, set to 0 (dropout of pixels)
"""

from __future__ import annotations

import torch
from torch import nn

from ppvae.parts.registry import Registry

CORRUPTIONS = Registry("corruption", context=())


class Corruption(nn.Module):
    """Draws x~ ~ C(x~ | x) for images (..., C, H, W) in [0, 1]; ``level`` is the noise level."""

    def __init__(self, level: float):
        super().__init__()
        level = float(level)
        if not 0 < level <= self.max_level:
            raise ValueError(f"level must be in (0, {self.max_level:g}], got {level:g}")
        self.level = level

    max_level = 1.0

    def extra_repr(self) -> str:
        return f"level={self.level:g}"


@CORRUPTIONS.register("salt_pepper")
class SaltPepper(Corruption):
    """Each pixel, with probability ``level``, replaced by 0 or 1 at random (Bengio et al.'s for MNIST)."""

    def __init__(self, level: float = 0.3):
        super().__init__(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.rand_like(x) < self.level
        return torch.where(hit, torch.bernoulli(torch.full_like(x, 0.5)), x)


@CORRUPTIONS.register("gaussian")
class Gaussian(Corruption):
    """x + N(0, ``level``^2) per pixel, clipped to [0, 1]."""

    max_level = 10.0

    def __init__(self, level: float = 0.5):
        super().__init__(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.level * torch.randn_like(x)).clamp(0, 1)


@CORRUPTIONS.register("mask")
class Mask(Corruption):
    """Each pixel, with probability ``level``, set to 0."""

    def __init__(self, level: float = 0.5):
        if float(level) >= 1:
            raise ValueError(f"level must be below 1 (at 1 every image becomes black), got {level:g}")
        super().__init__(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.rand_like(x) >= self.level)
