"""A lean SVI step: a Pyro ELBO's differentiable loss and one torch optimizer.

Pyro's ``SVI.step`` validates the program at every step, keeps one Adam per
parameter tensor and collects parameters from the trace every time. Here the
program is validated once, up front, and the parameters are a fixed list
handed to a single ``torch.optim.Adam`` (torch's fused kernel where the
device has one: one pass over all parameters instead of a loop of small
ops); the loss is still the ELBO's own ``differentiable_loss`` on the model
and guide, so the objective is Pyro's.
"""

from __future__ import annotations

from typing import Callable, Iterable

import pyro
import torch
from pyro.infer import ELBO

from ppvae.infer.objectives import IWAE


def make_adam(parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over all parameters, fused where torch supports it for these tensors."""
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(parameters, lr=lr)


class SVITrainer:
    """Stochastic variational inference on ``model``/``guide`` with a fixed parameter list."""

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        parameters: Iterable[torch.nn.Parameter],
        elbo: ELBO | IWAE,
        lr: float = 1e-3,
    ):
        self.model, self.guide, self.elbo = model, guide, elbo
        self.parameters = [p for p in parameters if p.requires_grad]
        self.optimizer = make_adam(self.parameters, lr)

    def validate(self, *args, **kwargs) -> float:
        """Run the loss once with Pyro's validation on: site shapes, model/guide agreement, support checks."""
        with pyro.validation_enabled(True), torch.no_grad():
            return float(self.elbo.loss(self.model, self.guide, *args, **kwargs))

    def step(self, *args, **kwargs) -> torch.Tensor:
        """One gradient step on the negative ELBO; returns the loss (detached, summed over the batch)."""
        loss = self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
