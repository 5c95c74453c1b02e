"""The latent site of a one-latent model, and log p(x, z) at chosen values of z, read from Pyro traces.

Quadrature evaluates the joint density on a grid of z and annealed importance sampling
along Markov chains; both need the same two things from a model/guide pair whose sites
sit in a ``"data"`` plate: which site is the latent one (with its prior and guide
distributions on the batch), and the model's log-density with that site conditioned on
a tensor of values, (points, N, d), inside an extra plate at dim -2.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

POINTS_PLATE = "latent_points"


def latent_site(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    c: torch.Tensor | None,
    max_dim: int | None = None,
    purpose: str = "this estimator",
) -> tuple[str, dict, dict]:
    """The one latent site's name and its model and guide sites (one trace each, on the batch).

    An error naming ``purpose`` if the model has more than one latent site, or (with ``max_dim``)
    a latent site of more dimensions than that.
    """
    guide_trace = poutine.trace(guide).get_trace(x, c)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, c)
    latent = [
        s
        for s in model_trace.nodes.values()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]
    if len(latent) != 1:
        raise ValueError(f"{purpose} needs exactly one latent site, the model has {[s['name'] for s in latent]}")
    site = latent[0]
    dim = site["fn"].event_shape.numel() if site["fn"].event_shape else 1
    if max_dim is not None and (len(site["fn"].event_shape) > 1 or dim > max_dim):
        raise ValueError(
            f"{purpose} integrates over at most {max_dim} latent dimensions; site {site['name']!r} has "
            f"{dim}: use importance sampling or AIS"
        )
    return site["name"], site, guide_trace.nodes[site["name"]]


def spread(fn, non_finite: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of a distribution (its batch and event shape), estimated from draws where
    torch has no formula; ``non_finite`` stands in for a standard deviation that is infinite or undefined
    (a Student-t with df <= 2)."""
    try:
        mean, std = fn.mean, fn.stddev
    except NotImplementedError:
        draws = fn.sample((2000,))
        mean, std = draws.mean(0), draws.std(0)
    return mean, torch.where(torch.isfinite(std), std, torch.full_like(std, non_finite))


def log_joint_parts(
    model: Callable, site_name: str, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(z) and log p(x | z) at values ``z`` (P, N, d), or (P, 1, d) shared by the images, each (P, N).

    Differentiable in ``z``; float32 like the model. Site scales (beta) are ignored: these are the
    model's true densities.
    """

    def at_points(*args):
        with pyro.plate(POINTS_PLATE, z.shape[0], dim=-2):
            return model(*args)

    trace = poutine.trace(poutine.condition(at_points, data={site_name: z})).get_trace(x, c)
    shape = (z.shape[0], x.shape[0])
    log_prior = torch.zeros(shape, device=x.device)
    log_likelihood = torch.zeros(shape, device=x.device)
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            term = site["fn"].log_prob(site["value"]).expand(shape)
            if name == site_name:
                log_prior = log_prior + term
            else:
                log_likelihood = log_likelihood + term
    return log_prior, log_likelihood
