"""A model's log-joint in plain torch: the inner loop of annealed importance sampling without Pyro's tracing.

AIS evaluates log p(z), log p(x | z) and their gradients in z at every leapfrog step
(chains x steps x leapfrog steps evaluations per batch: 16,000 for the demo's 16 x 100 x 10).
Through the programs each one is a conditioned trace of the model: messengers, a dict per
site, log-probs gathered from the trace. A model built from registered parts can give the
same densities as two torch functions of the batch and the latent values,

    log_joint(x, c, values) -> (log p(z), log p(x | z))     each (P, N)
    log_guide(x, c, values) -> log q(z | x)                 (P, N)

with ``values`` each latent site's value (P, N, *event_shape). `LoweredSpace` is a
`LatentSpace` that evaluates through them; `check_lowered_space` holds them to the traced
densities once, at the chains' first points (the values and their gradients in z, to 1e-5
of their size), so that the lowered chains are the programs' chains. The programs stay the
definition: the start points are still drawn through them, and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ppvae.infer.lowered import TOLERANCE
from ppvae.infer.traces import LatentSpace

Values = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LoweredDensities:
    """A model's densities as plain torch functions (see the module): ``log_joint`` gives (log p(z), log p(x | z)),
    ``log_guide`` log q(z | x), at latent ``values`` for the batch ``x`` with condition ``c``."""

    log_joint: Callable[[torch.Tensor, torch.Tensor | None, Values], tuple[torch.Tensor, torch.Tensor]]
    log_guide: Callable[[torch.Tensor, torch.Tensor | None, Values], torch.Tensor]


class LoweredSpace(LatentSpace):
    """A `LatentSpace` whose densities come from `LoweredDensities` instead of conditioned traces.

    The sites' names, shapes and start distributions still come from one trace of the programs per batch;
    with ``densities`` set to None it evaluates through traces again, as `LatentSpace` does.
    """

    def __init__(
        self, model: Callable, guide: Callable, x: torch.Tensor, c: torch.Tensor | None, densities: LoweredDensities
    ):
        super().__init__(model, guide, x, c)
        self.densities: LoweredDensities | None = densities

    def _points(self, z: torch.Tensor) -> torch.Size:
        return torch.Size((z.shape[0], self.x.shape[0]))

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.densities is None:
            return super().log_joint(z)
        log_prior, log_likelihood = self.densities.log_joint(self.x, self.c, self.split(z))
        return log_prior.expand(self._points(z)), log_likelihood.expand(self._points(z))

    def log_guide(self, z: torch.Tensor) -> torch.Tensor:
        if self.densities is None or len(self.names) == 1:  # one site: already the batch's distribution at z
            return super().log_guide(z)
        return self.densities.log_guide(self.x, self.c, self.split(z)).expand(self._points(z))


def _densities_and_gradients(space: LatentSpace, z: torch.Tensor, guide: bool) -> list[torch.Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        terms = [*space.log_joint(z), *([space.log_guide(z)] if guide else [])]
        gradients = [torch.autograd.grad(term.sum(), z, retain_graph=True)[0] for term in terms]
    return [t.detach() for t in terms] + gradients


def check_lowered_space(space: LoweredSpace, z: torch.Tensor, guide: bool) -> str | None:
    """None if ``space``'s lowered densities equal the traced ones at the points ``z`` (P, N, D), the values and
    their gradients in z to 1e-5 of their size (log q too where ``guide``); else what differs, in words."""
    names = ["log p(z)", "log p(x | z)", "log q(z | x)"][: 3 if guide else 2]
    names = names + [f"the gradient of {name}" for name in names]
    try:
        lowered = _densities_and_gradients(space, z, guide)
    except Exception as error:  # a lowered function that cannot run on these points: say so, keep the programs
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"running it failed ({type(error).__name__}: {first})"
    densities, space.densities = space.densities, None
    try:
        traced = _densities_and_gradients(space, z, guide)
    finally:
        space.densities = densities
    for name, value, expected in zip(names, lowered, traced):
        if value.shape != expected.shape or not torch.allclose(
            value, expected, rtol=0, atol=TOLERANCE * max(1.0, float(expected.abs().max()))
        ):
            return f"its {name} differs from the programs'"
    return None
