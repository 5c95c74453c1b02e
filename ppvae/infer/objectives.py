"""The training objectives by name: Pyro's ELBOs, and the importance-weighted bound (IWAE).

``"iwae"`` is the bound of Burda et al. (2016), per example:
E[log (1/K) sum_k p(x, z_k) / q(z_k | x)] with K = ``num_particles``. Pyro's
``RenyiELBO(alpha=0)`` is documented as this bound; the tests check that, for
programs whose sites all live in the ``"data"`` plate, its loss and gradients
equal `IWAE`'s on the same draws. `IWAE` is kept because the
training loop needs a ``differentiable_loss``, which ``RenyiELBO`` lacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pyro.infer import ELBO, TraceEnum_ELBO

from ppvae.infer.evidence import log_importance_weights
from ppvae.infer.sync_free import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO

OBJECTIVES = ("trace", "meanfield", "iwae")


class IWAE:
    """The importance-weighted bound, summed over the batch; its negative is the loss.

    The gradient is the bound's own (reparameterised z, weights normalised per example).
    Site scales are ignored, so beta has no effect here.
    """

    def __init__(self, num_particles: int = 5):
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.num_particles = num_particles

    def bound(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """Per-example bound, shape (N,)."""
        log_weights = log_importance_weights(model, guide, *args, num_samples=self.num_particles, **kwargs)
        return torch.logsumexp(log_weights, 0) - math.log(self.num_particles)

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        return -self.bound(model, guide, *args, **kwargs).sum()

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        return self.differentiable_loss(model, guide, *args, **kwargs).item()


def make_elbo(
    name: str = "trace", num_particles: int = 1, max_plate_nesting: int = 1, enumerate: bool = False
) -> ELBO | IWAE:
    """``"trace"``: Trace_ELBO (Monte-Carlo KL); ``"meanfield"``: TraceMeanField_ELBO (analytic KL
    where one exists); ``"iwae"``: the importance-weighted bound with K = ``num_particles``. The first two
    are Pyro's estimators without their host reads (`ppvae.infer.sync_free`): the same loss and gradients.

    With ``enumerate`` (programs with a discrete latent site, as M2's label), ``"trace"`` is
    TraceEnum_ELBO: the sites the guide marks ``infer={"enumerate": "parallel"}`` are summed over exactly,
    any other discrete site gets the score-function gradient. The other two have no such sum and are
    refused. With ``num_particles > 1`` the particles are vectorised, not looped.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    if enumerate and name != "trace":
        raise ValueError(
            f"elbo={name!r} has no sum over a discrete latent site (the label): use elbo='trace', which "
            "enumerates it (TraceEnum_ELBO)"
        )
    if name == "iwae":
        return IWAE(num_particles)
    kwargs = dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    if name == "trace" and enumerate:
        return TraceEnum_ELBO(strict_enumeration_warning=False, **kwargs)
    if name == "trace":
        return SyncFreeTrace_ELBO(**kwargs)
    if name == "meanfield":
        return SyncFreeTraceMeanField_ELBO(**kwargs)
    raise ValueError(f"unknown elbo {name!r}; choose one of {', '.join(OBJECTIVES)}")


@dataclass
class KLWeight:
    """The programs' ``kl_weight`` at each training step: ``beta``, raised linearly over ``warmup_steps``.

    Step s (from 1) gets beta * min(1, s / warmup_steps): just above 0 at the start (Pyro
    cannot scale a site by 0), beta from the end of the warm-up on. The loop calls it for
    the per-step arguments, as Pyro's ``examples/dmm.py`` hands its annealing factor to the
    programs; nothing on the model changes. ``arguments`` (M2's classifier weight) go with it unchanged.
    """

    beta: float = 1.0
    warmup_steps: int = 0
    arguments: dict = field(default_factory=dict)  # the model's other training arguments, the same every step

    def weight(self, step: int) -> float:
        return self.beta * (min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0)

    def annealed(self, step: int) -> bool:
        """True while the weight at ``step`` is below beta."""
        return self.warmup_steps > 0 and step < self.warmup_steps

    def __call__(self, step: int) -> dict[str, float]:
        return {"kl_weight": self.weight(step), **self.arguments}
