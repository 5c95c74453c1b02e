"""``ppvae.log_evidence``: log p(x) per example for any ppvae model, by one method at a time with only that
method's options; ``ppvae.bdmc``: AIS bounds from both sides on simulated data.

    method      its options (anything else is refused, naming the option)
    "is"        num_samples, proposal ("guide", "prior", "defensive"), batch_size, chunk_size, memory_mb, pareto_k
    "ais"       chains, steps, leapfrog_steps, proposal ("guide" or "prior": where the chains start), batch_size,
                cuda_graph (on a GPU, each batch's step in a CUDA graph; False: its kernels launched one by one)
    "quadrature"  batch_size                   (a total latent dimension of at most 2)
    "exact"     none                           (a model with a closed form: factor analysis)

The estimators themselves (``ppvae.infer``) work on Pyro traces of any number of latent
sites; this module feeds them a model's programs and prepared images (binarised the way
the model was scored in training) with their condition, picks chunk sizes from a memory
budget, and shows a progress bar. It uses a model only through its contract.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from tqdm import tqdm

from ppvae.data import Data
from ppvae.estimator.contract import Model, labels_for
from ppvae.infer import PYRO_LOCK, seeded
from ppvae.infer.ais import STARTS, AISEstimate, ais_log_evidence, bidirectional, log_standard_error, simulate
from ppvae.infer.evidence import PROPOSALS, EvidenceEstimate, estimate_log_evidence, rows_per_pass
from ppvae.infer.lowered import replaced_programs
from ppvae.infer.lowered_joint import LoweredDensities
from ppvae.infer.progress import progress_bar
from ppvae.infer.quadrature import QuadratureEstimate, quadrature_log_evidence

METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "is": {
        "num_samples": 1000,
        "proposal": "guide",
        "batch_size": None,
        "chunk_size": None,
        "memory_mb": None,
        "pareto_k": True,
    },
    "ais": {
        "chains": 16,
        "steps": 500,
        "leapfrog_steps": 10,
        "proposal": "guide",
        "batch_size": None,
        "cuda_graph": True,
    },
    "quadrature": {"batch_size": 20},
    "exact": {},
}
"""Each method's options and their defaults: one table for the door, the CLI and the docs."""
METHODS = tuple(METHOD_OPTIONS)


def default_method(model: Model) -> str:
    """The closed form where the model has one, else importance sampling."""
    return "exact" if model.capabilities.exact_evidence else "is"


def point_mass(model: Model) -> bool:
    """Whether ``model`` is an autoencoder: latent codes from a point-mass guide (``guide="delta"``).

    Its objective log p(x | z) + log p(z) at the code is no bound on log p(x) (a point mass has no
    entropy), and its q(z | x) has no density to weigh importance samples by; log p(x) of its decoder
    under the prior needs proposals from the prior (``proposal="prior"``, best with AIS).
    """
    return model.capabilities.latent and not model.capabilities.proposal


POINT_MASS_EVIDENCE = (
    "an autoencoder's point-mass guide has no density to weigh samples by, so log p(x) is left out; "
    "method='ais' with proposal='prior' (--method ais --proposal prior) scores its decoder under the prior"
)
POINT_MASS_ELBO = "a point mass has no entropy: its objective log p(x|z) + log p(z) at the code bounds nothing"


def check_method(model: Model, method: str) -> str:
    """``method`` if it is known and this model can use it, else one line saying why not."""
    if method not in METHOD_OPTIONS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not model.capabilities.density:
        raise ValueError(
            f"{type(model).__name__} has no tractable p(x): it models an image given its corruption, p(x | x~), "
            "and draws samples by a chain; compare its samples (MMD, nearest neighbours) instead"
        )
    if method == "exact" and not model.capabilities.exact_evidence:
        raise ValueError(
            f"{type(model).__name__} has no closed-form evidence; use method='is', 'ais' or (z_dim <= 2) 'quadrature'"
        )
    if method in ("ais", "quadrature") and not model.capabilities.latent:
        raise ValueError(f"{type(model).__name__} has no latent variable: its log-likelihood needs no estimator")
    return method


def refuse_option(name: str, method: str) -> None:
    """The one line for an option that belongs to another method (or to none)."""
    owners = [m for m, options in METHOD_OPTIONS.items() if name in options]
    belongs = f"it is an option of method={owners[0]!r}" if owners else "no method takes it"
    takes = ", ".join(METHOD_OPTIONS[method]) or "none"
    raise ValueError(f"{name} does not apply to method={method!r} ({belongs}); its options: {takes}")


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The method's options: its defaults, overridden by ``given``; an option of another method is refused."""
    for name in given:
        if name not in METHOD_OPTIONS[method]:
            refuse_option(name, method)
    return {**METHOD_OPTIONS[method], **given}


def _whole_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


@contextmanager
def scoring(
    model: Model, data: Data | None = None, y: Any = None, c: Any = None, binarize: Any = None, seed: int | None = 0
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """The model in eval mode (restored afterwards, errors included), with ``data`` prepared as it is scored:
    the images and their condition; no other thread runs Pyro programs meanwhile."""
    with PYRO_LOCK:  # one thread's programs at a time (see ppvae.infer.threads)
        was_training = model.training
        model.eval()
        try:
            if data is None:
                yield None, None
            else:
                x = model.prepare(data, binarize, seed if seed is not None else 0)
                yield x, model.condition_for(data, x, y, c)
        finally:
            model.train(was_training)


def log_evidence(
    model: Model,
    data: Data,
    num_samples: int | None = None,
    *,
    method: str | None = None,
    y: Any = None,
    c: torch.Tensor | None = None,
    binarize: str | None = "auto",
    seed: int | None = 0,
    diagnostics: bool = False,
    progress: bool = True,
    **options: Any,
) -> torch.Tensor | EvidenceEstimate | QuadratureEstimate | AISEstimate:
    """log p(x) per example in nats (float64, shape (N,)), by ``method``, with only that method's options.

    ``method=None`` is the closed form where the model has one (factor analysis), importance sampling
    otherwise, or whenever ``num_samples`` is given. Labels ``y`` (or the dataset's) or a ready condition
    ``c`` give log p(x | c) for a conditional model.

    ``"is"``: importance sampling with K = ``num_samples`` draws from ``proposal``: ``"guide"`` (the
    encoder's q(z | x)), ``"prior"`` (the naive estimator) or ``"defensive"`` (q mixed with 20% of the
    prior, so that a posterior mode q misses cannot blow the variance up). ``batch_size`` examples
    times ``chunk_size`` samples go through the model at once; left unset they are chosen to fit
    ``memory_mb`` (default 64 on the CPU, where chunks of a few thousand rows stay in cache and run
    fastest, and 1024 on a GPU). With ``diagnostics=True`` the result is an `EvidenceEstimate`
    that also holds the effective sample size and (unless ``pareto_k=False``, which skips a fit per
    example) the PSIS k-hat per example and the seconds it took. K = 1 is an unbiased estimate of the
    ELBO; the estimate rises toward log p(x) as K grows.

    ``"ais"``: annealed importance sampling, ``chains`` chains per image through ``steps`` tempered
    distributions with HMC moves of ``leapfrog_steps`` steps over all latent sites at once, starting
    from ``proposal`` ("guide" or "prior"). Slower than IS by about steps x leapfrog_steps /
    num_samples x chains, and far closer where q(z | x) misses part of the posterior;
    ``diagnostics=True`` returns an `AISEstimate` with the standard error across chains and
    the HMC acceptance rates. On a GPU each batch's step (its HMC move, leapfrog steps and all) is
    captured in a CUDA graph after three eager steps and checked once against the eager step
    (``cuda_graph=False``: never; the estimate's ``graphed`` says whether a graph ran).

    ``"quadrature"``: exact (to the refinement error it reports) for a total latent dimension of 1 or
    2: a dense grid over the prior's bulk and every posterior, whatever the prior, likelihood or
    network (``diagnostics=True`` returns a `QuadratureEstimate`). ``"exact"``: the closed form.

    ``seed`` fixes an estimate for given memory settings and device, not whatever the chunking: the noise of
    IS and AIS is drawn a batch of images (and, for IS, a chunk of samples) at a time, so another
    ``batch_size``, ``chunk_size`` or ``memory_mb`` (whose defaults differ between the CPU and a GPU)
    draws other samples and gives another estimate of the same quantity, as a second seed would: it
    differs by the estimator's own Monte-Carlo noise, which is large on an image whose k-hat is above 0.7.
    The draws cannot follow each image alone: Pyro's vectorised sample sites draw a whole batch from one
    random stream.
    """
    if method is None:
        method = "is" if num_samples is not None else default_method(model)
    check_method(model, method)
    if num_samples is not None:
        options["num_samples"] = num_samples
    options = method_options(method, options)
    if model.capabilities.latent_labels and c is None and not _labels_known(model, data, y):
        estimate = summed_over_labels(
            [
                log_evidence(
                    model,
                    data,
                    method=method,
                    y=torch.full((len(data),), label),
                    binarize=binarize,
                    seed=seed,
                    diagnostics=True,
                    progress=progress,
                    **options,
                )
                for label in range(model.num_classes)
            ]
        )
        return estimate if diagnostics else estimate.log_evidence
    if method == "exact":
        with scoring(model, data, y, c, binarize, seed) as (x, _):
            return model.exact_log_evidence(x)
    if method == "quadrature":
        return _quadrature(model, data, y, c, options, binarize, seed, diagnostics, progress)
    if method == "ais":
        estimate = _ais(model, data, y, c, options, binarize, seed, progress)
        return estimate if diagnostics else estimate.log_evidence
    return _importance_sampling(model, data, y, c, options, binarize, seed, diagnostics, progress)


def _labels_known(model: Model, data: Data, y: Any) -> bool:
    """For a model whose label is latent: True where ``y`` gives every image's label (log p(x, y)), False where
    it gives none (log p(x), the label summed out); some but not all is refused."""
    known = labels_for(model, data, y, scoring=True) >= 0
    if bool(known.all()) or not bool(known.any()):
        return bool(known.all())
    raise ValueError(
        f"y gives the labels of {int(known.sum())} of {known.numel()} images: give every image's label "
        "(log p(x, y)) or none (log p(x), the label summed out)"
    )


def summed_over_labels(estimates: list[Any]) -> Any:
    """log p(x) = log sum_y p(x, y) from one estimate of log p(x, y) per class (any method, all of one kind).

    The sum over y is exact; each term keeps its estimator's error. AIS's chains are summed chain by chain
    (chain k of every class together, itself an unbiased estimate of p(x)), so its standard error is that
    of the sum. Every other per-image diagnostic (k-hat, effective sample size, step size, quadrature error)
    is the one of the class that holds most of p(x) for that image; the seconds add up.
    """
    terms = torch.stack([e.log_evidence for e in estimates])  # (classes, N)
    dominant = terms.argmax(0, keepdim=True)
    combined = {}
    for f in dataclasses.fields(estimates[0]):
        values = [getattr(e, f.name) for e in estimates]
        if f.name == "seconds":
            combined[f.name] = sum(values)
        elif f.name == "log_weights":
            combined[f.name] = torch.logsumexp(torch.stack(values), 0)
        elif isinstance(values[0], torch.Tensor) and values[0].shape == terms.shape[1:]:
            combined[f.name] = torch.stack(values).gather(0, dominant)[0]
    combined["log_evidence"] = torch.logsumexp(terms, 0)
    if "standard_error" in combined:
        combined["standard_error"] = log_standard_error(combined["log_weights"])
    return dataclasses.replace(estimates[0], **combined)


def _importance_sampling(model, data, y, c, options, binarize, seed, diagnostics, progress):
    num_samples, proposal = options["num_samples"], options["proposal"]
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if proposal != "prior" and point_mass(model):
        raise ValueError(
            "the guide is a point mass (guide='delta'), which has no density to weigh samples by; "
            "use proposal='prior' or a guide with spread"
        )
    if proposal == "defensive":
        _check_scores_any_point(model, "the defensive proposal scores q(z | x) at the prior's draws", "'guide'")
    with scoring(model, data, y, c, binarize, seed) as (x, c):
        memory_mb = options["memory_mb"] or (64 if x.device.type == "cpu" else 1024)
        rows = rows_per_pass(memory_mb, model.x_dim)
        chunk_size = options["chunk_size"] or min(num_samples, rows)
        batch_size = options["batch_size"] or max(1, min(x.shape[0], rows // chunk_size))
        bar = progress_bar(x.shape[0], f"log p(x), K={num_samples}", "image", progress)
        with seeded(seed, x.device), bar, pyro.validation_enabled(False):
            estimate = estimate_log_evidence(
                model.model,
                model.guide,
                x,
                c,
                num_samples=num_samples,
                batch_size=batch_size,
                chunk_size=chunk_size,
                diagnostics=diagnostics and options["pareto_k"],
                progress=bar.update,
                proposal=proposal,
            )
    return estimate if diagnostics else estimate.log_evidence


def _quadrature(model, data, y, c, options, binarize, seed, diagnostics, progress):
    _whole_number("batch_size", options["batch_size"])
    with scoring(model, data, y, c, binarize, seed) as (x, c):
        bar = progress_bar(x.shape[0], "log p(x), quadrature", "image", progress)
        with bar, pyro.validation_enabled(False):
            estimate = quadrature_log_evidence(
                model.model, model.guide, x, c, batch_size=options["batch_size"], progress=bar.update
            )
    return estimate if diagnostics else estimate.log_evidence


def _check_ais(model: Model, options: dict[str, Any]) -> None:
    if options["proposal"] not in STARTS:
        raise ValueError(f"AIS starts from proposal='guide' or 'prior', got {options['proposal']!r}")
    if options["proposal"] == "guide" and not model.capabilities.proposal:
        raise ValueError("the guide is a point mass (guide='delta'); start AIS from proposal='prior'")
    if options["proposal"] == "guide":
        _check_scores_any_point(model, "AIS from the guide scores q(z | x) at every chain's point", "'prior'")
    for name in ("chains", "steps", "leapfrog_steps"):
        _whole_number(name, options[name])
    if options["batch_size"] is not None:
        _whole_number("batch_size", options["batch_size"])


def _check_scores_any_point(model: Model, why: str, instead: str) -> None:
    """One line where a method needs the guide's density at points the guide did not draw and it has none."""
    if model.capabilities.latent and not model.capabilities.scores_any_point:
        raise ValueError(
            f"{why}, and this guide scores only its own draws (a transform without an inverse): "
            f"use proposal={instead}, or a flow of coupling or autoregressive affine transforms"
        )


def lowered_densities(model: Model) -> LoweredDensities | None:
    """The model's densities in plain torch for AIS's inner loop (`ppvae.infer.lowered_joint`), where it has
    them and its programs are the ones they were written for (not a subclass's own ``model`` or ``guide``)."""
    if getattr(model, "lowered_log_joint", None) is None or replaced_programs(model, "lowered_log_joint"):
        return None
    return LoweredDensities(model.lowered_log_joint, model.lowered_log_guide)


def _say_fallback(model: Model, progress: bool):
    """The line AIS prints where a model's lowered log-joint disagreed with its programs on the first batch."""

    def say(disagreement: str) -> None:
        if progress:
            tqdm.write(
                f"ppvae: AIS evaluates the Pyro programs: the lowered log-joint of {type(model).__name__} was "
                f"checked on the first batch and {disagreement}"
            )

    return say


def _say(progress: bool):
    """One line from the estimator, printed above the progress bar where there is one."""

    def say(line: str) -> None:
        if progress:
            tqdm.write(f"ppvae: AIS: {line}")

    return say


def _ais(model, data, y, c, options, binarize, seed, progress) -> AISEstimate:
    _check_ais(model, options)
    chains, steps = options["chains"], options["steps"]
    with scoring(model, data, y, c, binarize, seed) as (x, c):
        rows = rows_per_pass(64 if x.device.type == "cpu" else 1024, model.x_dim)
        batch_size = options["batch_size"] or max(1, rows // chains)
        batches = math.ceil(x.shape[0] / batch_size)
        bar = progress_bar(batches * steps, f"log p(x), AIS {chains}x{steps}", "step", progress)
        with seeded(seed, x.device), bar, pyro.validation_enabled(False):
            return ais_log_evidence(
                model.model,
                model.guide,
                x,
                c,
                chains=chains,
                steps=steps,
                leapfrog_steps=options["leapfrog_steps"],
                start=options["proposal"],
                batch_size=batch_size,
                progress=bar.update,
                densities=lowered_densities(model),
                fallback=_say_fallback(model, progress),
                graph=bool(options["cuda_graph"]),
                announce=_say(progress),
            )


def bdmc(
    model: Model,
    num_images: int = 100,
    y: Any = None,
    chains: int = 16,
    steps: int = 500,
    leapfrog_steps: int = 10,
    proposal: str = "guide",
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, AISEstimate]:
    """Bidirectional Monte Carlo (Grosse et al., 2015): simulate ``num_images`` images from the model, then
    bound each one's log p(x) from below (forward AIS) and above (reverse AIS from the z that drew it).

    Returns the simulated images and the `AISEstimate` whose ``log_evidence`` is the lower bound and
    ``upper`` the upper one. A small gap says AIS with these settings is accurate on this model's own data,
    and so, presumably, on real images near it. Labels ``y`` (by default the classes in turn) for a model
    conditioned on labels; every latent site is simulated and annealed.
    """
    options = {"chains": chains, "steps": steps, "leapfrog_steps": leapfrog_steps, "proposal": proposal}
    check_method(model, "ais")
    _check_ais(model, {**options, "batch_size": None})
    if model.capabilities.condition == "images":
        raise ValueError(f"{type(model).__name__} conditions on images: BDMC simulates whole images from nothing")
    like = torch.zeros(num_images, *model.x_shape, device=model.device)
    labels = (
        labels_for(model, None, model.sample_labels(num_images, y))
        if model.capabilities.condition == "labels"
        else None
    )
    c = model.condition(None, None if labels is None else labels.to(model.device))
    bar = progress_bar(2 * steps, f"BDMC, AIS {chains}x{steps} both ways", "step", progress)
    with scoring(model), seeded(seed, model.device), bar, pyro.validation_enabled(False):
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
            densities=lowered_densities(model),
            fallback=_say_fallback(model, progress),
            graph=True,
            announce=_say(progress),
        )
    return x, estimate


KHAT_UNRELIABLE = 0.7  # Pareto k-hat above this: the importance weights' tail is too heavy to trust (Vehtari et al.)
WARN_SHARE = 0.1  # warn when more than this share of images has an unreliable estimate


def means_with_errors(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each per-example tensor as its mean and standard error (``key_se``), with ``n``, the number of examples."""
    n = next(iter(terms.values())).numel()
    out: dict[str, float] = {"n": n}
    for key, value in terms.items():
        out[key] = value.mean().item()
        out[f"{key}_se"] = (value.std() / math.sqrt(n)).item() if n > 1 else float("nan")
    return out


def describe(estimate: Any, method: str) -> dict[str, Any]:
    """What a report says of an estimate beside its numbers: the method, its seconds, and its own diagnostics
    (K and the Pareto k-hat for importance sampling; the chains' standard error for AIS)."""
    out: dict[str, Any] = {"method": method, "evidence_seconds": estimate.seconds}
    if method == "is":
        out["num_samples"] = estimate.num_samples
        k_hat = estimate.pareto_k[torch.isfinite(estimate.pareto_k)] if estimate.pareto_k is not None else None
        if k_hat is not None and k_hat.numel():  # NaN where K is too small for a tail fit
            out["khat_median"] = k_hat.median().item()
            out["khat_unreliable"] = (k_hat > KHAT_UNRELIABLE).double().mean().item()
    elif method == "ais":
        out["chain_se"] = estimate.standard_error.mean().item()
    return out


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
