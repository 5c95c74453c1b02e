"""A run's figures: training curves, samples, reconstructions, and what the model's own kind adds.

Each is drawn into memory and written atomically, so a run folder never holds half a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ppvae import viz
from ppvae.estimator.contract import FitRecord
from ppvae.estimator.files import write_bytes_atomic


def save_figure_atomic(draw, path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Draw a figure with ``draw(..., path=<buffer>)`` and write its PNG atomically to ``path``."""
    buffer = io.BytesIO()
    draw(*args, buffer, **kwargs)
    return write_bytes_atomic(path, buffer.getvalue())


def run_figures(model: Any, record: FitRecord, directory: Path) -> list[Path]:
    """Training curves, a grid of 64 samples and, if the fit saw test images, their reconstructions,
    then the model's own (``draw_figures``)."""
    paths = []
    if any("_elbo" in k for row in record.history for k in row):
        paths.append(save_figure_atomic(viz.history_plot, directory / "loss.png", record.history))
    if model.capabilities.samples_from_prior:
        samples = model.sample(64, seed=0).cpu()
        title = f"{type(model).__name__} samples"
        paths.append(save_figure_atomic(viz.image_grid, directory / "samples.png", samples, title=title))
    if record.preview is not None and model.capabilities.latent:
        preview = record.preview.to(model.device)
        recon = model.reconstruct(preview, y=record.preview_y, binarize=None).cpu()
        paths.append(
            save_figure_atomic(
                viz.reconstruction_grid, directory / "reconstructions.png", record.preview, {"reconstruction": recon}
            )
        )
    return paths + model.draw_figures(directory, record)
