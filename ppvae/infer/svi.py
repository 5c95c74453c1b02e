"""The optimizer of the training loop: one torch Adam over a fixed parameter list.

Pyro's ``SVI.step`` keeps one Adam per parameter tensor and collects the
parameters from the trace at every step. The loop instead hands a fixed list
to a single ``torch.optim.Adam``, fused where the device has a kernel for it
(one pass over all parameters instead of a loop of small ops).
"""

from __future__ import annotations

import torch


def make_adam(parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over all parameters, fused where torch supports it for these tensors."""
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(parameters, lr=lr)
