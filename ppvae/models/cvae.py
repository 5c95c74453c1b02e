"""The conditional VAE: the VAE's programs with a label c handed to the encoder, the decoder and the prior.

    z ~ p(z | c),   x ~ p(x | z, c),   q(z | x, c)

c is the label as a one-hot vector, built once per batch and handed to every part
that takes it; with ``prior="conditional"`` the prior learns p(z | c), otherwise it
ignores c. Sampling with a chosen label gives images of that class
(Sohn, Lee & Yan, 2015; Kingma et al., 2014, M2 without the classifier).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ppvae.models.base import LatentVariableModel
from ppvae.models.vae import VAE
from ppvae.parts.registry import PartSpec


class CVAE(VAE):
    """Conditional VAE on ``num_classes`` labels: ``sample(n, y=3)``, ``encode(x, y)``, ``decode(z, y)``.

    ``fit(dataset)`` reads the dataset's labels (``y=`` for a tensor of images). ``classes``
    names the labels (so ``sample(8, y="Sneaker")`` works); every other argument is the VAE's.

        CVAE(x_shape=(1, 28, 28), num_classes=10, z_dim=8, prior="conditional")
    """

    conditional = True

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        z_dim: int = 20,
        prior: PartSpec = "normal",
        likelihood: PartSpec = "bernoulli",
        guide: PartSpec = "normal",
        network: PartSpec = "mlp",
        beta: float = 1.0,
        classes: Sequence[str] | None = None,
    ):
        LatentVariableModel.__init__(self, tuple(x_shape), z_dim, beta)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.classes = [str(c) for c in classes] if classes is not None else None
        self._build_parts(prior, likelihood, guide, network, condition_dim=self.num_classes)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_classes": self.num_classes, "classes": self.classes}

    def _fit(self, data: Any, test: Any, y: torch.Tensor | None, validation: Any, options: dict[str, Any]):
        """SVI as for the VAE; a model built without class names takes its training data's."""
        names = getattr(data, "classes", None)
        if self.classes is None and names is not None and len(names) == self.num_classes:
            self.classes = [str(c) for c in names]
        return super()._fit(data, test, y, validation, options)

    def label_index(self, label: int | str) -> int:
        """A label as a class index: an index, or one of ``classes`` (case and spaces ignored)."""
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            names = [c.lower().replace(" ", "") for c in self.classes or []]
            key = label.lower().replace(" ", "")
            if key not in names:
                known = ", ".join(self.classes) if self.classes else f"0 to {self.num_classes - 1} (no class names)"
                raise ValueError(f"unknown label {label!r}; known: {known}")
            return names.index(key)
        index = int(label)
        if not 0 <= index < self.num_classes:
            raise ValueError(f"label {index} is outside 0..{self.num_classes - 1}")
        return index

    def sample_labels(self, n: int, y: Any = None) -> torch.Tensor:
        if y is None or isinstance(y, torch.Tensor):
            return super().sample_labels(n, y)
        labels = torch.tensor([self.label_index(label) for label in ([y] if isinstance(y, (int, str)) else list(y))])
        return labels.expand(n) if labels.numel() == 1 else labels

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as one-hot vectors, the condition every part takes."""
        y = torch.as_tensor(y)
        if y.is_floating_point() and y.dim() == 2 and y.shape[-1] == self.num_classes:
            return y  # already one-hot (or soft) labels
        y = y.long()
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, got values in [{int(y.min())}, {int(y.max())}]")
        return F.one_hot(y, self.num_classes).float()

    def __repr__(self) -> str:
        return super().__repr__().replace("z_dim=", f"num_classes={self.num_classes}, z_dim=", 1)
