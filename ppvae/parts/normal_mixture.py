"""A mixture of diagonal normals scored by two matrix products instead of an (N, K, D) tensor.

``MixtureSameFamily`` scores z (N, D) under K diagonal normals by broadcasting it against the
components (K, D): an (N, K, D) tensor through several elementwise passes, forward and back. For the
VampPrior (K = 500 pseudo-images) at AIS's batch that tensor is most of the work. Expanding the square,

    sum_d (z_d - mu_kd)^2 / s_kd^2 = sum_d z_d^2 / s_kd^2 - 2 sum_d z_d mu_kd / s_kd^2 + sum_d mu_kd^2 / s_kd^2,

the first two terms are (N, D) x (D, K) products and the third depends on k alone, so

    log p(z) = logsumexp_k [log w_k - 1/2 (that sum) - sum_d log s_kd] - D/2 log(2 pi)

costs (N, K) work. The expansion subtracts large terms where z lies far from mu_k in units of s_k, so
it is taken in float64 (cheap: the products are small; the (N, K, D) tensor was the cost) and agrees
with ``MixtureSameFamily`` to float32 rounding. Sampling is ``MixtureSameFamily``'s.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints


class NormalMixture(dist.TorchDistribution):
    """sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)): ``logits`` (..., K), ``loc`` and ``scale`` (..., K, D).

    Expanding it (as a plate does) only records the batch shape: the parameters broadcast when scored.
    """

    arg_constraints = {"logits": constraints.real_vector, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        self.logits, self.loc, self.scale = logits, loc, scale
        batch_shape = torch.broadcast_shapes(logits.shape[:-1], loc.shape[:-2], scale.shape[:-2])
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    @classmethod
    def of(cls, logits: torch.Tensor, components: dist.Distribution) -> dist.Distribution:
        """The mixture of ``components`` (batch (..., K)) with weights softmax(``logits``): a ``NormalMixture``
        where the components are diagonal normals, else ``MixtureSameFamily``."""
        if isinstance(components, dist.Independent) and components.reinterpreted_batch_ndims == 1:
            if isinstance(components.base_dist, torch.distributions.Normal):
                return cls(logits, components.base_dist.loc, components.base_dist.scale)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(NormalMixture, _instance)
        new.logits, new.loc, new.scale = self.logits, self.loc, self.scale
        super(NormalMixture, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        loc, scale = self.loc.double(), self.scale.double()
        precision = scale.pow(-2)  # (..., K, D)
        z = value.double().unsqueeze(-2)  # (..., 1, D): one row against the K components
        square = (z.pow(2) @ precision.mT - 2 * z @ (loc * precision).mT).squeeze(-2)
        square = square + (loc.pow(2) * precision).sum(-1)
        log_normals = -0.5 * square - scale.log().sum(-1) - 0.5 * self.event_shape[0] * math.log(2 * math.pi)
        log_p = torch.logsumexp(log_normals + torch.log_softmax(self.logits.double(), -1), -1).to(value.dtype)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def as_mixture_same_family(self) -> dist.MixtureSameFamily:
        """The same mixture as ``MixtureSameFamily``, which draws samples (and scores by broadcasting)."""
        components = dist.Normal(self.loc, self.scale).to_event(1)
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)
        return mixture.expand(self.batch_shape)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.as_mixture_same_family().sample(sample_shape)

    @property
    def mean(self) -> torch.Tensor:
        weights = torch.softmax(self.logits, -1).unsqueeze(-1)
        return (weights * self.loc).sum(-2).expand(self.batch_shape + self.event_shape)
