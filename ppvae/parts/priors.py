"""Priors p(z | c): modules that return a distribution over z with event shape (z_dim,).

Every prior is called with the model's condition ``c`` (None for an unconditional
model). Most ignore it and return one distribution, which the plate over the data
broadcasts across the batch; a conditional prior returns one per example, batch (N,).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.parts import unit_normal
from ppvae.parts.normal_mixture import NormalMixture
from ppvae.parts.registry import Registry, positive
from ppvae.parts.unit_normal import UnitNormal

PRIORS = Registry("prior", context=("z_dim", "x_shape", "condition_dim"))


class Prior(nn.Module):
    """Base class: ``prior(c=None) -> Distribution`` over z."""

    uses_encoder = False  # True if the prior is built from the model's encoder (VampPrior)
    uses_condition = False  # True if p(z | c) depends on c by itself (a conditional prior)

    def depends_on_condition(self) -> bool:
        """Whether p(z | c) changes with c in a conditional model: a conditional prior, or one built from
        the (conditional) encoder."""
        return self.uses_condition or self.uses_encoder

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
    """Standard normal N(0, I): the VAE's default prior (scored by `UnitNormal`'s shorter formulas)."""

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        return UnitNormal(self._zeros, self._ones).to_event(1)

    # Its densities as tensors, for the lowered step: the distribution's own formulas, without building it.
    log_density = staticmethod(unit_normal.log_density)
    kl_from_normal = staticmethod(unit_normal.kl_from_normal)


@PRIORS.register("laplace")
class LaplacePrior(Prior):
    """Laplace(0, scale) per dimension: heavier tails and sparser codes than the normal."""

    def __init__(self, z_dim: int, scale: float = 1.0):
        super().__init__(z_dim)
        self.scale = positive("scale", scale)

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        return dist.Laplace(self._zeros, self._ones * self.scale).to_event(1)


@PRIORS.register("student_t")
class StudentTPrior(Prior):
    """Student-t(df) per dimension, centred, unit scale: heavy tails; df -> infinity is the normal."""

    def __init__(self, z_dim: int, df: float = 3.0):
        super().__init__(z_dim)
        self.df = positive("df", df)

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
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

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        return NormalMixture(self.logits, self.locs, self.log_scales.exp())


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
        """``posterior(x, c, batch_shape=None) -> distribution over z``, event shape (z_dim,), batch shape (N,)
        or ``batch_shape``."""
        self._posterior = posterior

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        index = torch.randperm(x.shape[0], device=x.device)[: self.components]
        if index.numel() == self.components:
            self.pseudo_inputs.copy_(x[index].reshape(self.pseudo_inputs.shape))

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        """The mixture of q(z | u_k); with a condition, of q(z | u_k, c_i) for each example i (batch (N,))."""
        if self._posterior is None:
            raise RuntimeError("the vamp prior needs the model's encoder: the model calls attach() when it is built")
        k = self.components
        if c is None:
            return NormalMixture.of(
                torch.zeros(k, device=self.pseudo_inputs.device), self._posterior(self.pseudo_inputs)
            )
        n = c.shape[0]
        inputs = self.pseudo_inputs.unsqueeze(0).expand(n, *self.pseudo_inputs.shape).flatten(0, 1)
        components = self._posterior(inputs, c.repeat_interleave(k, dim=0), (n, k))  # every u_k with every c_i
        return NormalMixture.of(torch.zeros(n, k, device=self.pseudo_inputs.device), components)


@PRIORS.register("conditional")
class ConditionalNormalPrior(Prior):
    """A learned p(z | c) = N(mu(c), diag(sigma(c)^2)) from a small network on the condition: for conditional models.

    The prior then carries what the condition says about z, and the encoder only the rest.
    """

    uses_condition = True

    def __init__(self, z_dim: int, condition_dim: int = 0, hidden: int = 64):
        super().__init__(z_dim)
        if condition_dim < 1:
            raise ValueError("the conditional prior needs a condition: use it in a conditional model (CVAE)")
        self.net = nn.Sequential(nn.Linear(condition_dim, int(hidden)), nn.ReLU(), nn.Linear(int(hidden), 2 * z_dim))

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        if c is None:
            raise ValueError("the conditional prior needs the condition c")
        loc, log_scale = self.net(c).split(self.z_dim, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)
