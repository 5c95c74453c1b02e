"""`ImageDataset`: images as one float tensor in [0, 1], with optional labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """A set of images held in memory.

    ``x`` is float32 of shape (N, C, H, W) with values in [0, 1]; ``y`` holds
    integer class labels (N,) or is None. Every ppvae model and evaluation
    function accepts one of these or a plain tensor of images.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    name: str = "images"
    split: str = "all"
    classes: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() != 4:
            shape = tuple(self.x.shape) if isinstance(self.x, torch.Tensor) else type(self.x).__name__
            raise ValueError(f"ImageDataset.x must be a tensor of shape (N, C, H, W), got {shape}")
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index):
        if self.y is None:
            return self.x[index]
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        labels = f", {self.num_classes} classes" if self.y is not None else ""
        return f"ImageDataset({self.name!r}, split={self.split!r}, {len(self)} images of shape {self.shape}{labels})"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, (C, H, W)."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.y is None:
            return 0
        return len(self.classes) if self.classes else int(self.y.max()) + 1

    def subset(self, indices: int | slice | torch.Tensor) -> ImageDataset:
        """The first ``n`` images (an int), or those at a slice or index tensor."""
        if isinstance(indices, int):
            indices = slice(0, indices)
        y = None if self.y is None else self.y[indices]
        return ImageDataset(self.x[indices], y, self.name, self.split, self.classes)

    def random_split(self, test_fraction: float = 0.1, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Split into (train, test) at random, reproducibly."""
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, int(round(len(self) * test_fraction)))
        test, train = self.subset(order[:n_test]), self.subset(order[n_test:])
        train.split, test.split = "train", "test"
        return train, test
