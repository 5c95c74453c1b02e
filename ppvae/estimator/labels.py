"""Which training labels a model whose label is latent (M2) may read: ``fit(data, labelled=...)``.

The others are hidden (-1, scikit-learn's mark for an unknown label) and the model sums them out.
``labelled`` is a count (that many labels, the same number from each class, drawn with the fit's
seed: the literature's balanced protocol), indices, or a boolean mask over the training images;
None keeps the labels as given.
"""

from __future__ import annotations

from typing import Any

import torch

from ppvae.data import ImageDataset
from ppvae.estimator.contract import MISSING
from ppvae.infer import derive_seed

LABEL_STREAM = 3  # the random stream, after the seed, that draws which images keep their labels


def describe_labelled(labelled: Any) -> int | str | None:
    """``labelled`` as a run folder records it: a count or None as given, a set of images by its size."""
    if labelled is None or (isinstance(labelled, int) and not isinstance(labelled, bool)):
        return labelled
    chosen = torch.as_tensor(labelled)
    count = int(chosen.sum()) if chosen.dtype == torch.bool else chosen.numel()
    return f"{count} chosen images"


def keep_labels(data: Any, labelled: Any, num_classes: int, seed: int) -> Any:
    """``data`` with every label hidden (-1) but those ``labelled`` keeps; ``data`` itself for None."""
    if labelled is None:
        return data
    if not isinstance(data, ImageDataset) or data.y is None:
        raise ValueError(
            "labelled= hides labels of a labelled dataset held in memory; load the data without lazy=True, "
            "or mark unknown labels -1 yourself and leave labelled out"
        )
    known = data.y >= 0
    keep = torch.zeros(len(data), dtype=torch.bool)
    if isinstance(labelled, int) and not isinstance(labelled, bool):
        keep[balanced(data.y, labelled, num_classes, seed)] = True
    else:
        keep = chosen_images(labelled, len(data))
    if bool((keep & ~known).any()):
        raise ValueError(f"labelled asks for {int((keep & ~known).sum())} labels the data does not have (-1)")
    return ImageDataset(data.x, torch.where(keep, data.y, MISSING), data.name, data.split, data.classes)


def chosen_images(labelled: Any, n: int) -> torch.Tensor:
    """Indices or a boolean mask as a mask over ``n`` images, or an error that says what is wrong."""
    try:
        chosen = torch.as_tensor(labelled)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"labelled is a count, indices or a boolean mask, got {labelled!r}") from None
    if chosen.dtype == torch.bool:
        if chosen.shape != (n,):
            raise ValueError(f"a boolean mask for labelled has one entry per image ({n}), got {tuple(chosen.shape)}")
        return chosen.clone()
    if chosen.is_floating_point() or chosen.dim() != 1:
        raise ValueError(f"labelled is a count, indices or a boolean mask, got {labelled!r}")
    if chosen.numel() and (chosen.min() < 0 or chosen.max() >= n):
        raise ValueError(f"labelled indices must lie in 0..{n - 1}")
    keep = torch.zeros(n, dtype=torch.bool)
    keep[chosen] = True
    return keep


def balanced(labels: torch.Tensor, count: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``count`` images, count / num_classes of each class, drawn with ``seed``."""
    per_class, extra = divmod(count, num_classes)
    if count < 1 or extra:
        raise ValueError(
            f"labelled={count} cannot be split evenly among {num_classes} classes: give a positive multiple of "
            f"{num_classes} (or the indices of the images to keep labelled)"
        )
    generator = torch.Generator().manual_seed(derive_seed(seed, LABEL_STREAM))
    chosen = []
    for label in range(num_classes):
        members = (labels == label).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(
                f"labelled={count} takes {per_class} images of each class, and class {label} has {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)


DEFAULT_SHARE = 0.5
"""``labelled_share="auto"`` for a model whose label is latent. Measured on Fashion-MNIST with 100 labels
(``python benchmarks/m2_settings.py``, docs/results.md): M2 with beta 3 reached 0.451 test accuracy with each
image once an epoch and 0.659 with the labelled images repeated to half of each epoch; with 0.1, 0.647."""


def labelled_share(share: float | str | None, latent_labels: bool, data: Any) -> float | None:
    """The share ``repeat_labelled`` takes: "auto" is `DEFAULT_SHARE` for a model whose label is latent, trained
    on images held in memory with their labels, else None (nothing to repeat); 0 and None show each image once."""
    if share == "auto":
        return DEFAULT_SHARE if latent_labels and isinstance(data, ImageDataset) and data.y is not None else None
    return share or None


def repeat_labelled(data: ImageDataset, share: float | None) -> ImageDataset:
    """``data`` with its labelled images repeated until they make up about ``share`` of an epoch; ``data``
    itself for None, or where they already do.

    Kingma et al. (2014) put labelled images into every minibatch. With 100 labels among 60,000 images a
    plain epoch shows each labelled image once, in one batch out of about six; repeated to a share of 0.1,
    about thirteen of every 128 images are labelled. Each labelled image's terms (its bound at its label and
    the classifier's) then weigh that many times more than in the plain sum, which is the point: the
    decoder learns what the label means from the images that have one. The repeats are whole copies, so the
    batches, their order (seeded), resume and data-parallel processes work as for any dataset.
    """
    if share is None:
        return data
    if not isinstance(data, ImageDataset):
        raise ValueError("labelled_share= repeats images of a dataset held in memory; load the data without lazy=True")
    if data.y is None:
        return data
    known = (data.y >= 0).nonzero().flatten()
    unknown = len(data) - len(known)
    if not len(known) or not unknown:
        return data
    copies = round(share / (1 - share) * unknown / len(known))  # labelled / all = share
    if copies <= 1:
        return data
    index = torch.cat([torch.arange(len(data)), known.repeat(copies - 1)])
    return ImageDataset(data.x[index], data.y[index], data.name, data.split, data.classes)
