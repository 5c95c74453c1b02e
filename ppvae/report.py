"""Markdown reports of runs: the numbers and the figures a person looks at first."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ppvae.atomic import write_text_atomic
from ppvae.estimator import LatentVariableModel, bits_per_dim, evidence
from ppvae.estimator.evidence import reliability_warning


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _evidence_label(scores: Mapping[str, Any]) -> str:
    """What the ``log_px`` row is: the estimator ``evaluate`` used."""
    method = scores.get("method", "is")
    if method == "ais":
        return f"log p(x), annealed importance sampling (chain noise ± {scores.get('chain_se', float('nan')):.2f})"
    if method == "quadrature":
        return "log p(x), quadrature (exact to its refinement error)"
    return f"log p(x), importance sampled (K = {scores.get('num_samples', '?')})"


def evaluation_table(
    scores: Mapping[str, float], x_dim: int, levels: int | None = None, point_mass: bool = False
) -> str:
    """Test ELBO and its parts per example, with standard errors, in nats; log p(x) and bits/dim where measured.

    ``levels=256`` for a density on grey levels scaled to [0, 1] (see `ppvae.bits_per_dim`). With
    ``point_mass`` (an autoencoder's guide) the rows say what its terms are: the objective at the code, which
    bounds nothing, and -log p(z) where a spread guide has its KL.
    """
    rows = ["| quantity | nats per example | standard error |", "| --- | --- | --- |"]
    labelled = [
        ("elbo", "log p(x|z) + log p(z) at the code (the objective; no bound: a point mass has no entropy)"),
        ("reconstruction", "reconstruction log p(x|z) at the code"),
        ("kl", "-log p(z) at the code"),
    ]
    if not point_mass:
        labelled = [("elbo", "ELBO"), ("reconstruction", "reconstruction log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")]
    labelled += [
        ("log_px", _evidence_label(scores)),
        ("gap", "log p(x) - ELBO" if not point_mass else "log p(x) - objective"),
        ("log_px_exact", "log p(x), exact"),
    ]
    for key, label in labelled:
        if key in scores:
            rows.append(f"| {label} | {_fmt(scores[key])} | {_fmt(scores[key + '_se'], 3)} |")
    if not point_mass:
        rows.append(f"| negative ELBO in bits per dimension | {bits_per_dim(scores['elbo'], x_dim, levels):.4f} | |")
    for key, label in (
        ("bits_per_dim", "negative log p(x) in bits per dimension"),
        ("bits_per_dim_exact", "negative exact log p(x) in bits per dimension"),
    ):
        if key in scores:
            rows.append(f"| {label} | {scores[key]:.4f} | |")
    if "accuracy" in scores:
        rows.append(
            f"| accuracy of q(y\\|x) on the labelled images (a share) | {scores['accuracy']:.4f} | "
            f"{_fmt(scores['accuracy_se'], 4)} |"
        )
    if "effective_sample_size" in scores:
        rows.append(f"| effective sample size of the K weights (mean) | {scores['effective_sample_size']:.1f} | |")
    if "khat_unreliable" in scores:
        rows.append(
            f"| Pareto k-hat: median, and share of images above 0.7 (unreliable) | {scores['khat_median']:.2f}, "
            f"{scores['khat_unreliable']:.0%} | |"
        )
    if "evidence_seconds" in scores:
        rows.append(f"| seconds to estimate log p(x) | {scores['evidence_seconds']:.1f} | |")
    warning = reliability_warning(scores.get("khat_unreliable", 0.0))
    return "\n".join(rows + ([f"\n{warning}."] if warning else []))


def history_table(history: list[dict[str, Any]]) -> str:
    rows = ["| epoch | train ELBO | test ELBO | test KL | seconds |", "| --- | --- | --- | --- | --- |"]
    for r in history:
        rows.append(
            f"| {r['epoch']} | {_fmt(r.get('train_elbo', float('nan')))} | {_fmt(r.get('test_elbo', float('nan')))} "
            f"| {_fmt(r.get('test_kl', float('nan')))} | {_fmt(r.get('seconds', float('nan')), 1)} |"
        )
    return "\n".join(rows)


def run_report(
    model: LatentVariableModel,
    directory: str | Path,
    scores: Mapping[str, float],
    title: str,
    notes: list[str] | None = None,
) -> Path:
    """Write ``report.md`` into a run folder that already holds the figures."""
    directory = Path(directory)
    fit = model.fit_record.options
    total_seconds = sum(r.get("seconds", 0.0) for r in model.history)
    lines = [
        f"# {title}",
        "",
        f"`{model!r}`, {model.num_parameters():,} parameters.",
        "",
        f"Trained for {len(model.history)} epochs ({total_seconds:.0f} s of training) on "
        f"{(model.fit_record.data_source or {}).get('dataset', 'the training data')} with binarisation "
        f"`{fit.get('binarize')}`, "
        f"objective `{fit.get('elbo')}`, batch {fit.get('batch_size')}, learning rate {fit.get('lr')}, seed "
        f"{fit.get('seed')}.",
        f"Measured on {platform.machine()} with {torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        f"## Test set ({int(scores['n'])} images)",
        "",
        evaluation_table(
            scores, model.x_dim, None if model.capabilities.binary else 256, point_mass=evidence.point_mass(model)
        ),
        "",
        "## Training",
        "",
        history_table(model.history),
        "",
    ]
    figures = [
        ("loss.png", "ELBO per epoch"),
        ("samples.png", "Samples from the prior"),
        ("reconstructions.png", "Test images and reconstructions"),
    ]
    for name, caption in figures:
        if (directory / name).exists():
            lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    for note in notes or []:
        lines += [note, ""]
    path = directory / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
