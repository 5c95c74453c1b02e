"""``ppvae.sweep``: one model trained at several values of one setting, and what changes between them.

The course report's beta story and latent-capacity experiment in one call:

    ppvae.sweep(train, test, beta=[0.001, 0.1, 1, 4, 16, 1024], out="runs/beta")
    ppvae.sweep(train, test, z_dim=[2, 23], out="runs/capacity")

Each value gets its own run folder. The table holds the test ELBO, its reconstruction
and KL parts, log p(x) (importance-sampled), the active units and the k-NN class
accuracy of the latent means; the figures show samples per value, the per-dimension
variance of the latent means (units switching off as beta grows) and the latent
means of the test images in two dimensions, coloured by class.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ppvae import latent, viz
from ppvae.atomic import write_text_atomic
from ppvae.data import ImageDataset
from ppvae.estimator import LatentVariableModel
from ppvae.estimator.evidence import KHAT_UNRELIABLE, POINT_MASS_ELBO, POINT_MASS_EVIDENCE, point_mass
from ppvae.specs import build_model

SWEPT = ("beta", "z_dim")
COLUMNS = {  # key: (heading, format)
    "elbo": ("test ELBO", "{:.2f}"),
    "reconstruction": ("reconstruction", "{:.2f}"),
    "kl": ("KL", "{:.3f}"),
    "log_px": ("log p(x)", "{:.2f}"),
    "khat_unreliable": ("k-hat > 0.7", "{:.0%}"),
    "active_units": ("active units", "{}"),
    "knn_accuracy": ("k-NN accuracy", "{:.3f}"),
    "mean_variance": ("Var of means (mean over dims)", "{:.3g}"),
    "fit_seconds": ("fit (s)", "{:.0f}"),
}


@dataclass
class Sweep:
    """The swept ``parameter``, one row of scores per value, the models and the figures written."""

    parameter: str
    rows: list[dict[str, Any]]
    models: dict[Any, LatentVariableModel] = field(default_factory=dict, repr=False)
    figures: dict[str, Path] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.to_markdown()

    def to_markdown(self) -> str:
        keys = [k for k in COLUMNS if any(k in row for row in self.rows)]
        lines = [
            "| " + " | ".join([self.parameter, *(COLUMNS[k][0] for k in keys)]) + " |",
            "|" + " --- |" * (len(keys) + 1),
        ]
        for row in self.rows:
            cells = [f"{row['value']:g}"] + [COLUMNS[k][1].format(row[k]) if k in row else "—" for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        first = self.rows[0]
        notes = [
            f"Nats per test image over {first['n']} images.",
            f"Active units: dimensions with Var_x E[z_d | x] > {latent.ACTIVE_THRESHOLD}.",
        ]
        if "log_px" in keys:
            scored = next(row for row in self.rows if "log_px" in row)
            notes.insert(
                1,
                f"log p(x): importance sampling with K={scored['num_samples']} on the first "
                f"{scored['evidence_images']} images; k-hat > 0.7: the share of those whose estimate is "
                "unreliable (Pareto k-hat), where it is likely too low.",
            )
        if "knn_accuracy" in keys:
            notes.append(f"k-NN accuracy: the {first['k']} nearest training codes vote.")
        values: dict[str, list[str]] = {}  # each reason once, with the values it holds for
        for row in self.rows:
            for reason in row.get("left_out", []):
                values.setdefault(reason, []).append(f"{row['value']:g}")
        reasons = [f"\n{self.parameter} = {', '.join(v)}: {reason}." for reason, v in values.items()]
        return "\n".join(lines + ["", " ".join(notes), *reasons])


def _values(beta: Sequence[float] | None, z_dim: Sequence[int] | None) -> tuple[str, list]:
    given = {name: values for name, values in (("beta", beta), ("z_dim", z_dim)) if values is not None}
    if len(given) != 1:
        raise ValueError("sweep one setting: pass beta=[...] or z_dim=[...]")
    ((parameter, values),) = given.items()
    values = list(values)
    if not values:
        raise ValueError(f"no values of {parameter} to sweep")
    shown: dict[str, Any] = {}
    for value in values:  # each value names its run folder and its row: two that print alike would share them
        if f"{value:g}" in shown:
            raise ValueError(
                f"{parameter} values {shown[f'{value:g}']!r} and {value!r} both print as {value:g}, and would share "
                "one run folder and one row: give values that differ within 6 significant digits"
            )
        shown[f"{value:g}"] = value
    return parameter, values


def _value_name(parameter: str, value: float) -> str:
    return f"{parameter}-{value:g}"


def sweep(
    train: ImageDataset,
    test: ImageDataset,
    *,
    beta: Sequence[float] | None = None,
    z_dim: Sequence[int] | None = None,
    model: str = "VAE",
    model_options: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    num_samples: int = 1000,
    evidence_images: int = 1000,
    k: int = 5,
    knn_train: int = 10_000,
    projection: str = "pca",
    seed: int = 0,
    progress: bool = True,
) -> Sweep:
    """Train ``model`` (a name, as in a spec's ``[model]`` table, with ``model_options``) at each value of
    ``beta`` or ``z_dim``, and score each on ``test``: its first ``evidence_images`` for log p(x) with K =
    ``num_samples`` (0 skips it), all of it for the rest. k-NN accuracy classifies the test images by the
    ``k`` nearest of the first ``knn_train`` training images in latent space. With ``out``, each model's
    run folder is ``out/<parameter>-<value>``, beside sweep.md, sweep.json and the figures; to run a sweep again
    into the same ``out``, pass ``fit_options={"overwrite": True}``."""
    parameter, values = _values(beta, z_dim)
    out = Path(out) if out is not None else None
    fit_options = {"progress": progress, "seed": seed, **(fit_options or {})}
    labelled = train.y is not None and test.y is not None
    rows, models, variances, planes = [], {}, {}, {}
    for value in values:
        spec = {"name": model, **(model_options or {}), parameter: value}
        instance = build_model(spec, train.shape, train)
        if not instance.capabilities.latent:
            raise ValueError(f"{type(instance).__name__} has no latent space to sweep")
        if progress:
            print(f"{parameter}={value:g}: {instance!r}", flush=True)
        started = time.perf_counter()
        instance.fit(train, test=test, out=None if out is None else out / _value_name(parameter, value), **fit_options)
        row: dict[str, Any] = {"value": value, "fit_seconds": time.perf_counter() - started}
        scores = instance.evaluate(test, seed=seed)
        row.update(n=scores["n"], reconstruction=scores["reconstruction"])
        if point_mass(instance):  # an autoencoder: no bound, and no proposal for importance sampling
            row["left_out"] = [f"no ELBO or KL: {POINT_MASS_ELBO}", POINT_MASS_EVIDENCE]
        else:
            row.update(elbo=scores["elbo"], kl=scores["kl"])
        if num_samples and not point_mass(instance):
            scored = test.subset(evidence_images)
            estimate = instance.log_evidence(scored, num_samples, seed=seed, diagnostics=True, progress=progress)
            row.update(
                log_px=estimate.log_evidence.mean().item(),
                num_samples=num_samples,
                evidence_images=len(scored),
                khat_unreliable=(estimate.pareto_k > KHAT_UNRELIABLE).double().mean().item(),
            )
        x_test = instance.prepare(test, seed=seed)
        takes_labels = instance.capabilities.condition == "labels"
        labels = test.y if takes_labels else None
        units = latent.active_units(instance, x_test, labels)
        row.update(active_units=units.count, mean_variance=units.variance.mean().item())
        codes = latent.encodings(instance, x_test, labels)[0]
        if labelled:
            known = train.subset(knn_train)
            train_codes = latent.encodings(
                instance, instance.prepare(known, seed=seed), known.y if takes_labels else None
            )[0]
            row.update(knn_accuracy=latent.knn_accuracy(train_codes, known.y, codes, test.y, k), k=k)
        rows.append(row)
        models[value] = instance
        variances[f"{parameter}={value:g}"] = units.variance
        planes[f"{parameter}={value:g}"] = codes
    result = Sweep(parameter, rows, models)
    if out is not None:
        result.figures = _figures(result, test, variances, planes, out, projection, seed)
        write_text_atomic(out / "sweep.md", result.to_markdown() + "\n")
        write_text_atomic(out / "sweep.json", json.dumps({"parameter": parameter, "rows": rows}, indent=2) + "\n")
    return result


def _figures(
    result: Sweep,
    test: ImageDataset,
    variances: dict[str, torch.Tensor],
    codes: dict[str, torch.Tensor],
    out: Path,
    projection: str,
    seed: int,
) -> dict[str, Path]:
    """samples.png (a row per value), variance.png (bars per value) and latent.png (test means in 2-D)."""
    out.mkdir(parents=True, exist_ok=True)
    shown = slice(0, 2000)
    samples = {
        f"{result.parameter}={value:g}": model.sample(12, seed=seed).cpu() for value, model in result.models.items()
    }
    planes, axes = {}, ("", "")
    for name, z in codes.items():
        points, axes = latent.project(z[shown], projection, seed)
        planes[name] = (points, None if test.y is None else test.y[shown])
    return {
        "samples": viz.image_rows(samples, out / "samples.png", title=f"Samples at each {result.parameter}"),
        "variance": viz.variance_bars(
            variances, out / "variance.png", title="Variance of latent means per dimension (dashed: active)"
        ),
        "latent": viz.latent_planes(
            planes, out / "latent.png", class_names=test.classes, axis_names=axes, title="Latent means of test images"
        ),
    }
