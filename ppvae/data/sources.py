"""The named image datasets: where their IDX files live and how to get them.

ppvae reads the IDX files itself, so the same code serves torchvision's
download folder, a folder the user points at (``root=`` or ``PPVAE_DATA``)
and Debian's ``dataset-fashion-mnist`` package. torchvision's dataset
classes fetch the files when the machine is online.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppvae.data.dataset import ImageDataset
from ppvae.data.idx import read_idx

DEBIAN_ROOT = Path("/usr/share/datasets")


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is neither on disk nor downloadable; the message says where ppvae looked."""


@dataclass(frozen=True)
class NamedDataset:
    name: str
    torchvision_class: str
    prefix: str  # file name prefix: "" for MNIST-style names, "emnist-letters-" for EMNIST
    classes: tuple[str, ...]
    torchvision_kwargs: dict = field(default_factory=dict)
    transpose: bool = False  # EMNIST stores images transposed
    label_offset: int = 0  # EMNIST letters number classes from 1
    debian_package: str | None = None

    def file_names(self, split: str) -> tuple[str, str]:
        stem = "train" if split == "train" else "t10k"
        if self.prefix:
            stem = "train" if split == "train" else "test"
        return f"{self.prefix}{stem}-images-idx3-ubyte", f"{self.prefix}{stem}-labels-idx1-ubyte"

    @property
    def debian_dir(self) -> Path | None:
        return DEBIAN_ROOT / self.name if self.debian_package else None


DATASETS: dict[str, NamedDataset] = {
    d.name: d
    for d in [
        NamedDataset("mnist", "MNIST", "", tuple(str(i) for i in range(10))),
        NamedDataset(
            "fashion-mnist",
            "FashionMNIST",
            "",
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            debian_package="dataset-fashion-mnist",
        ),
        NamedDataset("kmnist", "KMNIST", "", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
        NamedDataset(
            "emnist-letters",
            "EMNIST",
            "emnist-letters-",
            tuple("abcdefghijklmnopqrstuvwxyz"),
            torchvision_kwargs={"split": "letters"},
            transpose=True,
            label_offset=1,
        ),
    ]
}
_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "emnist": "emnist-letters"}

COMBINED: dict[str, tuple[tuple[str, int], ...]] = {
    # the course report's 36-class set: MNIST's digits 0-9, then EMNIST's letters as 10-35 (A-Z), one label space
    "alphanumeric": (("mnist", 0), ("emnist-letters", 10)),
}
COMBINED_CLASSES = {"alphanumeric": tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
DATASET_NAMES = (*DATASETS, *COMBINED)
"""Every name ``ppvae.data.load`` knows."""


def default_root() -> Path:
    """Where downloads go: ``$PPVAE_DATA`` if set, else ``~/.cache/ppvae``."""
    return Path(os.environ.get("PPVAE_DATA") or Path.home() / ".cache" / "ppvae")


def resolve_name(name: str) -> NamedDataset:
    key = name.lower().replace("_", "-")
    key = _ALIASES.get(key.replace("-", ""), _ALIASES.get(key, key))
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)} (or a path to your own images)"
        )
    return DATASETS[key]


def _search_dirs(spec: NamedDataset, root: Path | None) -> list[Path]:
    bases = [root] if root is not None else [default_root()]
    dirs = []
    for base in bases:
        dirs += [base, base / spec.torchvision_class / "raw", base / spec.name]
    if root is None and spec.debian_dir is not None:
        dirs.append(spec.debian_dir)
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(spec: NamedDataset, split: str, root: Path | None) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of ``split`` in the first folder that has both."""
    images, labels = spec.file_names(split)
    for directory in _search_dirs(spec, root):
        found = _find(directory, images), _find(directory, labels)
        if all(found):
            return found
    return None


def download(spec: NamedDataset, root: Path) -> None:
    """Fetch the files through torchvision's dataset class (needs the internet)."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    for train in (True, False):
        cls(root=str(root), train=train, download=True, **spec.torchvision_kwargs)


def not_found_message(spec: NamedDataset, split: str, root: Path | None, reason: str) -> str:
    looked = "\n".join(f"  {d}" for d in _search_dirs(spec, root))
    images, labels = spec.file_names(split)
    how = [f"  - online: ppvae.data.load({spec.name!r}, download=True) fetches it through torchvision"]
    if spec.debian_package:
        how.insert(0, f"  - on Debian/Ubuntu: sudo apt-get install {spec.debian_package}")
    how.append(f"  - or copy {images}[.gz] and {labels}[.gz] into a folder and pass root=FOLDER (or set PPVAE_DATA)")
    return (
        f"dataset {spec.name!r} ({split} split) not found: {reason}.\n"
        f"Looked for {images}[.gz] and {labels}[.gz] in:\n{looked}\nTo get it:\n" + "\n".join(how)
    )


def load_combined(name: str, split: str, root: str | Path | None, download_missing: bool) -> ImageDataset:
    """Several named datasets as one, their labels shifted into one label space (see ``COMBINED``)."""
    parts = [(load_named(part, split, root, download_missing), offset) for part, offset in COMBINED[name]]
    x = torch.cat([data.x for data, _ in parts])
    y = torch.cat([data.y + offset for data, offset in parts])
    return ImageDataset(x, y, name, split, list(COMBINED_CLASSES[name]))


def load_named(
    name: str, split: str = "train", root: str | Path | None = None, download_missing: bool = True
) -> ImageDataset:
    """Load a named dataset's ``split`` ("train" or "test") as an `ImageDataset`."""
    if name.lower() in COMBINED:
        return load_combined(name.lower(), split, root, download_missing)
    spec = resolve_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser() if root is not None else None
    files = find_files(spec, split, root)
    if files is None:
        if not download_missing:
            raise DatasetNotFoundError(not_found_message(spec, split, root, "download=False"))
        try:
            download(spec, root or default_root())
        except Exception as error:  # torchvision raises several kinds when offline
            reason = f"the download failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            raise DatasetNotFoundError(not_found_message(spec, split, root, reason)) from error
        files = find_files(spec, split, root)
        if files is None:
            raise DatasetNotFoundError(not_found_message(spec, split, root, "the download left no IDX files"))
    images, labels = (read_idx(f) for f in files)
    if spec.transpose:
        images = images.transpose(1, 2)
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    y = labels.to(torch.long) - spec.label_offset
    return ImageDataset(x, y, spec.name, split, list(spec.classes))
