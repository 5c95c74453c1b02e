"""``ppvae.compare``: several models on one test set, side by side, on numbers that mean the same thing.

Densities compare only on the same representation of the data. A model with
a binary likelihood scores the test images binarised (one fixed, seeded
draw); a model with a continuous likelihood scores them dequantised,
(pixel + u) / 256, also seeded, so every continuous model sees the same
values. The table says which each model saw; nats and bits per dimension
compare within a representation, not across. log p(x) comes from the
estimator the comparison is given (``method``): by default the closed form
where a model has one (factor analysis) and importance sampling otherwise;
``method="ais"`` (or "is", "quadrature", "exact") scores every model by that
one estimator. Models are ranked by it within each representation, and the
table names it beside every number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppvae import latent, viz
from ppvae.data import Data, ImageDataset, as_images, dequantize
from ppvae.estimator import LatentVariableModel, bits_per_dim
from ppvae.estimator.evidence import (
    METHOD_OPTIONS,
    POINT_MASS_ELBO,
    POINT_MASS_EVIDENCE,
    default_method,
    point_mass,
    reliability_warning,
)

LEVELS = 256
MMD_IMAGES = 1000  # samples and test images in the maximum mean discrepancy


@dataclass
class Comparison:
    """One row of scores per model and the figures written, with a markdown rendering."""

    rows: list[dict[str, Any]]
    figures: dict[str, Path] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.to_markdown()

    def to_markdown(self) -> str:
        header = [
            "model",
            "data",
            "log p(x) (nats)",
            "rank",
            "method",
            "k-hat > 0.7",
            "bits/dim",
            "ELBO (nats)",
            "squared error",
            "MMD² samples-test",
            "parameters",
            "fit (s)",
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        blanks = any(r.get("left_out") for r in self.rows)
        for r in self.rows:
            khat = r.get("khat_unreliable")
            cells = [
                r["model"],
                r["data"],
                _estimate(r["log_px"], r["log_px_se"]),
                _blank(r["rank"], "{}"),
                r["method"],
                _blank(khat, "{:.0%}"),
                _blank(r["bits_per_dim"], "{:.4f}"),
                _estimate(r["elbo"], r["elbo_se"]),
                f"{r['squared_error']:.2f}",
                f"{r['sample_mmd']:.4f}",
                f"{r['parameters']:,}",
                f"{r['fit_seconds']:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Per test image, mean ± standard error over {self.rows[0]['n']} images. log p(x) and bits/dim "
            "compare only between models on the same data: binarised pixels (a probability) or "
            "dequantised pixels (a density; bits/dim on the 0-255 scale); rank: by log p(x) among the models on "
            "the same data, by the estimator named in the method column. Squared error: "
            "sum over pixels of (reconstruction - image)^2 on the model's own data. MMD²: maximum mean "
            f"discrepancy (Gaussian kernel, median-heuristic bandwidth) between up to {MMD_IMAGES} samples "
            "(their means E[x | z]) and as many test images in grey levels; lower is closer. k-hat > 0.7: the "
            "share of images whose importance weights are too heavy-tailed to trust (Pareto k-hat; — where "
            "log p(x) is not importance-sampled)."
            + (" Other blanks (—) are numbers that mean nothing for that model; the reason follows." if blanks else ""),
        ]
        lines += [f"\n{r['model']}: {reason}." for r in self.rows for reason in r.get("left_out", [])]
        lines += [
            f"\n{r['model']}: {w}."
            for r in self.rows
            if (w := reliability_warning(r.get("khat_unreliable") or 0.0, r.get("z_dim")))
        ]
        return "\n".join(lines)


def _blank(value: Any, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _estimate(mean: float | None, se: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f} ± {se:.2f}"


def _representation(model: LatentVariableModel, test: Data, seed: int) -> tuple[str, Data]:
    if model.capabilities.binary:
        return "binarised", test
    try:
        return "dequantised", dequantize(test, LEVELS, seed)
    except ValueError:  # not 256-level pixels in [0, 1]: already continuous, or another scale
        return "as given", test


def _named(models: Mapping[str, LatentVariableModel] | Sequence[LatentVariableModel]) -> dict[str, LatentVariableModel]:
    if isinstance(models, Mapping):
        return dict(models)
    names: dict[str, LatentVariableModel] = {}
    for model in models:
        name = type(model).__name__
        names[name if name not in names else f"{name} {len(names) + 1}"] = model
    return names


def _method_label(method: str, num_samples: int, options: dict[str, Any]) -> str:
    start = "" if options.get("proposal", "guide") == "guide" else f", from the {options['proposal']}"
    if method == "is":
        return f"IS, K={num_samples}{start}"
    if method == "ais":
        settings = {**METHOD_OPTIONS["ais"], **options}
        return f"AIS, {settings['chains']}x{settings['steps']}{start}"
    return method


NO_DENSITY = (
    "no log p(x) and no ELBO: a denoising autoencoder models an image given its corruption, p(x | x~), and "
    "samples by a chain"
)


def score(
    model: LatentVariableModel,
    test: Data,
    num_samples: int | None = 1000,
    seed: int = 0,
    progress: bool = True,
    method: str | None = None,
    **evidence_options: Any,
) -> dict[str, Any]:
    """One model's row: log p(x) by ``method`` (by default the model's best: exact or IS), ELBO, bits/dim,
    squared reconstruction error, sample MMD, parameters, fit time.

    ``num_samples=0`` (or None) with no other ``method`` leaves log p(x) out. Numbers that mean nothing for
    a model are None, with the reason in ``left_out``: an autoencoder (a point-mass guide) has no ELBO,
    and no importance-sampled log p(x) unless its proposals come from the prior.
    """
    data_kind, data = _representation(model, test, seed)
    x = model.prepare(data, "auto", seed)
    labels = data.y if isinstance(data, ImageDataset) and model.capabilities.condition == "labels" else None
    method = method or (default_method(model) if num_samples or default_method(model) == "exact" else None)
    left_out = []
    if not model.capabilities.density:
        left_out.append(NO_DENSITY)
        method = None
    elif method is None:
        left_out.append("log p(x) not asked for (num_samples=0)")
    elif point_mass(model) and evidence_options.get("proposal", "guide") != "prior":
        left_out.append(POINT_MASS_EVIDENCE)
        method = None
    scores = model.evaluate(
        x,
        y=labels,
        binarize=None,
        seed=seed,
        num_samples=num_samples if method == "is" else None,
        method=method,
        progress=progress,
        **(evidence_options if method is not None else {}),
    )
    key = "log_px_exact" if method == "exact" else "log_px"
    log_px = scores.get(key)
    elbo = None if point_mass(model) or not model.capabilities.density else scores["elbo"]
    if point_mass(model):
        left_out.append(f"no ELBO: {POINT_MASS_ELBO}")
    reconstruction = model.reconstruct(x, y=labels)
    squared_error = (reconstruction - x).pow(2).flatten(1).sum(1).mean().item()
    n = min(MMD_IMAGES, scores["n"])
    originals = as_images(test, model.x_shape)[:n]  # grey levels, as a person sees them, for every model alike
    sample_mmd = latent.mmd(model.sample(n, seed=seed).clamp(0, 1).cpu(), originals)
    return {
        "data": data_kind,
        "n": scores["n"],
        "log_px": log_px,
        "log_px_se": scores.get(f"{key}_se"),
        "method": "—" if method is None else _method_label(method, num_samples or 1000, evidence_options),
        "khat_unreliable": scores.get("khat_unreliable"),
        "z_dim": sum(model.latent_sizes.values()),  # in all, over the layers of a hierarchy
        "bits_per_dim": None
        if log_px is None
        else bits_per_dim(log_px, model.x_dim, None if data_kind == "binarised" else LEVELS),
        "elbo": elbo,
        "elbo_se": None if elbo is None else scores["elbo_se"],
        "squared_error": squared_error,
        "sample_mmd": sample_mmd,
        "parameters": model.num_parameters(),
        "fit_seconds": sum(r.get("seconds", 0.0) for r in model.history),
        "left_out": left_out,
    }


def compare(
    models: Mapping[str, LatentVariableModel] | Sequence[LatentVariableModel],
    test: Data,
    num_samples: int | None = 1000,
    out: str | Path | None = None,
    num_images: int = 10,
    seed: int = 0,
    progress: bool = True,
    show: bool = True,
    method: str | None = None,
    **evidence_options: Any,
) -> Comparison:
    """Score every model on ``test`` and (with ``out``) write side-by-side figures.

    log p(x) comes from ``method`` ("is" with K = ``num_samples``, "ais", "quadrature", "exact"; by
    default each model's best: exact where it has a closed form, IS otherwise; ``num_samples=0`` skips IS)
    with that method's ``evidence_options`` (``chains=``, ``steps=``, ``proposal=``); the table ranks the
    models by it and names it. Numbers that mean nothing for a model (an autoencoder's ELBO) are left
    blank, with the reason under the table.

    ``models`` is a dict of name to model, or a list (named by class). Figures:
    ``samples.png`` (each model's samples from the prior), ``reconstructions.png``
    (the same test images through every model) and, for models with z_dim = 2,
    ``latent.png`` (encoded test images, coloured by label). With ``show`` the markdown table
    is printed.
    """
    named = _named(models)
    if not named:
        raise ValueError("compare needs at least one model")
    shapes = {m.x_shape for m in named.values()}
    if len(shapes) > 1:
        raise ValueError(f"the models take images of different shapes {sorted(shapes)}; compare needs one test set")
    rows = [
        {"model": name, **score(model, test, num_samples, seed, progress, method, **evidence_options)}
        for name, model in named.items()
    ]
    for row in rows:
        row["rank"] = _rank(row, rows)
    comparison = Comparison(rows)
    if out is not None:
        comparison.figures = _figures(named, test, Path(out), num_images, seed)
    if show:
        print(comparison.to_markdown())
    return comparison


def _rank(row: dict[str, Any], rows: list[dict[str, Any]]) -> int | None:
    """1 for the highest log p(x) among the models scored on the same data; None for a row without one."""
    if row["log_px"] is None:
        return None
    better = [o for o in rows if o["data"] == row["data"] and o["log_px"] is not None and o["log_px"] > row["log_px"]]
    return 1 + len(better)


def _figures(
    named: dict[str, LatentVariableModel], test: Data, out: Path, num_images: int, seed: int
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(named.values()))
    images = test.x if isinstance(test, ImageDataset) else as_images(test, first.x_shape)
    labels = test.y if isinstance(test, ImageDataset) else None
    plane = slice(0, 2000)  # test images shown in the latent plane
    samples, reconstructions, planes = {}, {}, {}
    for name, model in named.items():
        x = model.prepare(_representation(model, test, seed)[1], "auto", seed)
        y = labels if model.capabilities.condition == "labels" else None
        samples[name] = model.sample(num_images, seed=seed).cpu()
        reconstructions[name] = model.reconstruct(x[:num_images], y=None if y is None else y[:num_images]).cpu()
        if model.z_dim == 2:
            codes = model.encode(x[plane], y=None if y is None else y[plane])
            planes[name] = (codes, None if labels is None else labels[plane])
    figures = {
        "samples": viz.image_rows(samples, out / "samples.png", title="Samples from each model's prior"),
        "reconstructions": viz.reconstruction_grid(
            images[:num_images],
            reconstructions,
            out / "reconstructions.png",
            title="The same test images through each model",
        ),
    }
    if planes:
        figures["latent"] = viz.latent_planes(planes, out / "latent.png", class_names=getattr(test, "classes", None))
    return figures
