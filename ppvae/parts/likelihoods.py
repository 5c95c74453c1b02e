"""Likelihoods p(x | decoder output): modules that turn the decoder's flat output into a distribution over images.

A likelihood says how many numbers per pixel it needs from the decoder
(``outputs_per_pixel``) and which data it accepts (``check``), checked once
before training rather than at every step.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.parts.registry import Registry

LIKELIHOODS = Registry("likelihood", context=("x_shape",))


class Likelihood(nn.Module):
    """Base class: ``likelihood(h) -> Distribution`` with event shape ``x_shape``.

    ``h`` has shape (..., outputs_per_pixel * prod(x_shape)); leading dims are batch dims.
    """

    outputs_per_pixel = 1
    binary = False  # True if the likelihood is defined on {0, 1} pixels only

    def __init__(self, x_shape: tuple[int, ...]):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.x_dim = math.prod(self.x_shape)

    @property
    def width(self) -> int:
        """How many numbers the decoder must output."""
        return self.outputs_per_pixel * self.x_dim

    def _images(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(h.shape[:-1] + self.x_shape)

    def check(self, x: torch.Tensor) -> None:
        """Raise ValueError, saying what to do, if ``x`` is outside this likelihood's support."""


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Bernoulli per pixel on logits: for binary (binarised) images."""

    binary = True

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self._images(h)).to_event(len(self.x_shape))

    def check(self, x: torch.Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            grey = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(
                "the Bernoulli likelihood needs binary pixels (0 or 1), but the data has grey levels "
                f"(for example {grey:.4g}); binarise it with binarize='dynamic', 'static' or 'threshold', "
                "or choose a likelihood for grey levels"
            )
