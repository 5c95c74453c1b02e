"""Markdown reports of runs: the numbers and the figures a person looks at first."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any, Mapping

import torch

from ppvae.models import LatentVariableModel


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def evaluation_table(scores: Mapping[str, float], x_dim: int) -> str:
    """Test ELBO and its parts per example, with standard errors, in nats (and the ELBO in bits/dim)."""
    rows = ["| quantity | nats per example | standard error |", "| --- | --- | --- |"]
    for key, label in (("elbo", "ELBO"), ("reconstruction", "reconstruction log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")):
        rows.append(f"| {label} | {_fmt(scores[key])} | {_fmt(scores[key + '_se'], 3)} |")
    bits = -scores["elbo"] / (x_dim * math.log(2))
    rows.append(f"| negative ELBO in bits per dimension | {bits:.4f} | |")
    return "\n".join(rows)


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
    fit = model.fit_config
    total_seconds = sum(r.get("seconds", 0.0) for r in model.history)
    lines = [
        f"# {title}",
        "",
        f"`{model!r}`, {model.num_parameters():,} parameters.",
        "",
        f"Trained for {len(model.history)} epochs ({total_seconds:.0f} s of training) on "
        f"{fit.get('dataset', 'the training data')} with binarisation `{fit.get('binarize')}`, "
        f"objective `{fit.get('elbo')}`, batch {fit.get('batch_size')}, learning rate {fit.get('lr')}, seed {fit.get('seed')}.",
        f"Measured on {platform.machine()} with {torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        f"## Test set ({int(scores['n'])} images)",
        "",
        evaluation_table(scores, model.x_dim),
        "",
        "## Training",
        "",
        history_table(model.history),
        "",
    ]
    figures = [("loss.png", "ELBO per epoch"), ("samples.png", "Samples from the prior"), ("reconstructions.png", "Test images and reconstructions")]
    for name, caption in figures:
        if (directory / name).exists():
            lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    for note in notes or []:
        lines += [note, ""]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path
