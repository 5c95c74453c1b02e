"""The ELBO per example, split into reconstruction and KL, read off Pyro traces.

Computed from the traces of any model/guide pair, not a formula for one
model: the observed sites give the reconstruction term log p(x | z), the
latent sites give KL(q || p), analytically where torch knows the pair and
as log q(z) - log p(z) at the sampled z otherwise. Site scales (beta) are
ignored, so this is always the true ELBO.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import kl_divergence

from ppvae.infer.traces import sample_sites, traced_pair


def _per_example(value: torch.Tensor, batch_size: int) -> torch.Tensor:
    if value.shape != (batch_size,):
        raise ValueError(
            f"a site's log-prob has shape {tuple(value.shape)}; per-example ELBO terms need one value per "
            f"example, shape ({batch_size},): put every sample site inside the 'data' plate"
        )
    return value


def _analytic_kl(q, p) -> torch.Tensor | None:
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def elbo_terms(model: Callable, guide: Callable, *args, analytic_kl: bool = True, **kwargs) -> dict[str, torch.Tensor]:
    """Per-example ``elbo``, ``reconstruction`` (log p(x|z)) and ``kl`` for the batch in ``args``, each (N,).

    N is the size of the ``"data"`` plate. One z is drawn per example. The KL is analytic only for a
    model with one latent site: with several, a site's prior or guide may depend on another site's draw
    (p(z1 | z2), q(z2 | z1, x)), and the closed form at that draw would be biased; there it is
    log q(z) - log p(z) at the draw, summed over the sites, as Pyro's ``Trace_ELBO`` computes it.
    """
    guide_trace, model_trace = traced_pair(model, guide, *args, **kwargs)
    sites = sample_sites(model_trace)
    n = next(f.size for site in sites for f in site["cond_indep_stack"] if f.name == "data")
    device = sites[0]["value"].device  # where the values live, even for a program without latent sites
    analytic_kl = analytic_kl and sum(not site["is_observed"] for site in sites) == 1
    reconstruction = torch.zeros(n, device=device)
    kl = torch.zeros(n, device=device)
    for site in sites:
        if site["is_observed"]:
            reconstruction = reconstruction + _per_example(site["fn"].log_prob(site["value"]), n)
            continue
        q = guide_trace.nodes[site["name"]]["fn"]
        term = _analytic_kl(q, site["fn"]) if analytic_kl else None
        if term is None:
            z = site["value"]
            term = q.log_prob(z) - site["fn"].log_prob(z)
        kl = kl + _per_example(term, n)
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
