"""Variational families q(z | x): the encoder's output turned into a reparameterised distribution.

Every family is location-scale: the encoder outputs a location and a
log-variance per latent dimension, so ``encode`` can report both.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.parts.registry import Registry, positive
from ppvae.parts.unit_normal import LOG_SQRT_2PI

GUIDES = Registry("guide", context=("z_dim",))


class LocationScaleGuide(nn.Module):
    """Base class: ``guide_family(h) -> Distribution`` over z, from h = (loc, log-variance)."""

    point_mass = False  # True if q(z|x) has no spread: no density to importance-sample log p(x) with

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim

    @property
    def width(self) -> int:
        """How many numbers the encoder must output."""
        return 2 * self.z_dim

    def loc_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var = h.split(self.z_dim, dim=-1)
        return loc, torch.exp(0.5 * log_var)

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        return self.distribution(*self.loc_scale(h)).to_event(1)


@GUIDES.register("normal")
class NormalGuide(LocationScaleGuide):
    """Diagonal normal q(z|x) = N(mu(x), diag(sigma(x)^2)): the standard VAE encoder."""

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        return dist.Normal(loc, scale)

    def draw(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, loc, scale) without building q: z drawn as ``self(h).rsample()`` draws it, the same noise and
        the same numbers (torch's standard normal filled into a new tensor, then loc + eps * scale). For the
        lowered step, where building the distribution costs more host time than its arithmetic."""
        loc, scale = self.loc_scale(h)
        eps = torch.empty(loc.shape, dtype=loc.dtype, device=loc.device).normal_()
        return loc + eps * scale, loc, scale

    @staticmethod
    def log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """log N(z; loc, scale^2) per dimension, torch's formula term by term (the same numbers as q's)."""
        return -((z - loc) ** 2) / (2 * scale**2) - scale.log() - LOG_SQRT_2PI


@GUIDES.register("laplace")
class LaplaceGuide(LocationScaleGuide):
    """Laplace q(z|x) per dimension: sharper peak and heavier tails than the normal."""

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        return dist.Laplace(loc, scale)


@GUIDES.register("student_t")
class StudentTGuide(LocationScaleGuide):
    """Student-t(df) q(z|x) per dimension, reparameterised through Pyro's StudentT."""

    def __init__(self, z_dim: int, df: float = 5.0):
        super().__init__(z_dim)
        self.df = positive("df", df)

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        return dist.StudentT(torch.full_like(loc, self.df), loc, scale)


@GUIDES.register("logistic")
class LogisticGuide(LocationScaleGuide):
    """Logistic q(z|x) per dimension: Laplace-like tails, smooth everywhere."""

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        return dist.Logistic(loc, scale)


@GUIDES.register("delta")
class DeltaGuide(LocationScaleGuide):
    """A point mass at the encoder's output: no posterior noise, so the VAE is an autoencoder whose code is
    regularised by log p(z) (the lectures' contrast to the VAE). It has no density, so no log p(x) estimate."""

    point_mass = True

    @property
    def width(self) -> int:
        return self.z_dim

    def loc_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h, torch.zeros_like(h)

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        return dist.Delta(h, event_dim=1)
