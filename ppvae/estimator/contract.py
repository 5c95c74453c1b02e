"""The written contract: what the estimator machinery (fitting, run folders, evidence) may use of a model.

A model is two Pyro programs with its sample sites in a plate named ``"data"``,

    model(x, c=None, kl_weight=1.0)        p(z | c) p(x | z, c)
    guide(x, c=None, kl_weight=1.0)        q(z | x, c)

any number of latent sites among them, plus the few members `Model` lists: one
`Capabilities` line, the one condition hook, and the views of its parts that
figures and ``encode`` need. What a fit leaves behind is one `FitRecord`. The
machinery reads nothing else of a model and never names a model class; a new model
is its programs, its capabilities line, and the contract test (``tests/test_contract.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

ConditionKind = Literal["none", "labels", "images"]
CONDITION_KINDS = ("none", "labels", "images")


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, set once per class (and refined per instance only where a part decides).

    ``latent``: it has latent sample sites (a network without them has an ELBO that is its likelihood).
    ``samples_from_prior``: ``sample(n)`` draws images from nothing (a completion model needs visible pixels).
    ``exact_evidence``: ``exact_log_evidence`` has a closed form (factor analysis).
    ``binary``: its likelihood is over binary pixels (Bernoulli), so grey images are binarised.
    ``proposal``: its guide has a density at every point, so it can propose for importance sampling and
    start AIS (a point-mass guide cannot).
    ``scores_any_point``: its guide scores points it did not draw, as AIS from the guide and the defensive
    proposal need (a flow guide whose transforms have no inverse scores only its own draws).
    ``condition``: what ``c`` is built from: ``"none"``, ``"labels"`` (class labels y) or ``"images"``
    (the visible part of each image).
    ``latent_labels``: the label is a sample site of the model, observed where it is known and summed out
    where it is not (M2): labels may be missing (-1), training enumerates them (``TraceEnum_ELBO``), and
    log p(x) without labels is the sum over the classes of log p(x, y).
    ``density``: log p(x) is defined, so the evidence estimators apply; a denoising autoencoder's p(x | x~) is
    a conditional of the image given its corruption, no density of x (its samples come from a chain).
    ``selected_by``: the held-out figure, larger is better, that chooses the best epoch under validation
    and that early stopping watches: ``"elbo"``, or ``"accuracy"`` for a model that classifies.
    """

    latent: bool = True
    samples_from_prior: bool = True
    exact_evidence: bool = False
    binary: bool = False
    proposal: bool = True
    scores_any_point: bool = True
    condition: ConditionKind = "none"
    latent_labels: bool = False
    density: bool = True
    selected_by: str = "elbo"

    def __post_init__(self) -> None:
        if self.condition not in CONDITION_KINDS:
            raise ValueError(f"condition must be one of {CONDITION_KINDS}, got {self.condition!r}")
        if self.latent_labels and self.condition != "labels":
            raise ValueError("latent_labels needs condition='labels': the label is what the model may observe")


@dataclass
class FitRecord:
    """What fitting leaves on a model besides its weights; fitting returns a new one, so a failed fit
    puts back the weights and this one attribute.

    ``options``: the options of the fit as the run folder records them (``binarize`` among them);
    ``data_source``: where the training data came from, when known; ``training_state``: optimizer,
    epoch and step, for ``resume=True``; ``preview`` / ``preview_y``: a few test images (and labels)
    for the reconstruction figure; ``snapshots``: epoch -> latent means of the first test images, with
    ``snapshot_labels``; ``folder``: the run folder it was fitted into, loaded from or saved to.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    data_source: dict[str, Any] | None = None
    training_state: dict[str, Any] | None = None
    preview: torch.Tensor | None = None
    preview_y: torch.Tensor | None = None
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    snapshot_labels: torch.Tensor | None = None
    folder: Path | None = None

    def copy(self) -> FitRecord:
        """A copy whose history, options and snapshots can grow without touching this one."""
        return dataclasses.replace(
            self, history=list(self.history), options=dict(self.options), snapshots=dict(self.snapshots)
        )


class Model(Protocol):
    """The members of a model the machinery uses: a subclass of ``LatentVariableModel`` writes those above the
    last comment; the base class provides the rest."""

    capabilities: Capabilities
    x_shape: tuple[int, ...]
    x_dim: int
    beta: float
    num_classes: int
    classes: list[str] | None  # the class names, where known (labels may be given by name)
    fit_record: FitRecord
    latent_sizes: dict[str, int]  # each continuous latent site's size, the one next to x first (several: a hierarchy)
    training_arguments: dict[str, Any]  # what the programs take in training beside kl_weight ({} for most)

    def model(self, x: torch.Tensor | None = None, c: torch.Tensor | None = None, kl_weight: float = 1.0): ...

    def guide(self, x: torch.Tensor | None = None, c: torch.Tensor | None = None, kl_weight: float = 1.0): ...

    def condition(self, x: torch.Tensor | None, y: torch.Tensor | None, train: bool = False) -> torch.Tensor | None:
        """The ``c`` the programs take for images ``x`` (as scored: binarised) and labels ``y``: always called,
        never guarded. None for a model without a condition; one-hot labels; or the visible part of each
        image (in training, ``train=True``, a completion model draws which quadrants are visible)."""

    def config(self) -> dict[str, Any]: ...

    def check_data(self, x: torch.Tensor) -> None: ...

    def initialize(self, x: torch.Tensor) -> None: ...

    def draw_figures(self, directory: Path, record: FitRecord) -> list[Path]: ...

    def likelihood_mean(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, c] for codes of the site ``encode`` returns (samples and reconstructions)."""

    def exact_log_evidence(self, data: Any) -> torch.Tensor | None: ...

    # What LatentVariableModel gives every model, and the machinery calls back: the data door
    # (images, prepare, resolve_binarize, condition_for, sample_labels), reset_parameters, and the
    # estimator API (evaluate, encode, reconstruct, sample) that scores held-out data and draws figures.


def labels_for(
    model: Model, data: Any, y: Any = None, scoring: bool = False, count: int | None = None
) -> torch.Tensor | None:
    """The labels the machinery hands the condition hook for ``data``: ``y``, else the dataset's, for a model
    conditioned on labels (checked once here: class indices in 0..num_classes-1, or names from the model's
    ``classes`` where it has them; one label, given for ``count`` images, stands for each); None for any other
    model.

    A model whose label is latent takes -1 for an unknown label, and, ``scoring`` (encode, the ELBO, log p(x)),
    reads labels only from ``y``: a labelled test set is scored as images, p(x) with the label summed out,
    which compares with every other model; ``y=`` asks for p(x, y)."""
    if model.capabilities.condition != "labels":
        return None
    if y is None and not (scoring and model.capabilities.latent_labels):
        y = getattr(data, "y", None)
    if y is None and model.capabilities.latent_labels and data is not None:
        return torch.full((len(data),), MISSING, dtype=torch.long)  # no label known: every one summed out
    if y is None:
        raise ValueError(f"{type(model).__name__} is conditional: pass labels y (or a dataset that has them)")
    missing = model.capabilities.latent_labels
    return check_labels(y, model.num_classes, missing=missing, classes=model.classes, count=count)


MISSING = -1
"""The label of an image whose class is unknown, for a model whose label is latent (scikit-learn's mark too)."""


def class_index(label: Any, num_classes: int, classes: Sequence[str] | None = None) -> int:
    """One label as a class index: a whole number in 0..num_classes-1, or one of ``classes`` (case and spaces
    ignored)."""
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        names = [name.lower().replace(" ", "") for name in classes or []]
        key = label.lower().replace(" ", "")
        if key not in names:
            known = ", ".join(classes) if classes else f"0 to {num_classes - 1} (no class names)"
            raise ValueError(f"unknown label {label!r}; known: {known}")
        return names.index(key)
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    if isinstance(label, bool) or not (isinstance(label, (int, str)) or float(label).is_integer()):
        raise ValueError(f"a label is a class index (a whole number) or a class name, got {label!r}")
    index = int(label)
    if not 0 <= index < num_classes:
        raise ValueError(f"label {index} is outside 0..{num_classes - 1}")
    return index


def check_labels(
    y: Any,
    num_classes: int,
    missing: bool = False,
    classes: Sequence[str] | None = None,
    count: int | None = None,
) -> torch.Tensor:
    """``y`` as a tensor of class indices (and, with ``missing``, -1 for an unknown one), or an error that says
    what is wrong with it. Class names (one, or a list) are read through ``classes``; with ``count``, the labels
    are one per image: a single label is repeated ``count`` times, and any other number is refused."""

    def index(label: Any) -> int:
        return MISSING if missing and label == MISSING else class_index(label, num_classes, classes)

    if isinstance(y, np.ndarray) and y.dtype.kind in "USO":  # names in an array (a data frame's column)
        y = y.tolist()
    if isinstance(y, (str, int, float)):  # one label, said as a number or a name
        y = torch.tensor(index(y))
    elif isinstance(y, (list, tuple)) and any(isinstance(label, str) for label in y):
        y = torch.tensor([index(label) for label in y])
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"labels are class indices (whole numbers) or class names, one per image; got {type(y).__name__} "
            "that is neither"
        ) from None
    if y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"labels are class indices (whole numbers), got {y.dtype} values")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("labels hold NaN or infinite values; labels are class indices (whole numbers)")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ValueError("labels are class indices (whole numbers); pass a ready condition (one-hot or soft) as c=")
    if y.dim() > 1:
        raise ValueError(f"labels are one class index per image, shape (N,); got shape {tuple(y.shape)}")
    y = y.long()
    low = MISSING if missing else 0
    if y.numel() and (y.min() < low or y.max() >= num_classes):
        allowed = f"0..{num_classes - 1}" + (" or -1 (unknown)" if missing else "")
        raise ValueError(f"labels must lie in {allowed}, got values in [{int(y.min())}, {int(y.max())}]")
    if count is not None and y.dim() == 0:
        return y.repeat(count)
    if count is not None and len(y) != count:
        raise ValueError(f"{count} images but {len(y)} labels: give one label per image, or one for them all")
    return y
