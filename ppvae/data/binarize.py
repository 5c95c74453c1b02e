"""Binarisation of grey-level images for Bernoulli likelihoods.

``"dynamic"`` draws a fresh Bernoulli sample every time a batch is seen (a
regulariser, as in the IWAE and VAE literature); ``"static"`` draws one fixed,
seeded sample; ``"threshold"`` cuts at 0.5; ``None`` keeps the grey levels.
"""

from __future__ import annotations

import torch

BINARIZE_METHODS = ("dynamic", "static", "threshold", None)


def check_binarize(method: str | None) -> str | None:
    if method not in BINARIZE_METHODS:
        raise ValueError(f"binarize must be one of {BINARIZE_METHODS}, got {method!r}")
    return method


def binarize(x: torch.Tensor, method: str | None, seed: int | None = 0) -> torch.Tensor:
    """Binarise images in [0, 1] by ``method``; ``"dynamic"`` draws anew on every call.

    ``"static"`` with a seed draws on the CPU whatever the device of ``x``: a GPU's generator gives other
    draws for the same seed, and held-out images must not change with the device a model sits on.
    """
    check_binarize(method)
    if method is None:
        return x
    if method == "threshold":
        return (x > 0.5).to(x.dtype)
    if method == "static" and seed is not None:
        generator = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x.cpu(), generator=generator).to(x.device)
    return torch.bernoulli(x)


def fixed_binarization(method: str | None) -> str | None:
    """The fixed version of ``method`` used for held-out data: dynamic becomes static."""
    return "static" if check_binarize(method) == "dynamic" else method
