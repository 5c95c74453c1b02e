"""The ELBO per example, split into reconstruction and KL, read off Pyro traces.

Computed from the traces of any model/guide pair, not a formula for one
model: the observed sites give the reconstruction term log p(x | z), the
latent sites give KL(q || p), analytically where torch knows the pair and
as log q(z) - log p(z) at the sampled z otherwise. Site scales (beta) are
ignored, so this is always the true ELBO.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence


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

    N is the size of the ``"data"`` plate. One z is drawn per example.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    sites = [
        (name, site)
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]
    n = next(f.size for _, site in sites for f in site["cond_indep_stack"] if f.name == "data")
    device = sites[0][1]["value"].device  # where the values live, even for a program without latent sites
    reconstruction = torch.zeros(n, device=device)
    kl = torch.zeros(n, device=device)
    for name, site in sites:
        if site["is_observed"]:
            reconstruction = reconstruction + _per_example(site["fn"].log_prob(site["value"]), n)
            continue
        q = guide_trace.nodes[name]["fn"]
        term = _analytic_kl(q, site["fn"]) if analytic_kl else None
        if term is None:
            z = site["value"]
            term = q.log_prob(z) - site["fn"].log_prob(z)
        kl = kl + _per_example(term, n)
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
