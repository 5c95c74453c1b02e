"""Importance-sampled log p(x) per example, from Pyro traces of any model/guide pair.

    log p(x_i) ~= logsumexp_k [log p(x_i, z_k) - log q(z_k | x_i)] - log K,   z_k ~ q(z | x_i)

Pyro's ``vectorized_importance_weights`` sums the log weights over the whole
batch; here they stay per example (one value per element of the ``"data"``
plate), so every image gets its own estimate. The K samples are drawn in a
vectorised particle plate, in chunks so that memory stays bounded, and the
log-sum-exp is accumulated in float64 across chunks.

With ``proposal="prior"`` z is drawn from the model's own prior and the
weight is log p(x | z): the naive estimator p(x) = E_p(z)[p(x | z)], kept to
show why the guide is the better proposal. ``proposal="defensive"`` draws from
the mixture (1 - a) q(z | x) + a p(z) (Hesterberg, 1995): the prior's share keeps
every weight below p(x, z) / (a p(z)) = p(x | z) / a, so a mode that q misses
cannot blow the variance up, at the price of a few wasted samples. Site scales (beta) are ignored:
the estimate is always of the model's true evidence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro.poutine as poutine
import torch
from pyro.ops.stats import fit_generalized_pareto

from ppvae.infer.batches import slices
from ppvae.infer.random import fork_rng
from ppvae.infer.traces import LatentSpace, in_points, sample_sites, traced_pair

PROPOSALS = ("guide", "prior", "defensive")
DEFENSIVE_SHARE = 0.2  # the prior's share of the defensive mixture
PARTICLE_PLATE = "importance_particles"


def _site_log_prob(site: dict, shape: torch.Size) -> torch.Tensor:
    """The site's unscaled log-prob, broadcast to (K, N); an error if it has other batch dims."""
    log_prob = site["fn"].log_prob(site["value"])
    try:
        return log_prob.expand(shape)
    except RuntimeError:
        raise ValueError(
            f"site {site['name']!r} has log-prob shape {tuple(log_prob.shape)}; per-example evidence needs "
            f"one value per particle and example, {tuple(shape)}: put every sample site inside the 'data' plate"
        ) from None


def in_particles(fn: Callable, num_samples: int) -> Callable:
    """``fn`` run inside a plate of ``num_samples`` particles at dim -2: K draws per example at once."""
    return in_points(fn, num_samples, PARTICLE_PLATE)


def log_importance_weights(model: Callable, guide: Callable | None, *args, num_samples: int, **kwargs) -> torch.Tensor:
    """Log importance weights, shape (num_samples, N), for the batch in ``args``: every latent site of the model
    drawn from the guide (or, with ``guide=None``, ancestrally from the model's prior, weighed by the observed
    sites alone). Both programs must put their sites in a plate named ``"data"`` at dim -1.
    """
    if guide is None:
        guide_trace, model_trace = None, poutine.trace(in_particles(model, num_samples)).get_trace(*args, **kwargs)
    else:
        guide_trace, model_trace = traced_pair(
            in_particles(model, num_samples), in_particles(guide, num_samples), *args, **kwargs
        )
    sites = sample_sites(model_trace)
    outside = [s["name"] for s in sites if not any(f.name == "data" for f in s["cond_indep_stack"])]
    if outside or not sites:
        raise ValueError(
            f"per-example evidence needs every sample site inside the 'data' plate; {outside or 'no site'} "
            "is not (a global latent variable is shared by all examples, so it has no per-example weight)"
        )
    n = next(f.size for f in sites[0]["cond_indep_stack"] if f.name == "data")
    shape = torch.Size((num_samples, n))
    log_weights = torch.zeros(shape, device=sites[0]["value"].device)
    for site in sites:
        if site["is_observed"]:
            log_weights = log_weights + _site_log_prob(site, shape)
        elif guide_trace is not None:
            q_site = guide_trace.nodes[site["name"]]
            log_weights = log_weights + _site_log_prob(site, shape) - _site_log_prob(q_site, shape)
    return log_weights


def defensive_log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    c: torch.Tensor | None,
    num_samples: int,
    prior_share: float = DEFENSIVE_SHARE,
) -> torch.Tensor:
    """Log importance weights (num_samples, N) under the proposal (1 - a) q(z | x) + a p(z), a = ``prior_share``.

    z is every latent site at once: drawn whole from the guide or (with probability a) ancestrally from the
    prior, then weighed by p(x, z) / [(1 - a) q(z | x) + a p(z)], the guide scored at z wherever it came
    from (so the guide must score any point).
    """
    with fork_rng(x.device):  # reading the sites draws nothing from the estimate's random stream
        space = LatentSpace(model, guide, x, c).require("the defensive proposal")
    z_q, _ = space.sample("guide", num_samples)
    z_p, _ = space.sample("prior", num_samples)
    from_prior = torch.rand(z_q.shape[:2], device=z_q.device) < prior_share
    z = torch.where(from_prior[..., None], z_p, z_q)
    log_prior, log_likelihood = space.log_joint(z)
    log_q = space.log_guide(z)
    log_proposal = torch.logaddexp(math.log1p(-prior_share) + log_q, math.log(prior_share) + log_prior)
    return log_prior + log_likelihood - log_proposal


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Kish's ESS per example, (sum w)^2 / sum w^2, from log weights (K, N)."""
    log_weights = log_weights.double()
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))


def pareto_k(log_weights: torch.Tensor) -> torch.Tensor:
    """PSIS k-hat per example from log weights (K, N), as Pyro's ``psis_diagnostic`` computes it for one.

    The largest min(0.2 K, 3 sqrt K) weights are fitted with Pyro's generalised Pareto
    estimator. k < 0.5: the guide is a good proposal; 0.5-0.7: usable; > 0.7: unreliable.
    NaN where the tail has fewer than 10 distinct samples.
    """
    num_samples = log_weights.shape[0]
    tail = int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))
    k_hat = torch.full((log_weights.shape[1],), float("nan"), dtype=torch.float64)
    if tail < 10:
        return k_hat
    sorted_weights = torch.sort(log_weights.double() - log_weights.double().max(0).values, dim=0).values.cpu()
    for i in range(sorted_weights.shape[1]):
        column = sorted_weights[:, i]
        cutoff = max(math.log(1e-15), column[-tail - 1].item())
        exceedances = column[column > cutoff].exp() - math.exp(cutoff)
        if exceedances.numel() >= 10 and bool((exceedances > 0).any()):
            k_hat[i] = fit_generalized_pareto(exceedances)[0]
    return k_hat


@dataclass
class EvidenceEstimate:
    """Per-example results of `estimate_log_evidence`, all float64 on the CPU, shape (N,)."""

    log_evidence: torch.Tensor
    num_samples: int
    proposal: str
    effective_sample_size: torch.Tensor
    pareto_k: torch.Tensor | None = None
    seconds: float = 0.0


def rows_per_pass(memory_mb: float, x_dim: int, width: int = 0) -> int:
    """How many (particle, example) rows fit in ``memory_mb``: a rough 4 floats per pixel per row."""
    bytes_per_row = 4 * (4 * x_dim + 2 * width + 64)
    return max(1, int(memory_mb * 2**20 // bytes_per_row))


@torch.no_grad()
def estimate_log_evidence(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    chunk_size: int = 1000,
    diagnostics: bool = False,
    progress: Callable | None = None,
    proposal: str | None = None,
) -> EvidenceEstimate:
    """log p(x_i) and the effective sample size for each row of ``x`` (and condition ``c``); k-hat with ``diagnostics``.

    ``batch_size`` examples and ``chunk_size`` particles go through the programs at once.
    The ESS comes from running sums, so it costs nothing; the PSIS k-hat needs every weight
    and a fit per example, so it is computed only on request. ``proposal``: "guide" (default with a
    guide), "prior" (default without one) or "defensive" (see the module docstring).
    ``progress``, if given, is called with the number of examples finished after each batch.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    started = time.perf_counter()
    proposal = proposal or ("prior" if guide is None else "guide")
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    if proposal != "prior" and guide is None:
        raise ValueError(f"proposal={proposal!r} needs the guide")
    estimates, sizes, tails = [], [], []
    for xb, cb in slices(batch_size, x, c):
        chunks = []
        total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=xb.device)
        total_squares = total.clone()  # log sum of w^2, for the ESS
        for done in range(0, num_samples, chunk_size):
            k = min(chunk_size, num_samples - done)
            if proposal == "defensive":
                log_weights = defensive_log_weights(model, guide, xb, cb, num_samples=k).double()
            else:
                log_weights = log_importance_weights(
                    model, guide if proposal == "guide" else None, xb, cb, num_samples=k
                ).double()
            total = torch.logaddexp(total, torch.logsumexp(log_weights, 0))
            total_squares = torch.logaddexp(total_squares, torch.logsumexp(2 * log_weights, 0))
            if diagnostics:
                chunks.append(log_weights.cpu())
        estimates.append((total - math.log(num_samples)).cpu())
        sizes.append(torch.exp(2 * total - total_squares).cpu())  # (sum w)^2 / sum w^2
        if diagnostics:
            tails.append(pareto_k(torch.cat(chunks)))
        if progress is not None:
            progress(xb.shape[0])
    return EvidenceEstimate(
        log_evidence=torch.cat(estimates),
        num_samples=num_samples,
        proposal=proposal,
        effective_sample_size=torch.cat(sizes),
        pareto_k=torch.cat(tails) if diagnostics else None,
        seconds=time.perf_counter() - started,
    )
