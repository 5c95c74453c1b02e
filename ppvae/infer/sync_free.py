"""Pyro's Trace and MeanField ELBOs with no host synchronisation in the step.

Pyro's ``Trace_ELBO.differentiable_loss`` reads every site's log-prob back to
the host (``torch_item``, to report the ELBO as a float) and checks the loss for
NaN in an ``if`` (``warn_if_nan``, once forward and once from a backward hook).
On a GPU each read waits for the device to finish the queue, so the device idles
while the host traces the next step. These classes compute the same surrogate
from the same traces (Pyro's ``_get_traces``), with every sum kept on the device:

    loss = -ELBO + (surrogate - surrogate.detach())

which has the ELBO's value and the surrogate's gradient, as Pyro's has. Per
particle, with ``r = log p(x, z) - log q(z | x)`` summed to each site's plates:

    ELBO      = sum_model log p  -  sum_guide log q
    surrogate = sum_model log p  -  sum_guide entropy_term  +  sum_guide r.detach() * score_function_term

(the score-function term only for sites that cannot be reparameterised; Pyro's
partial Rao-Blackwellisation by plates). The mean-field version takes the
analytic KL(q || p) where torch has one, as ``TraceMeanField_ELBO``.

Nothing checks for NaN here: the training loop's periodic finite check stops a
diverged run (one sync every ``CHECK_EVERY`` steps). ``loss`` (a float, for
reports) stays Pyro's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import MultiFrameTensor, get_plate_stacks
from pyro.poutine import Trace
from torch.distributions import kl_divergence


def _sample_sites(trace: Trace):
    return ((name, site) for name, site in trace.nodes.items() if site["type"] == "sample")


def _log_ratio(model_trace: Trace, guide_trace: Trace) -> MultiFrameTensor:
    """log p - log q per site, detached, kept by plates for Rao-Blackwellised score-function terms."""
    log_r = MultiFrameTensor()
    stacks = get_plate_stacks(model_trace)
    for name, site in _sample_sites(model_trace):
        term = site["log_prob"]
        if not site["is_observed"]:
            term = term - guide_trace.nodes[name]["log_prob"]
        log_r.add((stacks[name], term.detach()))
    return log_r


class _SyncFree:
    """``differentiable_loss`` averaged over particles from per-particle (elbo, surrogate) tensors."""

    num_particles: int
    _get_traces: Callable

    def _elbo_and_surrogate(self, model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate = 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle, surrogate_particle = self._elbo_and_surrogate(model_trace, guide_trace)
            elbo = elbo + elbo_particle / self.num_particles
            surrogate = surrogate + surrogate_particle / self.num_particles
        return -elbo.detach() - (surrogate - surrogate.detach())


class SyncFreeTrace_ELBO(_SyncFree, Trace_ELBO):
    """``Trace_ELBO`` (Monte-Carlo KL, score-function terms for non-reparameterised sites), sync-free."""

    def _elbo_and_surrogate(self, model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
        elbo = surrogate = 0.0
        log_r = None
        for _, site in _sample_sites(model_trace):
            elbo = elbo + site["log_prob_sum"]
            surrogate = surrogate + site["log_prob_sum"]
        for _, site in _sample_sites(guide_trace):
            _, score_function_term, entropy_term = site["score_parts"]
            elbo = elbo - site["log_prob_sum"]
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _log_ratio(model_trace, guide_trace)
                surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
        return torch.as_tensor(elbo), torch.as_tensor(surrogate)


class SyncFreeTraceMeanField_ELBO(_SyncFree, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (analytic KL(q || p) where torch has one, else Monte Carlo), sync-free.

    Like Pyro's, it assumes a mean-field guide whose latent sites are all reparameterised.
    """

    def _elbo_and_surrogate(self, model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
        elbo = 0.0
        for name, model_site in _sample_sites(model_trace):
            if model_site["is_observed"]:
                elbo = elbo + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                elbo = elbo + model_site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
                continue
            kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl):
                elbo = elbo - kl.sum()
            else:
                elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
        for name, guide_site in _sample_sites(guide_trace):
            if name not in model_trace.nodes:  # an auxiliary guide site
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        elbo = torch.as_tensor(elbo)
        return elbo, elbo
