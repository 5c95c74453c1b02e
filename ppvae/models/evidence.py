"""``ppvae.log_evidence``: importance-sampled log p(x) per example for any ppvae model.

The estimator itself (``ppvae.infer.evidence``) works on Pyro traces; this
module feeds it a model's programs and prepared images (binarised the way the
model was scored in training), picks chunk sizes from a memory budget, and
shows a progress bar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyro
import torch
from tqdm import tqdm

from ppvae.data import Data
from ppvae.infer import seeded
from ppvae.infer.evidence import PROPOSALS, EvidenceEstimate, estimate_log_evidence, rows_per_pass
from ppvae.infer.quadrature import QuadratureEstimate, quadrature_log_evidence

METHODS = ("is", "quadrature")

if TYPE_CHECKING:
    from ppvae.models.base import LatentVariableModel


def log_evidence(
    model: "LatentVariableModel",
    data: Data,
    num_samples: int = 1000,
    y: torch.Tensor | None = None,
    method: str = "is",
    proposal: str = "guide",
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_mb: float | None = None,
    binarize: str | None = "auto",
    seed: int | None = 0,
    diagnostics: bool = False,
    pareto_k: bool = True,
    progress: bool = True,
) -> torch.Tensor | EvidenceEstimate:
    """log p(x) per example in nats (float64, shape (N,)) by importance sampling with K = ``num_samples``,
    or, with ``method="quadrature"``, exactly (to the refinement error it reports) for a latent space of
    1 or 2 dimensions: a dense grid over the prior's bulk and every posterior, whatever the prior,
    likelihood or network (``diagnostics=True`` returns a :class:`QuadratureEstimate`).

    ``proposal="guide"`` (the encoder's q(z|x)), ``"prior"`` (the naive estimator) or ``"defensive"``
    (q mixed with 20% of the prior, so that a posterior mode q misses cannot blow the variance up).
    ``batch_size`` examples times ``chunk_size`` samples go through the model at once; left
    unset they are chosen to fit ``memory_mb`` (default 64 on the CPU, where chunks of a few
    thousand rows stay in cache and run fastest, and 1024 on a GPU). With ``diagnostics=True``
    the result is an :class:`EvidenceEstimate` that also holds the effective sample size and
    (unless ``pareto_k=False``, which skips a fit per example) the PSIS k-hat per example and
    the seconds it took. K = 1 is an unbiased estimate of the ELBO; the estimate rises toward
    log p(x) as K grows.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "quadrature":
        return _quadrature(model, data, y, batch_size, binarize, seed, diagnostics, progress)
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if proposal != "prior" and model.point_mass_guide:
        raise ValueError("the guide is a point mass (guide='delta'), which has no density to weigh samples by; "
                         "use proposal='prior' or a guide with spread")  # fmt: skip
    was_training = model.training
    model.eval()
    x = model.prepare(data, binarize, seed if seed is not None else 0)
    c = model.conditions(data, y, x)
    if memory_mb is None:
        memory_mb = 64 if x.device.type == "cpu" else 1024
    rows = rows_per_pass(memory_mb, model.x_dim)
    chunk_size = chunk_size or min(num_samples, rows)
    batch_size = batch_size or max(1, min(x.shape[0], rows // chunk_size))
    bar = tqdm(total=x.shape[0], desc=f"log p(x), K={num_samples}", unit="image", disable=not progress, leave=False)
    with seeded(seed, x.device), bar, pyro.validation_enabled(False):
        estimate = estimate_log_evidence(
            model.model, model.guide, x, c, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size,
            diagnostics=diagnostics and pareto_k, progress=bar.update, proposal=proposal,
        )  # fmt: skip
    model.train(was_training)
    return estimate if diagnostics else estimate.log_evidence


def _quadrature(model: "LatentVariableModel", data: Data, y, batch_size: int | None, binarize, seed: int | None,
                diagnostics: bool, progress: bool) -> torch.Tensor | QuadratureEstimate:  # fmt: skip
    if not model.has_latent or model.z_dim > 2:
        raise ValueError(f"quadrature integrates over 1 or 2 latent dimensions; this model has "
                         f"{model.z_dim}: use method='is'")  # fmt: skip
    was_training = model.training
    model.eval()
    x = model.prepare(data, binarize, seed if seed is not None else 0)
    c = model.conditions(data, y, x)
    bar = tqdm(total=x.shape[0], desc="log p(x), quadrature", unit="image", disable=not progress, leave=False)
    with bar, pyro.validation_enabled(False):
        estimate = quadrature_log_evidence(model.model, model.guide, x, c, batch_size=batch_size or 20,
                                           progress=bar.update)  # fmt: skip
    model.train(was_training)
    return estimate if diagnostics else estimate.log_evidence


KHAT_UNRELIABLE = 0.7  # Pareto k-hat above this: the importance weights' tail is too heavy to trust (Vehtari et al.)
WARN_SHARE = 0.1  # warn when more than this share of images has an unreliable estimate


def reliability_warning(share: float, z_dim: int | None = None) -> str | None:
    """A plain-words warning when the share of images with k-hat > 0.7 is large, else None."""
    if not share > WARN_SHARE:
        return None
    remedy = "method='quadrature' computes it exactly for z_dim <= 2" if z_dim is not None and z_dim <= 2 else \
        "more samples help little where q(z | x) misses a mode of the posterior"
    return (f"warning: Pareto k-hat > {KHAT_UNRELIABLE} on {share:.0%} of the images: there the importance-sampled "
            f"log p(x) is unreliable (one run can land well off the true value, and on average it is too low: a "
            f"stochastic lower bound); {remedy}")


def bits_per_dim(log_px: torch.Tensor | float, x_dim: int, levels: int | None = None) -> torch.Tensor | float:
    """-log2 p(x) per dimension. ``levels=256`` for a density on [0, 1] of 256-level pixels.

    A density over pixels rescaled from {0, ..., 255} to [0, 1] gains log 256 nats per
    dimension from the rescaling; the correction puts it back on the 0-255 scale that
    published bits/dim use. Binary data (a probability, not a density) needs none.
    """
    correction = x_dim * math.log(levels) if levels else 0.0
    return (-log_px + correction) / (x_dim * math.log(2))
