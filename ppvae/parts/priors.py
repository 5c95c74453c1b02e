"""Priors p(z): modules that return a distribution over z with event shape (z_dim,).

The plate over the data broadcasts the prior across the batch, so a prior
returns one distribution, not one per example.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.parts.registry import Registry

PRIORS = Registry("prior", context=("z_dim",))


class Prior(nn.Module):
    """Base class: ``prior() -> Distribution`` over z."""

    def __init__(self, z_dim: int):
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be a positive integer, got {z_dim}")
        self.z_dim = z_dim
        self.register_buffer("_zeros", torch.zeros(z_dim), persistent=False)
        self.register_buffer("_ones", torch.ones(z_dim), persistent=False)


@PRIORS.register("normal")
class StandardNormal(Prior):
    """Standard normal N(0, I): the VAE's default prior."""

    def forward(self) -> dist.Distribution:
        return dist.Normal(self._zeros, self._ones).to_event(1)
