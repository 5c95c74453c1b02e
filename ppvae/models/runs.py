"""Run folders: everything needed to rebuild, inspect and continue a model.

    spec.json       the model's class and constructor arguments, how it was fitted, where its data came from
    weights.pt      the model's weights (the best epoch's when a validation set chose it), plain tensors
    checkpoint.pt   the last epoch's training state: weights, optimizer, epoch, step, seed, history
    metrics.jsonl   one JSON record per epoch
    logs/           the engine's loggers: csv/metrics.csv always, tensorboard/ when it is installed
    *.png           training curves, samples, reconstructions

Every file is written atomically (a temporary file in the same folder, fsync,
``os.replace``), so a kill at any moment leaves the previous version whole,
and a symlink in the folder is replaced, never followed. Weights go before
the spec. ``.pt`` files hold only tensors and plain containers:
``torch.load(..., weights_only=True)`` reads them.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ppvae import viz
from ppvae.models.registry import model_class

if TYPE_CHECKING:
    from ppvae.models.base import LatentVariableModel

SPEC, WEIGHTS, CHECKPOINT, METRICS = "spec.json", "weights.pt", "checkpoint.pt", "metrics.jsonl"
FORMAT_VERSION = 2


# -- atomic writes --------------------------------------------------------------------------------


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # replaces a symlink at ``path`` itself, never its target
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def save_figure_atomic(draw, path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Draw a figure with ``draw(..., path=<buffer>)`` and write its PNG atomically to ``path``."""
    buffer = io.BytesIO()
    draw(*args, buffer, **kwargs)
    return write_bytes_atomic(path, buffer.getvalue())


# -- metrics ----------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_text(history: list[dict[str, Any]]) -> str:
    return "".join(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n" for record in history)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- writing a run ----------------------------------------------------------------------------------


def spec_of(model: "LatentVariableModel") -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "model": type(model).__name__, "config": model.config(),
            "fit": model.fit_config, "data": model.data_source}  # fmt: skip


def save_figures(model: "LatentVariableModel", directory: Path) -> list[Path]:
    """Training curves, a grid of 64 samples and, if the fit saw test images, their reconstructions."""
    paths = []
    if any("_elbo" in k for row in model.history for k in row):
        paths.append(save_figure_atomic(viz.history_plot, directory / "loss.png", model.history))
    if model.samples_from_prior:
        samples = model.sample(64, seed=0).cpu()
        paths.append(save_figure_atomic(viz.image_grid, directory / "samples.png", samples,
                                        title=f"{type(model).__name__} samples"))  # fmt: skip
    if model.preview is not None and model.has_latent:
        recon = model.reconstruct(model.preview.to(model.device), y=model.preview_y).cpu()
        paths.append(save_figure_atomic(viz.reconstruction_grid, directory / "reconstructions.png", model.preview,
                                        {"reconstruction": recon}))  # fmt: skip
    return paths + model.draw_figures(directory)


def write_run(model: "LatentVariableModel", directory: Path, weights: dict[str, torch.Tensor] | None = None,
              checkpoint: dict[str, Any] | None = None, figures: bool = False) -> Path:  # fmt: skip
    """Write a run folder: spec, checkpoint, weights, metrics (in that order), then figures.

    The spec comes first because nothing can resume without it: a kill at any moment after the first
    epoch's checkpoint leaves a folder that ``resume=True`` continues.
    """
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / SPEC, json.dumps(spec_of(model), indent=2) + "\n")
    if checkpoint is not None:
        save_torch_atomic(checkpoint, directory / CHECKPOINT)
    if weights is None:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch_atomic({"state_dict": weights, "preview": model.preview, "preview_y": model.preview_y,
                       "snapshots": model.snapshots, "snapshot_labels": model.snapshot_labels}, directory / WEIGHTS)  # fmt: skip
    write_text_atomic(directory / METRICS, metrics_text(model.history))
    if figures:
        save_figures(model, directory)
    return directory


def save_run(model: "LatentVariableModel", directory: str | Path, figures: bool = True) -> Path:
    """Write the model as it is now: spec.json, weights.pt, metrics.jsonl, the training state and (with ``figures``) PNGs."""
    return write_run(model, Path(directory), checkpoint=model.training_state, figures=figures)


# -- reading a run ----------------------------------------------------------------------------------


def read_spec(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / SPEC
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a ppvae run folder: it has no {SPEC}")
    return json.loads(path.read_text())


def read_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The training state of a run folder, or None if it has none."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def data_source_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """Where a run's data came from (runs of format 1 kept it under ``fit``)."""
    return spec.get("data") or spec.get("fit", {}).get("data")


def build(spec: dict[str, Any], directory: str | Path = "the spec") -> "LatentVariableModel":
    """The untrained model a spec describes."""
    cls = model_class(spec.get("model"), f"{directory}/{SPEC}")
    return cls(**spec["config"])


def load(directory: str | Path, device: str | torch.device = "cpu") -> "LatentVariableModel":
    """Rebuild a model from its run folder: same class, same parts, same weights, same history."""
    directory = Path(directory)
    spec = read_spec(directory)
    model = build(spec, directory)
    saved = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["state_dict"])
    model.preview, model.preview_y = saved.get("preview"), saved.get("preview_y")
    model.snapshots, model.snapshot_labels = dict(saved.get("snapshots") or {}), saved.get("snapshot_labels")
    model.fit_config = spec.get("fit", {})
    model.data_source = data_source_of(spec)
    model.history = read_metrics(directory / METRICS)
    model.training_state = read_checkpoint(directory)
    return model.to(device).eval()
