"""``ppvae.plot(model, kind, test)``: each figure of the course material as one call, written as PNG.

Kinds (``KINDS``): ``scatter`` (latent means of test images by class), ``manifold`` (the decoded latent
plane), ``traverse`` (one dimension per row), ``interpolate`` (latent against pixel space),
``attribute`` (a class-difference vector added to images), ``uncertainty`` (posterior scales and
the spread of decoded draws) and ``training`` (the latent means at the epochs ``fit`` kept with
``snapshot_epochs``). ``ppvae plot RUN KIND ...`` draws them into a run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppvae import latent, viz
from ppvae.data import ImageDataset
from ppvae.estimator import LatentVariableModel

SHOWN = 2000  # test images in a scatter


def _labels_for(model: LatentVariableModel, test: ImageDataset) -> torch.Tensor | None:
    return test.y if model.capabilities.condition == "labels" else None


def _need_labels(test: ImageDataset, kind: str) -> None:
    if test is None or test.y is None:
        raise ValueError(f"the {kind} figure needs labelled test images")


def scatter(
    model: LatentVariableModel,
    test: ImageDataset,
    path: Path,
    projection: str | tuple[int, int] = "pca",
    seed: int = 0,
    **_: Any,
) -> Path:
    """Latent means of (up to 2,000) test images, coloured by class name; z_dim > 2 through ``projection``."""
    shown = test.subset(SHOWN)
    codes = latent.encodings(model, model.prepare(shown, seed=seed), _labels_for(model, shown))[0]
    points, axes = latent.project(codes, projection, seed)
    how = "" if model.z_dim <= 2 or isinstance(projection, tuple) else f" ({projection} of {model.z_dim} dimensions)"
    return viz.latent_planes(
        {f"{type(model).__name__}{how}": (points, shown.y)},
        path,
        class_names=shown.classes,
        axis_names=axes,
        title="Latent means of test images",
    )


def manifold(
    model: LatentVariableModel,
    test: ImageDataset | None,
    path: Path,
    steps: int = 15,
    dims: tuple[int, int] = (0, 1),
    y: Any = None,
    **_: Any,
) -> Path:
    """The decoded latent plane over dimensions ``dims``."""
    images, spacing = latent.manifold(
        model, steps, dims, None if test is None else model.prepare(test.subset(SHOWN)), y
    )
    title = f"Decoded grid over z{dims[0] + 1} (left to right) and z{dims[1] + 1} (bottom to top), {spacing}"
    return viz.image_grid(images.reshape(-1, *model.x_shape), path, title=title, nrow=steps)


def traverse(
    model: LatentVariableModel,
    test: ImageDataset | None,
    path: Path,
    steps: int = 9,
    span: float = 2.5,
    y: Any = None,
    **_: Any,
) -> Path:
    """Each latent dimension (up to 10, the most active first) swept from -span to span, the rest at 0."""
    dims = list(range(model.z_dim))
    if test is not None and model.z_dim > 10:
        variance = latent.active_units(
            model, model.prepare(test.subset(SHOWN)), _labels_for(model, test.subset(SHOWN))
        ).variance
        dims = variance.argsort(descending=True)[:10].tolist()
    rows = latent.traverse(model, dims[:10], steps, span, y=y)
    return viz.image_rows(
        {f"z{d + 1}": row for d, row in zip(dims, rows)},
        path,
        title=f"One latent dimension from -{span:g} to {span:g} per row, the others at 0",
    )


def interpolate(
    model: LatentVariableModel,
    test: ImageDataset,
    path: Path,
    pairs: int = 3,
    steps: int = 10,
    seed: int = 0,
    title: str = "From one test image to another: through the latent space, and by fading",
    **_: Any,
) -> Path:
    """Between pairs of test images (of different classes where labelled): in latent space and in pixel space;
    ``title`` names the model where two figures stand side by side."""
    x = model.prepare(test.subset(200), seed=seed)
    labels = test.y[:200] if test.y is not None else None
    rows = {}
    for i in range(pairs):
        a = 2 * i
        b = next((j for j in range(a + 1, len(x)) if labels is None or labels[j] != labels[a]), a + 1)
        y = labels[a] if model.capabilities.condition == "labels" else None
        latent_path, pixel_path = latent.interpolate(model, x[a], x[b], steps, y)
        rows[f"{i + 1}. through z"] = latent_path
        rows[f"{i + 1}. in pixels"] = pixel_path
    return viz.image_rows(rows, path, title=title)


def attribute(
    model: LatentVariableModel,
    test: ImageDataset,
    path: Path,
    source: int | str = "Sneaker",
    target: int | str = "Ankle boot",
    strengths=(0.0, 0.5, 1.0, 1.5),
    **_: Any,
) -> Path:
    """The mean latent of ``target`` minus that of ``source``, added to images of ``source``."""
    _need_labels(test, "attribute")
    data = ImageDataset(model.prepare(test), test.y, test.name, test.split, test.classes)
    s = latent.class_index(data, source)
    images = data.x[data.y == s][:6]
    moved = latent.attribute(model, data, source, target, images, strengths)
    names = data.classes or [str(i) for i in range(int(data.y.max()) + 1)]
    t = latent.class_index(data, target)
    rows = {f"z + {w:g} v": moved[:, i] for i, w in enumerate(strengths)}
    return viz.image_rows(rows, path, title=f"v = mean z of {names[t]} - mean z of {names[s]}")


def uncertainty(model: LatentVariableModel, test: ImageDataset, path: Path, seed: int = 0, **_: Any) -> Path:
    """Test images, the mean of images decoded from posterior draws, and the draws' pixel-wise standard
    deviation (white: the largest); the posterior's mean scale is in the title."""
    shown = test.subset(8)
    x = model.prepare(shown, seed=seed)
    scales, mean, std = latent.uncertainty(model, x, y=_labels_for(model, shown), seed=seed)
    rows = {
        "test images": x.cpu(),
        "mean of decoded draws from q(z | x)": mean,
        f"their pixel-wise spread (white: {std.max():.2f})": std / std.max().clamp_min(1e-8),
    }
    return viz.image_rows(rows, path, title=f"How sure the encoder is (posterior scale {scales.mean():.3f} on average)")


def training(
    model: LatentVariableModel, test: ImageDataset | None, path: Path, projection: str = "pca", seed: int = 0, **_: Any
) -> Path:
    """The kept latent means at each snapshot epoch (``fit(snapshot_epochs=...)``), side by side."""
    if not model.fit_record.snapshots:
        raise ValueError("the model kept no snapshots: train with snapshot_epochs=[1, 5, 10] (--snapshot-epochs)")
    labels = model.fit_record.snapshot_labels
    planes, axes = {}, ("", "")
    for epoch, codes in sorted(model.fit_record.snapshots.items()):
        points, axes = latent.project(codes, projection, seed)
        planes[f"epoch {epoch}"] = (points, labels)
    return viz.latent_planes(
        planes,
        path,
        class_names=getattr(test, "classes", None),
        axis_names=axes,
        title="Latent means of the same test images as training goes on",
    )


KINDS: dict[str, Callable[..., Path]] = {
    "scatter": scatter,
    "manifold": manifold,
    "traverse": traverse,
    "interpolate": interpolate,
    "attribute": attribute,
    "uncertainty": uncertainty,
    "training": training,
}


def plot(
    model: LatentVariableModel, kind: str, test: ImageDataset | None = None, out: str | Path = ".", **options: Any
) -> Path:
    """Draw figure ``kind`` for ``model`` into ``out``/<kind>.png; ``test``: labelled test images where the
    figure needs them (all but manifold, traverse and training)."""
    if kind not in KINDS:
        raise ValueError(f"unknown figure {kind!r}; choose from {', '.join(KINDS)}")
    if not model.capabilities.latent:
        raise ValueError(f"{type(model).__name__} has no latent space to draw")
    if test is None and kind in ("scatter", "interpolate", "attribute", "uncertainty"):
        raise ValueError(f"the {kind} figure needs test images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return KINDS[kind](model, test, out / f"{kind}.png", **options)
