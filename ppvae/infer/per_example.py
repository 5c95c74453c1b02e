"""The ELBO per example, split into reconstruction and KL, read off Pyro traces.

Computed from the traces of any model/guide pair, not a formula for one
model: the observed sites give the reconstruction term log p(x | z), the
latent sites give KL(q || p), analytically where torch knows the pair and
as log q(z) - log p(z) at the sampled z otherwise. Site scales (beta) are
ignored, so this is always the true ELBO.

A discrete site the guide marks ``infer={"enumerate": "parallel"}`` (M2's label y) is summed
over exactly rather than drawn, as ``TraceEnum_ELBO`` does in training: with q(y | x) the
guide's probabilities and one draw of the other sites per value of y,

    ELBO(x) = sum_y q(y | x) [log p(x | z_y, y) - KL(q(z | x, y) || p(z))] - KL(q(y | x) || p(y)).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch
from torch.distributions import kl_divergence

from ppvae.infer.traces import sample_sites, traced_pair

ENUM_DIM = -2  # the dim an enumerated site's values take, left of the "data" plate


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


def _enumerated(guide_trace) -> dict | None:
    """The guide's enumerated site, or None; more than one is refused (their sum would need their joint)."""
    sites = [s for s in sample_sites(guide_trace) if s["infer"].get("_enumerate_dim") is not None]
    if len(sites) > 1:
        names = ", ".join(s["name"] for s in sites)
        raise ValueError(f"per-example ELBO terms sum over one enumerated site; the guide enumerates {names}")
    return sites[0] if sites else None


def elbo_terms(model: Callable, guide: Callable, *args, analytic_kl: bool = True, **kwargs) -> dict[str, torch.Tensor]:
    """Per-example ``elbo``, ``reconstruction`` (log p(x|z)) and ``kl`` for the batch in ``args``, each (N,).

    N is the size of the ``"data"`` plate. One z is drawn per example (per value of an enumerated site).
    The KL is analytic only where one latent site is drawn: with several, a site's prior or guide may depend
    on another site's draw (p(z1 | z2), q(z2 | z1, x)), and the closed form at that draw would be biased;
    there it is log q(z) - log p(z) at the draw, summed over the sites, as Pyro's ``Trace_ELBO`` computes
    it. An enumerated value is no draw: the KL of q(z | x, y) at each y stays exact.
    """
    guide_trace, model_trace = traced_pair(model, poutine.enum(guide, first_available_dim=ENUM_DIM), *args, **kwargs)
    sites = sample_sites(model_trace)
    n = next(f.size for site in sites for f in site["cond_indep_stack"] if f.name == "data")
    device = sites[0]["value"].device  # where the values live, even for a program without latent sites
    summed = _enumerated(guide_trace)
    weights = None
    if summed is not None:  # q(y | x) at each enumerated value, (values, N)
        weights = summed["fn"].log_prob(summed["value"]).exp().expand(-1, n)

    def expected(term: torch.Tensor) -> torch.Tensor:
        """A term (N,), or (values, N) where it depends on the enumerated site, as its expectation under q."""
        if weights is not None and term.dim() == 2:
            term = (weights * term.expand(weights.shape)).sum(0)
        return _per_example(term, n)

    drawn = {s["name"] for s in sites if not s["is_observed"] and (summed is None or s["name"] != summed["name"])}
    analytic_kl = analytic_kl and len(drawn) == 1
    reconstruction = torch.zeros(n, device=device)
    kl = torch.zeros(n, device=device)
    for site in sites:
        if site["is_observed"]:
            reconstruction = reconstruction + expected(site["fn"].log_prob(site["value"]))
            continue
        q = guide_trace.nodes[site["name"]]["fn"]
        term = _analytic_kl(q, site["fn"]) if analytic_kl and site["name"] in drawn else None
        if term is None:
            z = site["value"]
            term = q.log_prob(z) - site["fn"].log_prob(z)
        kl = kl + expected(term)
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
