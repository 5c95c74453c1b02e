"""Figures as PNG files: image grids, originals beside reconstructions, training curves.

A leaf module: it draws tensors and lists of numbers and imports nothing
from the rest of ppvae but the atomic writer, so every layer may use it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import matplotlib
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torchvision.utils import make_grid

from ppvae.atomic import write_bytes_atomic


def _show(ax, images: torch.Tensor, nrow: int) -> None:
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()


def _figure(rows: int = 1, cols: int = 1, figsize: tuple[float, float] = (5.5, 3.5)):
    """A figure outside pyplot: no window, no global backend switch, nothing left open in a notebook."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig: Figure, path: str | Path | BinaryIO, tight: bool = True) -> Path | BinaryIO:
    """Save as PNG to a path or an open binary file (the run folder writes through a buffer, atomically)."""
    if tight:
        fig.tight_layout()
    if not isinstance(path, (str, Path)):
        fig.savefig(path, dpi=100, format="png")
        return path
    buffer = io.BytesIO()  # drawn whole in memory, then written atomically: never half a PNG, never through a link
    fig.savefig(buffer, dpi=100, format="png")
    return write_bytes_atomic(path, buffer.getvalue())


def image_grid(images: torch.Tensor, path: str | Path, title: str | None = None, nrow: int = 8) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one grid."""
    rows = -(-images.shape[0] // nrow)
    fig, axes = _figure(figsize=(nrow * 0.9, rows * 0.9 + (0.4 if title else 0)))
    ax = axes[0, 0]
    _show(ax, images, nrow)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def image_rows(rows: Mapping[str, torch.Tensor], path: str | Path, title: str | None = None) -> Path:
    """One named row of images (N, C, H, W) per entry, image for image, top to bottom."""
    n = max(images.shape[0] for images in rows.values())
    fig, axes = _figure(len(rows), 1, figsize=(n * 0.75, 1.0 * len(rows) + 0.5))
    for ax, (name, images) in zip(axes[:, 0], rows.items()):
        _show(ax, images, nrow=n)
        ax.set_title(name, fontsize=9, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def reconstruction_grid(
    originals: torch.Tensor, rows: Mapping[str, torch.Tensor], path: str | Path, title: str | None = None
) -> Path:
    """Originals on top, each named reconstruction below, image for image."""
    return image_rows({"original": originals, **rows}, path, title)


def _scatter_by_class(ax, z: torch.Tensor, labels: torch.Tensor | None, class_names: Sequence[str] | None) -> None:
    """Points (N, 2), one colour and legend entry per class (named where names are given)."""
    z = z.detach().cpu()
    if labels is None:
        ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), s=3, alpha=0.6)
        return
    labels = labels.detach().cpu()
    colours = matplotlib.colormaps["tab10" if int(labels.max()) < 10 else "tab20"]
    for k in labels.unique().tolist():
        chosen = labels == k
        name = class_names[k] if class_names is not None and k < len(class_names) else str(k)
        ax.scatter(z[chosen, 0].numpy(), z[chosen, 1].numpy(), s=3, alpha=0.6, color=colours(k % colours.N), label=name)


def latent_planes(
    points: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    axis_names: tuple[str, str] = ("z1", "z2"),
    title: str | None = None,
) -> Path:
    """Side-by-side scatter plots of 2-D codes (N, 2), coloured by class with a legend of class names."""
    fig, axes = _figure(1, len(points), figsize=(4.2 * len(points) + 1.2, 4.2))
    for ax, (name, (z, labels)) in zip(axes[0], points.items()):
        _scatter_by_class(ax, z, labels, class_names)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
        ax.grid(alpha=0.3)
    if any(labels is not None for _, labels in points.values()):
        handles, names = axes[0, -1].get_legend_handles_labels()
        fig.legend(handles, names, loc="center right", markerscale=4, fontsize=8, frameon=False)
        fig.subplots_adjust(right=1 - 1.3 / (4.2 * len(points) + 1.2))  # the legend's 1.3 inches, whatever the width
    fig.subplots_adjust(wspace=0.35)  # room for each panel's axis label beside its neighbour's tick labels
    if title:
        fig.suptitle(title)
    return _save(fig, path, tight=False)


def variance_bars(
    panels: Mapping[str, torch.Tensor], path: str | Path, threshold: float | None = 0.01, title: str | None = None
) -> Path:
    """Per-dimension variance of the latent means, one bar chart per entry, log scale, with the
    active-unit threshold as a line: the report's picture of units switching off as beta grows."""
    fig = Figure(figsize=(max(5.0, 2.6 * len(panels) + 0.6), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)  # one scale: bars compare across panels
    for ax, (name, variance) in zip(axes[0], panels.items()):
        variance = variance.detach().cpu().double().clamp_min(1e-8)
        ax.bar(range(1, variance.numel() + 1), variance.numpy(), color="tab:blue")
        ax.set_yscale("log")
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linewidth=1, linestyle="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("dimension")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylabel("Var_x E[z_d | x]")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def history_plot(history: Sequence[Mapping[str, float]], path: str | Path, keys: Iterable[str] | None = None) -> Path:
    """ELBO per epoch (nats per example) for every ``*_elbo`` key in the history."""
    keys = list(keys or sorted({k for row in history for k in row if k.endswith("_elbo")}))
    fig, axes = _figure()
    ax = axes[0, 0]
    for key in keys:
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per example)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
