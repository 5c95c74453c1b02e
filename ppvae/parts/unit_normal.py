"""The standard normal N(0, 1) as a distribution that knows it is standard, and its closed-form KL.

Every VAE step scores z under the default prior (log p(z) in ``Trace_ELBO``, KL(q || p) in
``TraceMeanField_ELBO``). torch's normal formulas carry the prior's location and scale through each
of them: subtracting zeros, dividing by ones, the log of ones, small operations forward and backward
that change no number. With loc = 0 and scale = 1 known,

    log p(z)      = -z^2 / 2 - log sqrt(2 pi)
    KL(q || p)    = (sigma^2 + mu^2 - 1 - log sigma^2) / 2      for q = N(mu, sigma^2)

are torch's own expressions with those operations left out: the same numbers and gradients to the
last bit, in fewer operations (with the likelihood's one-reduction sum, about 1% of the default VAE's
loss and backward on a CPU: `benchmarks/step_overhead.py`). The two formulas are also functions of
tensors (`log_density`, `kl_from_normal`), which the distribution and the registered KL call, and
which the lowered step calls without building either (`ppvae.models.VAE.lowered_elbo`).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import Normal, register_kl

LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, 1) per dimension."""
    return -(z**2) / 2 - LOG_SQRT_2PI


def kl_from_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, 1)) per dimension."""
    var_ratio = scale.pow(2)
    return 0.5 * (var_ratio + loc.pow(2) - 1 - var_ratio.log())


class UnitNormal(dist.Normal):
    """``Normal(zeros, ones)``: built like any normal, scored without its location and scale."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return log_density(value)


@register_kl(Normal, UnitNormal)
def _kl_normal_unit_normal(p: Normal, q: UnitNormal) -> torch.Tensor:
    kl = kl_from_normal(p.loc, p.scale)
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)  # as torch's, where q has more batch dims
    return kl if kl.shape == shape else kl.expand(shape)
