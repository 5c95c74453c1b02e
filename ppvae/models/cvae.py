"""The conditional VAE: the VAE's programs with a label c handed to the encoder, the decoder and the prior.

    z ~ p(z | c),   x ~ p(x | z, c),   q(z | x, c)

c is the label as a one-hot vector, built once per batch and handed to every part
that takes it; with ``prior="conditional"`` the prior learns p(z | c), otherwise it
ignores c. Sampling with a chosen label gives images of that class
(Sohn, Lee & Yan, 2015; Kingma et al., 2014, M2 without the classifier).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ppvae import viz
from ppvae.estimator import Capabilities, FitRecord, LatentVariableModel, class_index
from ppvae.estimator.figures import save_figure_atomic
from ppvae.infer import seeded
from ppvae.models.vae import VAE
from ppvae.parts.registry import PartSpec


class CVAE(VAE):
    """Conditional VAE on ``num_classes`` labels: ``sample(n, y=3)``, ``encode(x, y)``, ``decode(z, y)``.

    ``fit(dataset)`` reads the dataset's labels (``y=`` for a tensor of images). ``classes``
    names the labels (so ``sample(8, y="Sneaker")`` works); every other argument is the VAE's.

    The default prior is a learned p(z | c): measured on Fashion-MNIST (``benchmarks/cvae_labels.py``),
    its samples are as recognisable to a classifier as real test images (0.874 against 0.874),
    where N(0, I) reached 0.704 at the same z_dim. With it, z carries the class too, so decoding
    one z with another label changes little: for style transfer and sliders, take
    ``prior="normal"``, which leaves the class to the label.

        CVAE(x_shape=(1, 28, 28), num_classes=10)
    """

    capabilities = Capabilities(condition="labels")

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        z_dim: int | Sequence[int] = 20,
        prior: PartSpec = "conditional",
        likelihood: PartSpec = "bernoulli",
        guide: PartSpec = "normal",
        network: PartSpec = "mlp",
        beta: float = 1.0,
        classes: Sequence[str] | None = None,
        layer_hidden: Sequence[int] = (256,),
    ):
        LatentVariableModel.__init__(self, tuple(x_shape), z_dim, beta)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.classes = [str(c) for c in classes] if classes is not None else None
        self._build_parts(prior, likelihood, guide, network, self.num_classes, layer_hidden)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_classes": self.num_classes, "classes": self.classes}

    def _fit(self, data: Any, test: Any, y: torch.Tensor | None, validation: Any, options: dict[str, Any]) -> FitRecord:
        """SVI as for the VAE; a model built without class names takes its training data's."""
        names = getattr(data, "classes", None)
        if self.classes is None and names is not None and len(names) == self.num_classes:
            self.classes = [str(c) for c in names]
        return super()._fit(data, test, y, validation, options)

    def label_index(self, label: int | str) -> int:
        """A label as a class index: an index, or one of ``classes`` (case and spaces ignored)."""
        return class_index(label, self.num_classes, self.classes)

    def condition(self, x: torch.Tensor | None, y: torch.Tensor | None, train: bool = False) -> torch.Tensor:
        """Labels (class indices, checked at the door) as one-hot vectors, the condition every part takes."""
        if y is None:
            raise ValueError("a CVAE takes labels y (or a ready condition c)")
        return F.one_hot(torch.as_tensor(y, device=self.device).long(), self.num_classes).float()

    # -- the course report's experiments: each one call, one tensor of images -------------------------

    @property
    def class_names(self) -> list[str]:
        return self.classes or [str(i) for i in range(self.num_classes)]

    @torch.no_grad()
    def class_samples(self, per_class: int = 10, seed: int | None = 0) -> torch.Tensor:
        """Samples for every class, (num_classes, per_class, C, H, W). Where the prior ignores the label,
        column j decodes the same z in every row (in a hierarchy, the same top layer), so a column shows one
        style across the classes."""
        self.eval()
        labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(per_class)
        c = self.condition(None, labels)
        with seeded(seed, self.device):
            if self.prior.depends_on_condition():
                z = self.prior_sample(len(labels), c)
            else:
                top = self.top_sample(per_class).repeat(self.num_classes, 1)
                z = self.descend(top, self.sites[-1], c, sample=True)
            return self.likelihood_mean(z, c).reshape(self.num_classes, per_class, *self.x_shape)

    @torch.no_grad()
    def transfer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Style transfer: each image encoded with its own label, its z decoded with every label,
        (N, num_classes, C, H, W): what the label does not say (thickness, angle, shade) stays.
        It needs a prior that ignores the label (``prior="normal"``); under a learned p(z | c), z carries
        the class and the label changes little."""
        self.eval()
        x = self.images(x)
        z = self.encode(x, y)
        n = z.shape[0]
        every = torch.arange(self.num_classes, device=self.device).repeat(n)
        return self.likelihood_mean(z.repeat_interleave(self.num_classes, 0), self.condition(None, every)).reshape(
            n, self.num_classes, *self.x_shape
        )

    @torch.no_grad()
    def slider(self, dim: int = 0, labels: Any = None, steps: int = 9, span: float = 2.5) -> torch.Tensor:
        """One latent dimension swept from -span to span (the others at 0), decoded with each of ``labels``
        (default: every class), (len(labels), steps, C, H, W): the report's "sliders"."""
        self.eval()
        if not 0 <= dim < self.z_dim:
            raise ValueError(f"dim must be in 0..{self.z_dim - 1}, got {dim}")
        labels = range(self.num_classes) if labels is None else [labels] if isinstance(labels, (int, str)) else labels
        z = torch.zeros(steps, self.z_dim, device=self.device)
        z[:, dim] = torch.linspace(-span, span, steps, device=self.device)
        rows = [
            self.likelihood_mean(
                z, self.condition(None, torch.full((steps,), self.label_index(label), device=self.device))
            )
            for label in labels
        ]
        return torch.stack(rows)

    def draw_figures(self, directory: Path, record: FitRecord) -> list[Path]:
        """classes.png, transfer.png (from the preview's test images) and slider.png in ``directory``."""
        names = self.class_names
        rows = dict(zip(names, self.class_samples(10).cpu()))
        paths = [save_figure_atomic(viz.image_rows, directory / "classes.png", rows, title="Samples of each class")]
        if record.preview is not None and record.preview_y is not None:
            moved = self.transfer(record.preview[:6], record.preview_y[:6]).cpu()
            originals = record.preview[:6].cpu()
            rows = {
                f"{i + 1}. {names[int(label)]}, then every class": torch.cat([original[None], row])
                for i, (original, label, row) in enumerate(zip(originals, record.preview_y[:6], moved))
            }
            paths.append(
                save_figure_atomic(
                    viz.image_rows,
                    directory / "transfer.png",
                    rows,
                    title="A test image, then its z decoded with every label",
                )
            )
        rows = dict(zip(names, self.slider(0).cpu()))
        paths.append(
            save_figure_atomic(
                viz.image_rows,
                directory / "slider.png",
                rows,
                title="z[0] from -2.5 to 2.5, the rest 0, for each label",
            )
        )
        return paths

    def __repr__(self) -> str:
        return super().__repr__().replace("z_dim=", f"num_classes={self.num_classes}, z_dim=", 1)
