"""Run folders: everything needed to rebuild, inspect and continue a model.

    spec.json       the model's class and constructor arguments, and how it was fitted
    weights.pt      the state dict, plain tensors (torch.load(..., weights_only=True))
    metrics.jsonl   one JSON record per epoch
    *.png           training curves, samples, reconstructions
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ppvae import viz

if TYPE_CHECKING:
    from ppvae.models.base import LatentVariableModel

SPEC, WEIGHTS, METRICS = "spec.json", "weights.pt", "metrics.jsonl"
FORMAT_VERSION = 1


def model_classes() -> dict[str, type]:
    from ppvae.models import MODELS

    return MODELS


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for record in history:
            f.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_figures(model: "LatentVariableModel", directory: Path) -> list[Path]:
    """Training curves, a grid of 64 samples and, if the fit saw test images, their reconstructions."""
    paths = []
    if any("_elbo" in k for row in model.history for k in row):
        paths.append(viz.history_plot(model.history, directory / "loss.png"))
    paths.append(viz.image_grid(model.sample(64, seed=0).cpu(), directory / "samples.png", title=f"{type(model).__name__} samples"))
    preview = getattr(model, "preview", None)
    if preview is not None:
        recon = model.reconstruct(preview.to(model.device)).cpu()
        paths.append(viz.reconstruction_grid(preview, {"reconstruction": recon}, directory / "reconstructions.png"))
    return paths


def save_run(model: "LatentVariableModel", directory: str | Path, figures: bool = True) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "format": FORMAT_VERSION,
        "model": type(model).__name__,
        "config": model.config(),
        "fit": model.fit_config,
    }
    (directory / SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    preview = getattr(model, "preview", None)
    torch.save({"state_dict": state, "preview": preview}, directory / WEIGHTS)
    write_metrics(directory / METRICS, model.history)
    if figures:
        save_figures(model, directory)
    return directory


def read_spec(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / SPEC
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a ppvae run folder: it has no {SPEC}")
    return json.loads(path.read_text())


def load(directory: str | Path, device: str | torch.device = "cpu") -> "LatentVariableModel":
    """Rebuild a model from its run folder: same class, same parts, same weights, same history."""
    directory = Path(directory)
    spec = read_spec(directory)
    classes = model_classes()
    if spec.get("model") not in classes:
        raise ValueError(f"{directory}/{SPEC} names model {spec.get('model')!r}; known: {', '.join(classes)}")
    model = classes[spec["model"]](**spec["config"])
    saved = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["state_dict"])
    if saved.get("preview") is not None:
        model.preview = saved["preview"]
    model.fit_config = spec.get("fit", {})
    model.history = read_metrics(directory / METRICS)
    return model.to(device).eval()
