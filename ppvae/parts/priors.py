"""Priors p(z): modules that return a distribution over z with event shape (z_dim,).

The plate over the data broadcasts the prior across the batch, so a prior
returns one distribution, not one per example.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.parts.registry import Registry, positive

PRIORS = Registry("prior", context=("z_dim", "x_shape"))


class Prior(nn.Module):
    """Base class: ``prior() -> Distribution`` over z."""

    uses_encoder = False  # True if the prior is built from the model's encoder (VampPrior)

    def __init__(self, z_dim: int):
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be a positive integer, got {z_dim}")
        self.z_dim = z_dim
        self.register_buffer("_zeros", torch.zeros(z_dim), persistent=False)
        self.register_buffer("_ones", torch.ones(z_dim), persistent=False)

    def initialize(self, x: torch.Tensor) -> None:
        """Set parameters from the training images before the first step; by default nothing."""


@PRIORS.register("normal")
class StandardNormal(Prior):
    """Standard normal N(0, I): the VAE's default prior."""

    def forward(self) -> dist.Distribution:
        return dist.Normal(self._zeros, self._ones).to_event(1)


@PRIORS.register("laplace")
class LaplacePrior(Prior):
    """Laplace(0, scale) per dimension: heavier tails and sparser codes than the normal."""

    def __init__(self, z_dim: int, scale: float = 1.0):
        super().__init__(z_dim)
        self.scale = positive("scale", scale)

    def forward(self) -> dist.Distribution:
        return dist.Laplace(self._zeros, self._ones * self.scale).to_event(1)


@PRIORS.register("student_t")
class StudentTPrior(Prior):
    """Student-t(df) per dimension, centred, unit scale: heavy tails; df -> infinity is the normal."""

    def __init__(self, z_dim: int, df: float = 3.0):
        super().__init__(z_dim)
        self.df = positive("df", df)

    def forward(self) -> dist.Distribution:
        return dist.StudentT(self._ones * self.df, self._zeros, self._ones).to_event(1)


@PRIORS.register("mixture")
class MixturePrior(Prior):
    """A learnable mixture of ``components`` diagonal Gaussians: weights, means and scales trained with the VAE."""

    def __init__(self, z_dim: int, components: int = 10):
        super().__init__(z_dim)
        self.components = positive("components", components, integer=True)
        self.logits = nn.Parameter(torch.zeros(self.components))
        self.locs = nn.Parameter(torch.randn(self.components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(self.components, z_dim))

    def forward(self) -> dist.Distribution:
        parts = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), parts)


@PRIORS.register("vamp")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling, 2018): the mean of q(z | u_k) over ``components`` learned pseudo-images u_k.

    The model uses the encoder and the guide family for it, so ``attach`` is called by the
    model once its networks exist; the pseudo-images start as random training images.
    """

    uses_encoder = True

    def __init__(self, z_dim: int, x_shape: tuple[int, ...], components: int = 50):
        super().__init__(z_dim)
        self.components = positive("components", components, integer=True)
        self.pseudo_inputs = nn.Parameter(torch.rand(self.components, *x_shape))
        self._posterior = None

    def attach(self, posterior) -> None:
        """``posterior(x) -> distribution over z`` with batch shape (N,) and event shape (z_dim,)."""
        self._posterior = posterior

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        index = torch.randperm(x.shape[0], device=x.device)[: self.components]
        if index.numel() == self.components:
            self.pseudo_inputs.copy_(x[index].reshape(self.pseudo_inputs.shape))

    def forward(self) -> dist.Distribution:
        if self._posterior is None:
            raise RuntimeError("the vamp prior needs the model's encoder: the model calls attach() when it is built")
        weights = dist.Categorical(logits=torch.zeros(self.components, device=self.pseudo_inputs.device))
        return dist.MixtureSameFamily(weights, self._posterior(self.pseudo_inputs))
