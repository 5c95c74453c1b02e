"""A model's ELBO in plain torch: the training step without Pyro's tracing, checked against the programs.

Pyro runs every step through its messengers: a trace of the guide, a replayed
trace of the model, a dict per site, log-probs gathered from the traces. A model
built from registered parts can give the same ELBO as one torch function of the
batch, ``model.lowered_elbo(x, c, kl_weight=..., analytic_kl=...)``, drawing its
noise in the order the guide draws it (where the parts give their densities as
tensor formulas, as the default VAE's do, without building a distribution).
`LoweredELBO` makes that function an objective the training loop takes unchanged
(DDP, precision and clipping included), and `check_lowered` holds it to the Pyro
objective on the first batch:

    same noise (the random state restored between the two), the loss and every
    gradient equal to 1e-5 of their size

so a lowered step is the programs' step, faster. The Pyro programs stay the
definition: evidence, `Predictive` and poutines use them, and a model whose
programs were replaced (a subclass's own ``model`` or ``guide``) is not lowered.
With ``compiled=True`` the function goes through ``torch.compile``, with
inductor's random ops falling back to torch's so that the noise stays the same,
as one graph with no breaks: it first runs once eagerly (no gradients, the random
state put back), so that lookups a trace cannot follow (torch's KL registry) are
resolved and the trace reads their answers; a batch of another size than the
first (the last, partial one) runs eagerly rather than compiling a second graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch.distributions import Distribution, kl_divergence

from ppvae.infer.random import fork_rng
from ppvae.infer.threads import serialised

TOLERANCE = 1e-5


def latent_terms(
    posteriors: list[Distribution], priors: list[Distribution], codes: list[torch.Tensor], analytic_kl: bool
) -> torch.Tensor:
    """KL(q || p) summed over the batch and the latent sites: in closed form where torch has one and
    ``analytic_kl`` (as ``TraceMeanField_ELBO``), else log q(z) - log p(z) at the draw z (as ``Trace_ELBO``)."""
    terms = []
    for q, p, z in zip(posteriors, priors, codes):
        if analytic_kl:
            try:
                terms.append(kl_divergence(q, p).sum())
                continue
            except NotImplementedError:
                pass
        terms.append((q.log_prob(z) - p.log_prob(z)).sum())
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def weighted(term: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """``weight * term``, with no operation for the number 1 (the step's common case: no beta, no warm-up)."""
    return term if isinstance(weight, (int, float)) and weight == 1 else weight * term


def total_log_prob(distribution: Distribution, value: torch.Tensor) -> torch.Tensor:
    """``distribution.log_prob(value)`` summed over the batch, by the distribution's own ``total_log_prob``
    where it has one (a single reduction that a step summing over the batch can take instead)."""
    total = getattr(distribution, "total_log_prob", None)
    return total(value) if total is not None else distribution.log_prob(value).sum()


class LoweredELBO:
    """An objective from ``elbo(*args, analytic_kl=..., **kwargs)``: the loss is minus its value.

    ``differentiable_loss(model, guide, *args, **kwargs)`` has the signature of Pyro's ELBOs and ignores
    the programs, so `ppvae.infer.ObjectiveModule` and the loop take it as they take those.
    """

    def __init__(self, elbo: Callable[..., torch.Tensor], analytic_kl: bool = False, compiled: bool = False):
        self.elbo = elbo
        self.analytic_kl = analytic_kl
        self.compiled = compiled
        self._function: Callable[..., torch.Tensor] | None = None  # compiled on first use, in the process that trains
        self._batch_size: int | None = None  # the batch size the compiled graph takes

    def __getstate__(self) -> dict[str, Any]:  # a compiled function does not travel to a spawned process
        return {**self.__dict__, "_function": None, "_batch_size": None}

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.compiled or (self._batch_size is not None and args[0].shape[0] != self._batch_size):
            return -self.elbo(*args, analytic_kl=self.analytic_kl, **kwargs)
        if self._function is None:
            with fork_rng(args[0].device), torch.no_grad():  # resolves the lookups the trace then reads
                self.elbo(*args, analytic_kl=self.analytic_kl, **kwargs)
            self._function = torch.compile(self.elbo, dynamic=False, options={"fallback_random": True})
            self._batch_size = args[0].shape[0]
        if "kl_weight" in kwargs:  # a tensor, so that a warm-up's changing weight is no new graph
            kwargs["kl_weight"] = torch.as_tensor(kwargs["kl_weight"], dtype=torch.float32)
        return -self._function(*args, analytic_kl=self.analytic_kl, **kwargs)


def replaced_programs(model: Any, method: str = "lowered_elbo") -> list[str]:
    """The programs (``model``, ``guide``) that a subclass redefined below the class that wrote ``method``:
    the lowered function no longer says what they do."""
    owner = next(c for c in type(model).__mro__ if method in vars(c))
    return [
        name
        for name in ("model", "guide")
        if (definer := next(c for c in type(model).__mro__ if name in vars(c))) is not owner
        and issubclass(definer, owner)
    ]


def _loss_and_gradients(
    objective: Any, module: torch.nn.Module, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    parameters = [p for p in module.parameters() if p.requires_grad]
    loss = objective.differentiable_loss(model, guide, *args, **kwargs)
    gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, gradients)]


def far_apart(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` differs from ``b`` by more than `TOLERANCE` of ``b``'s size (at least 1): the agreement
    that a faster form of a step must keep with the form it replaces (integer buffers included). Infinities
    and NaNs must stand in the same places (an AIS chain's weight can be -inf); the rest is compared."""
    if a.numel() == 0:
        return False
    a, b = a.double(), b.double()
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not bool((finite | (a == b) | (a.isnan() & b.isnan())).all()):
        return True
    if not bool(finite.any()):
        return False
    a, b = a[finite], b[finite]
    return bool((a - b).abs().max() > TOLERANCE * max(1.0, float(b.abs().max())))


@serialised  # it runs the Pyro programs: never beside another thread's
def check_lowered(
    lowered: LoweredELBO, objective: Any, module: torch.nn.Module, model: Callable, guide: Callable, *args, **kwargs
) -> str | None:
    """None if ``lowered`` gives ``objective``'s loss and gradients on the same noise; else what differs, in words.

    Run once, before training (a few host reads), with Pyro's validation off as in the loop (validate the
    programs first: `ppvae.infer.validate_programs`); the random state is put back afterwards.
    """
    device = next(module.parameters()).device
    with fork_rng(device), pyro.validation_enabled(False):  # as the loop runs it (and so compiles it)
        with fork_rng(device):  # the lowered run below draws the same noise
            expected, expected_gradients = _loss_and_gradients(objective, module, model, guide, args, kwargs)
        try:
            loss, gradients = _loss_and_gradients(lowered, module, model, guide, args, kwargs)
        except Exception as error:  # a compiler that cannot take the function: say so and keep the programs
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return f"{'compiling' if lowered.compiled else 'running'} it failed ({type(error).__name__}: {first})"
    if far_apart(loss, expected):
        return f"its loss {float(loss):.6g} differs from the programs' {float(expected):.6g}"
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    far = [name for name, g, e in zip(names, gradients, expected_gradients) if far_apart(g, e)]
    if far:
        return f"its gradients differ from the programs' ({', '.join(far[:3])}{', ...' if len(far) > 3 else ''})"
    return None
