"""What every model declared from named parts shares, so that no model writes it again.

A model here is built from specs (``"bernoulli"``, ``{"name": "mlp", "hidden": [400]}``): it keeps each
part's normalised spec in ``specs`` (what ``config`` saves and the repr names) and its likelihood in
``likelihood``. The likelihood's support is what data are checked against, and its data-dependent
parameters (a learned per-pixel scale) are what the data initialise. Each program registers with
``pyro.module`` only the parts it uses and only those with parameters, from lists built once (Pyro's VAE
tutorial registers per program too): half the parameter messages per step of registering the whole
model in both programs.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch

from ppvae.parts import normalize_spec
from ppvae.parts.registry import PartSpec


def described(spec: dict[str, Any]) -> str:
    """A part's spec as a repr shows it: its name alone, or the whole dict where it has options."""
    return spec["name"] if len(spec) == 1 else str(spec)


class DeclaredParts:
    """A mixin for a `LatentVariableModel` built from parts: ``declare`` them, ``likelihood`` set by the model."""

    specs: dict[str, dict[str, Any]]
    likelihood: torch.nn.Module
    pyro_name: str
    _pyro_parts: dict[str, list[tuple[str, torch.nn.Module]]]  # each program's parts, set where the model builds them

    def declare(self, **specs: PartSpec) -> None:
        """Keep each part's spec, normalised (``"x"`` -> ``{"name": "x"}``), under its kind, in this order."""
        self.specs = {kind: normalize_spec(spec, kind) for kind, spec in specs.items()}

    def described_parts(self) -> str:
        """The parts as the repr shows them: ``prior=normal, likelihood={'name': 'normal', 'scale': ...}``."""
        return ", ".join(f"{kind}={described(spec)}" for kind, spec in self.specs.items())

    def _with_parameters(self, **modules: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The modules that have parameters, each with its name for ``pyro.module`` (the rest register nothing)."""
        return [(f"{self.pyro_name}.{name}", m) for name, m in modules.items() if any(True for _ in m.parameters())]

    def _register(self, program: str) -> None:
        """``pyro.module`` for each part ``program`` uses: the list ``self._pyro_parts[program]``."""
        for name, module in self._pyro_parts[program]:
            pyro.module(name, module)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ValueError where ``x`` lies outside the likelihood's support (binary data for a Bernoulli)."""
        self.likelihood.check(x)

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the likelihood, once, before a fresh model's first step."""
        self.likelihood.initialize(x)
