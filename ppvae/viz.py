"""Figures as PNG files: image grids, originals beside reconstructions, training curves.

A leaf module: it draws tensors and lists of numbers and imports nothing
from the rest of ppvae, so every layer may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def _show(ax, images: torch.Tensor, nrow: int) -> None:
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def image_grid(images: torch.Tensor, path: str | Path, title: str | None = None, nrow: int = 8) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one grid."""
    rows = -(-images.shape[0] // nrow)
    fig, ax = plt.subplots(figsize=(nrow * 0.9, rows * 0.9 + (0.4 if title else 0)))
    _show(ax, images, nrow)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def reconstruction_grid(
    originals: torch.Tensor, rows: Mapping[str, torch.Tensor], path: str | Path, title: str | None = None
) -> Path:
    """Originals on top, each named reconstruction below, image for image."""
    panels = {"original": originals, **rows}
    n = originals.shape[0]
    fig, axes = plt.subplots(len(panels), 1, figsize=(n * 0.75, 1.0 * len(panels) + 0.5), squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], panels.items()):
        _show(ax, images, nrow=n)
        ax.set_title(name, fontsize=9, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def history_plot(history: Sequence[Mapping[str, float]], path: str | Path, keys: Iterable[str] | None = None) -> Path:
    """ELBO per epoch (nats per example) for every ``*_elbo`` key in the history."""
    keys = list(keys or sorted({k for row in history for k in row if k.endswith("_elbo")}))
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key in keys:
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per example)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
