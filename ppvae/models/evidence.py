"""``ppvae.log_evidence``: log p(x) per example for any ppvae model, by importance sampling, quadrature
or annealed importance sampling; ``ppvae.bdmc``: AIS bounds from both sides on simulated data.

The estimators themselves (``ppvae.infer``) work on Pyro traces; this module feeds
them a model's programs and prepared images (binarised the way the model was scored
in training), picks chunk sizes from a memory budget, and shows a progress bar.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pyro
import torch
from tqdm import tqdm

from ppvae.data import Data
from ppvae.infer import PYRO_LOCK, seeded
from ppvae.infer.ais import AISEstimate, ais_log_evidence, bidirectional, simulate
from ppvae.infer.evidence import PROPOSALS, EvidenceEstimate, estimate_log_evidence, rows_per_pass
from ppvae.infer.quadrature import QuadratureEstimate, quadrature_log_evidence

METHODS = ("is", "quadrature", "ais")

if TYPE_CHECKING:
    from ppvae.models.base import LatentVariableModel


@contextmanager
def _scoring(
    model: LatentVariableModel, data: Data | None = None, y=None, binarize=None, seed: int | None = 0
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """The model in eval mode (restored afterwards, errors included), with ``data`` prepared as it is scored:
    the images and their conditions; no other thread runs Pyro programs meanwhile."""
    with PYRO_LOCK:  # one thread's programs at a time (see ppvae.infer.threads)
        was_training = model.training
        model.eval()
        try:
            if data is None:
                yield None, None
            else:
                x = model.prepare(data, binarize, seed if seed is not None else 0)
                yield x, model.conditions(data, y, x)
        finally:
            model.train(was_training)


def log_evidence(
    model: LatentVariableModel,
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
    chains: int = 16,
    steps: int = 500,
    leapfrog_steps: int = 10,
) -> torch.Tensor | EvidenceEstimate | QuadratureEstimate | AISEstimate:
    """log p(x) per example in nats (float64, shape (N,)) by importance sampling with K = ``num_samples``,
    or, with ``method="quadrature"``, exactly (to the refinement error it reports) for a latent space of
    1 or 2 dimensions: a dense grid over the prior's bulk and every posterior, whatever the prior,
    likelihood or network (``diagnostics=True`` returns a :class:`QuadratureEstimate`).

    ``method="ais"``: annealed importance sampling, ``chains`` chains per image through ``steps`` tempered
    distributions with HMC moves of ``leapfrog_steps`` steps, starting from ``proposal`` ("guide" or
    "prior"). Slower than IS by about steps x leapfrog_steps / num_samples x chains, and far closer where
    q(z | x) misses part of the posterior; ``diagnostics=True`` returns an :class:`AISEstimate` with the
    standard error across chains and the HMC acceptance rates.

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
    if method == "ais":
        estimate = _ais(model, data, y, proposal, chains, steps, leapfrog_steps, batch_size, binarize, seed, progress)
        return estimate if diagnostics else estimate.log_evidence
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if proposal != "prior" and model.point_mass_guide:
        raise ValueError(
            "the guide is a point mass (guide='delta'), which has no density to weigh samples by; "
            "use proposal='prior' or a guide with spread"
        )
    with _scoring(model, data, y, binarize, seed) as (x, c):
        if memory_mb is None:
            memory_mb = 64 if x.device.type == "cpu" else 1024
        rows = rows_per_pass(memory_mb, model.x_dim)
        chunk_size = chunk_size or min(num_samples, rows)
        batch_size = batch_size or max(1, min(x.shape[0], rows // chunk_size))
        bar = tqdm(total=x.shape[0], desc=f"log p(x), K={num_samples}", unit="image", disable=not progress, leave=False)
        with seeded(seed, x.device), bar, pyro.validation_enabled(False):
            estimate = estimate_log_evidence(
                model.model,
                model.guide,
                x,
                c,
                num_samples=num_samples,
                batch_size=batch_size,
                chunk_size=chunk_size,
                diagnostics=diagnostics and pareto_k,
                progress=bar.update,
                proposal=proposal,
            )
    return estimate if diagnostics else estimate.log_evidence


def _quadrature(
    model: LatentVariableModel,
    data: Data,
    y,
    batch_size: int | None,
    binarize,
    seed: int | None,
    diagnostics: bool,
    progress: bool,
) -> torch.Tensor | QuadratureEstimate:
    if not model.has_latent or model.z_dim > 2:
        raise ValueError(
            f"quadrature integrates over 1 or 2 latent dimensions; this model has {model.z_dim}: use method='is'"
        )
    with _scoring(model, data, y, binarize, seed) as (x, c):
        bar = tqdm(total=x.shape[0], desc="log p(x), quadrature", unit="image", disable=not progress, leave=False)
        with bar, pyro.validation_enabled(False):
            estimate = quadrature_log_evidence(
                model.model, model.guide, x, c, batch_size=batch_size or 20, progress=bar.update
            )
    return estimate if diagnostics else estimate.log_evidence


def _check_ais(model: LatentVariableModel, start: str, chains: int, steps: int, leapfrog_steps: int) -> None:
    if not model.has_latent:
        raise ValueError(f"{type(model).__name__} has no latent variable: its log-likelihood needs no estimator")
    if start not in ("guide", "prior"):
        raise ValueError(f"AIS starts from proposal='guide' or 'prior', got {start!r}")
    if start == "guide" and model.point_mass_guide:
        raise ValueError("the guide is a point mass (guide='delta'); start AIS from proposal='prior'")
    for name, value in (("chains", chains), ("steps", steps), ("leapfrog_steps", leapfrog_steps)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _ais(
    model: LatentVariableModel,
    data: Data,
    y,
    start: str,
    chains: int,
    steps: int,
    leapfrog_steps: int,
    batch_size: int | None,
    binarize,
    seed: int | None,
    progress: bool,
) -> AISEstimate:
    _check_ais(model, start, chains, steps, leapfrog_steps)
    with _scoring(model, data, y, binarize, seed) as (x, c):
        batch_size = batch_size or max(1, rows_per_pass(64 if x.device.type == "cpu" else 1024, model.x_dim) // chains)
        batches = math.ceil(x.shape[0] / batch_size)
        bar = tqdm(
            total=batches * steps,
            desc=f"log p(x), AIS {chains}x{steps}",
            unit="step",
            disable=not progress,
            leave=False,
        )
        with seeded(seed, x.device), bar, pyro.validation_enabled(False):
            return ais_log_evidence(
                model.model,
                model.guide,
                x,
                c,
                chains=chains,
                steps=steps,
                leapfrog_steps=leapfrog_steps,
                start=start,
                batch_size=batch_size,
                progress=bar.update,
            )


def bdmc(
    model: LatentVariableModel,
    num_images: int = 100,
    y: torch.Tensor | None = None,
    chains: int = 16,
    steps: int = 500,
    leapfrog_steps: int = 10,
    proposal: str = "guide",
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, AISEstimate]:
    """Bidirectional Monte Carlo (Grosse et al., 2015): simulate ``num_images`` images from the model, then
    bound each one's log p(x) from below (forward AIS) and above (reverse AIS from the z that drew it).

    Returns the simulated images and the :class:`AISEstimate` whose ``log_evidence`` is the lower bound and
    ``upper`` the upper one. A small gap says AIS with these settings is accurate on this model's own data,
    and so, presumably, on real images near it.
    """
    _check_ais(model, proposal, chains, steps, leapfrog_steps)
    like = torch.zeros(num_images, *model.x_shape, device=model.device)
    c = model.condition(model.sample_labels(num_images, y).to(model.device)) if model.conditional else None
    bar = tqdm(
        total=2 * steps, desc=f"BDMC, AIS {chains}x{steps} both ways", unit="step", disable=not progress, leave=False
    )
    with _scoring(model), seeded(seed, model.device), bar, pyro.validation_enabled(False):
        z, x = simulate(model.model, model.guide, like, c)
        estimate = bidirectional(
            model.model,
            model.guide,
            z,
            x,
            c,
            chains=chains,
            steps=steps,
            leapfrog_steps=leapfrog_steps,
            start=proposal,
            batch_size=num_images,
            progress=bar.update,
        )
    return x, estimate


KHAT_UNRELIABLE = 0.7  # Pareto k-hat above this: the importance weights' tail is too heavy to trust (Vehtari et al.)
WARN_SHARE = 0.1  # warn when more than this share of images has an unreliable estimate


def reliability_warning(share: float, z_dim: int | None = None) -> str | None:
    """A plain-words warning when the share of images with k-hat > 0.7 is large, else None."""
    if not share > WARN_SHARE:
        return None
    remedy = (
        "method='quadrature' computes it exactly for z_dim <= 2"
        if z_dim is not None and z_dim <= 2
        else (
            "more samples help little where q(z | x) misses a mode of the posterior; "
            "method='ais' (annealed importance sampling) reaches it"
        )
    )
    return (
        f"warning: Pareto k-hat > {KHAT_UNRELIABLE} on {share:.0%} of the images: there the importance-sampled "
        f"log p(x) is unreliable (one run can land well off the true value, and on average it is too low: a "
        f"stochastic lower bound); {remedy}"
    )


def bits_per_dim(log_px: torch.Tensor | float, x_dim: int, levels: int | None = None) -> torch.Tensor | float:
    """-log2 p(x) per dimension. ``levels=256`` for a density on [0, 1] of 256-level pixels.

    A density over pixels rescaled from {0, ..., 255} to [0, 1] gains log 256 nats per
    dimension from the rescaling; the correction puts it back on the 0-255 scale that
    published bits/dim use. Binary data (a probability, not a density) needs none.
    """
    correction = x_dim * math.log(levels) if levels else 0.0
    return (-log_px + correction) / (x_dim * math.log(2))
