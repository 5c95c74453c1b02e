"""Reading a model/guide pair through Pyro traces: its latent sites as one vector per example.

Every estimator here reads the programs the same way: trace the guide, replay the model on
the guide's values (`traced_pair`), and keep the sample sites. A model may have any
number of latent sites (a hierarchy z2 -> z1 -> x, a label beside z); `LatentSpace`
lays them end to end as one flat vector per example, of total dimension D, so that
quadrature, annealed importance sampling and the defensive proposal work on z in R^D:

    z = [vec(z_1), vec(z_2), ...]        (P, N, D): P points (chains, particles) per example

and evaluates, at any such z, log p(z) and log p(x | z) (the model with every latent site
conditioned on its slice) or log q(z | x) (the guide conditioned the same way: a guide
whose sites depend on each other, q(z2 | z1, x), is scored site by site). Site scales
(beta) are ignored: these are the model's true densities. Both programs must put their
sites in a plate named ``"data"`` at dim -1; the P points ride in an extra plate at dim -2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import TransformedDistribution

POINTS_PLATE = "latent_points"


def traced_pair(model: Callable, guide: Callable, *args, **kwargs) -> tuple[Trace, Trace]:
    """The guide's trace and the model's trace replayed on the guide's values, for the batch in ``args``."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return guide_trace, model_trace


def sample_sites(trace: Trace) -> list[dict]:
    """The trace's sample sites in program order, without the plates' subsample sites."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def in_points(fn: Callable, num_points: int, name: str = POINTS_PLATE) -> Callable:
    """``fn`` run inside a plate of ``num_points`` at dim -2: that many values of every site per example."""

    def vectorised(*args, **kwargs):
        with pyro.plate(name, num_points, dim=-2):
            return fn(*args, **kwargs)

    return vectorised


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


def _base(fn):
    """The distribution under ``Independent`` and ``expand`` wrappers (a flow stays whole)."""
    while hasattr(fn, "base_dist") and not isinstance(fn, TransformedDistribution):
        fn = fn.base_dist
    return fn


def location_scale(fn) -> tuple[torch.Tensor, torch.Tensor]:
    """A distribution's location and scale, batch and event shape: its ``loc`` and ``scale`` parameters where it
    is a location-scale family (normal, Laplace, Student-t, logistic); for a flow, its base's location carried
    through the transforms and the standard deviation of 256 draws; else its mean and standard deviation
    (a multivariate normal; a point mass, whose spread is 0)."""
    base = _base(fn)
    shape = fn.batch_shape + fn.event_shape
    if isinstance(base, TransformedDistribution):
        loc = location_scale(base.base_dist)[0]
        for transform in base.transforms:
            loc = transform(loc)
        return loc.expand(shape), fn.sample((256,)).std(0).expand(shape)
    loc = base.loc if hasattr(base, "loc") and not hasattr(base, "scale_tril") else fn.mean
    scale = base.scale if hasattr(base, "scale") else fn.stddev
    return loc.expand(shape), torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).expand(shape)


class _AtLocations(Messenger):
    """Sets every latent site to its distribution's location instead of a draw, so that a guide's later sites
    see their parents' locations: the deterministic path through q(z | x) that ``encode`` reports. A discrete
    site (M2's label) takes its most probable value, with a scale of 0."""

    def __init__(self):
        super().__init__()
        self.summary: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or site_is_subsample(msg) or msg["done"]:
            return
        if msg["fn"].support.is_discrete:
            loc = msg["fn"].mode
            scale = torch.zeros(loc.shape)
        else:
            loc, scale = location_scale(msg["fn"])
        self.summary[msg["name"]] = (loc, scale)
        msg["value"] = loc
        msg["done"] = True


def posterior_summary(guide: Callable, *args, **kwargs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Location and scale of q for every latent site of ``guide``, in its order, each site's parents held at
    their locations (for one site: the encoder's location and scale)."""
    at_locations = _AtLocations()
    with at_locations:
        guide(*args, **kwargs)
    return at_locations.summary


class LatentSpace:
    """The latent sites of a model/guide pair for one batch ``x`` (condition ``c``), as one flat vector.

    ``names`` in the model's order, ``event_shapes`` and ``sizes`` per site, total ``dim``; ``prior_sites``
    and ``guide_sites`` the sites of one replayed trace on the batch (their distributions on the batch).
    """

    def __init__(self, model: Callable, guide: Callable, x: torch.Tensor, c: torch.Tensor | None):
        guide_trace, model_trace = traced_pair(model, guide, x, c)
        latent = [s for s in sample_sites(model_trace) if not s["is_observed"]]
        self.model, self.guide, self.x, self.c = model, guide, x, c
        self.names = [s["name"] for s in latent]
        self.event_shapes = [s["fn"].event_shape for s in latent]
        self.sizes = [math.prod(shape) for shape in self.event_shapes]
        self.dim = sum(self.sizes)
        self.prior_sites = {s["name"]: s for s in latent}
        self.guide_sites = {name: guide_trace.nodes[name] for name in self.names if name in guide_trace.nodes}
        self.observed = [s["name"] for s in sample_sites(model_trace) if s["is_observed"]]

    def require(self, purpose: str, max_dim: int | None = None) -> LatentSpace:
        """This space, or an error naming ``purpose`` if it has no latent site or (``max_dim``) too many dimensions."""
        if not self.names:
            raise ValueError(f"{purpose} needs a latent site; the model has none")
        if max_dim is not None and self.dim > max_dim:
            raise ValueError(
                f"{purpose} integrates over at most {max_dim} latent dimensions in all; the latent sites "
                f"{', '.join(self.names)} have {self.dim}: use importance sampling or AIS"
            )
        missing = [name for name in self.names if name not in self.guide_sites]
        if missing:
            raise ValueError(f"the guide has no site for the latent site(s) {missing}")
        return self

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat z (..., D) as each site's value (..., *event_shape)."""
        values, start = {}, 0
        for name, shape, size in zip(self.names, self.event_shapes, self.sizes):
            values[name] = z[..., start : start + size].reshape(*z.shape[:-1], *shape)
            start += size
        return values

    def join(self, values: dict[str, torch.Tensor], batch_dims: int = 2) -> torch.Tensor:
        """Each site's value (*batch, *event_shape) laid end to end as one flat z (*batch, D)."""
        parts = [values[name].reshape(*values[name].shape[:batch_dims], -1) for name in self.names]
        return torch.cat(parts, -1)

    def _log_probs(self, trace: Trace, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the latent sites' log-probs, sum of the other sites'), each broadcast to ``shape``."""
        latent = torch.zeros(shape, device=self.x.device)
        other = torch.zeros(shape, device=self.x.device)
        for site in sample_sites(trace):
            term = site["fn"].log_prob(site["value"]).expand(shape)
            if site["name"] in self.prior_sites:
                latent = latent + term
            else:
                other = other + term
        return latent, other

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(z) and log p(x | z) at values ``z`` (P, N, D), or (P, 1, D) shared by the images, each (P, N).

        Differentiable in ``z``; float32 like the model."""
        conditioned = poutine.condition(in_points(self.model, z.shape[0]), data=self.split(z))
        trace = poutine.trace(conditioned).get_trace(self.x, self.c)
        return self._log_probs(trace, torch.Size((z.shape[0], self.x.shape[0])))

    def log_guide(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z | x) at values ``z`` (P, N, D), (P, N): every guide site scored at its slice.

        A guide of one site is scored by the distribution of the trace already taken (nothing in it depends
        on z), which spares a pass through the encoder at every step of a chain; a guide of several is
        traced again, conditioned on ``z``, since a later site's distribution depends on an earlier draw."""
        if len(self.names) == 1:
            name = self.names[0]
            value = self.split(z)[name]
            return self.guide_sites[name]["fn"].log_prob(value).expand(z.shape[0], self.x.shape[0])
        conditioned = poutine.condition(in_points(self.guide, z.shape[0]), data=self.split(z))
        trace = poutine.trace(conditioned).get_trace(self.x, self.c)
        return self._log_probs(trace, torch.Size((z.shape[0], self.x.shape[0])))[0]

    def sample(self, source: str, num_points: int) -> tuple[torch.Tensor, dict[str, object]]:
        """``num_points`` draws of z per example (P, N, D) from the ``"prior"`` (ancestrally, through the model)
        or the ``"guide"``, and the distribution of each site in that draw (for step sizes and moments)."""
        program = self.model if source == "prior" else self.guide
        trace = poutine.trace(in_points(program, num_points)).get_trace(self.x, self.c)
        values = {name: trace.nodes[name]["value"] for name in self.names}
        shape = (num_points, self.x.shape[0])
        z = self.join({name: value.expand(*shape, *value.shape[2:]) for name, value in values.items()})
        return z, {name: trace.nodes[name]["fn"] for name in self.names}

    def flat_spread(self, fns: dict[str, object], non_finite: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation per flat dimension from each site's distribution, each (..., N, D)."""
        means, stds = [], []
        for name, shape in zip(self.names, self.event_shapes):
            fn = fns[name]
            mean, std = spread(fn, non_finite)
            batch = fn.batch_shape
            means.append(mean.expand(*batch, *shape).reshape(*batch, -1))
            stds.append(std.expand(*batch, *shape).reshape(*batch, -1))
        return torch.cat(means, -1), torch.cat(stds, -1)
