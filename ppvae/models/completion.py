"""Image completion (Pyro's CVAE tutorial): the condition is the visible part of an image, the output the rest.

    z ~ p(z | v),   x_hidden ~ p(x_hidden | z, v),   q(z | x, v)

v is the image with its hidden pixels zeroed, beside the mask of which pixels are
visible: one vector, built once and handed to the prior network, the decoder and
the encoder, as a CVAE hands them a label. The likelihood scores the hidden pixels
only. Which pixels are visible follows Pyro's tutorial: 1 quadrant (bottom left),
2 (the left half) or 3 (all but the bottom right). In training each image shows a
number of quadrants drawn afresh at every step, so one model completes all three.

`CompletionNetwork` is the deterministic baseline of that tutorial, as a
Pyro program with no latent variable: its guide is empty, so SVI maximises the
likelihood itself and its ELBO is its exact log-likelihood. Where the network
can only predict the average completion, a blur, the CVAE draws several
plausible ones (Sohn, Lee & Yan, 2015).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyro
import torch

from ppvae import viz
from ppvae.data import Data
from ppvae.estimator import Capabilities, FitRecord, LatentVariableModel
from ppvae.estimator.evidence import KHAT_UNRELIABLE
from ppvae.estimator.figures import save_figure_atomic
from ppvae.infer import seeded
from ppvae.models.declared import DeclaredParts
from ppvae.models.vae import VAE
from ppvae.parts import LIKELIHOODS, MLP, observed_where
from ppvae.parts.registry import PartSpec

QUADRANTS = (1, 2, 3)
"""The numbers of visible quadrants a completion model knows."""


def quadrant_masks(x_shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """The visible pixels for 0 to 4 visible quadrants, (5, C, H, W) of 0/1, in Pyro's tutorial's order:
    bottom left, then the left half, then all but the bottom right."""
    _, height, width = x_shape
    masks = torch.zeros(5, *x_shape, device=device)
    left = slice(0, width // 2)
    bottom, right = slice(height // 2, height), slice(width // 2, width)
    masks[1][:, bottom, left] = 1
    masks[2][:, :, left] = 1
    masks[3] = 1
    masks[3][:, bottom, right] = 0
    masks[4] = 1
    return masks


class Completion:
    """What both completion models share: the condition from visible pixels, the training masks,
    completing images and the figure. Mixed into a `LatentVariableModel`."""

    capabilities = Capabilities(samples_from_prior=False, condition="images")  # a sample completes an image
    visible: tuple[int, ...]
    x_shape: tuple[int, ...]
    x_dim: int

    def _check_visible(self, visible: Sequence[int]) -> tuple[int, ...]:
        visible = tuple(int(v) for v in ([visible] if isinstance(visible, int) else visible))
        if not visible or any(v not in QUADRANTS for v in visible):
            raise ValueError(f"visible quadrants must be among {QUADRANTS}, got {visible}")
        return visible

    @staticmethod
    def required(c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            raise ValueError("a completion model needs the visible part c: model.quadrant_condition(x, visible=2)")
        return c

    @property
    def condition_dim(self) -> int:
        return 2 * self.x_dim

    def visible_part(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The condition c for images x (N, C, H, W) and a 0/1 mask of visible pixels (broadcastable):
        the visible pixels (hidden ones 0) beside the mask, (N, 2 * x_dim)."""
        mask = mask.to(x.dtype).expand_as(x)
        return torch.cat([(x * mask).flatten(1), mask.flatten(1)], dim=1)

    def hidden_pixels(self, c: torch.Tensor) -> torch.Tensor:
        """Which pixels a condition leaves for the model to fill, (N, C, H, W) booleans."""
        return (c[:, self.x_dim :] < 0.5).reshape(c.shape[:1] + self.x_shape)

    def quadrant_condition(self, x: torch.Tensor, visible: int | torch.Tensor) -> torch.Tensor:
        """c for images x with ``visible`` quadrants shown (a number, or one per image)."""
        counts = torch.as_tensor(visible, device=x.device).long().expand(x.shape[0])
        if counts.numel() and (counts.min() < 1 or counts.max() > 3):
            raise ValueError(
                f"visible quadrants must be 1, 2 or 3, got values in [{int(counts.min())}, {int(counts.max())}]"
            )
        return self.visible_part(x, quadrant_masks(self.x_shape, x.device)[counts])

    def condition(self, x: torch.Tensor | None, y: torch.Tensor | None = None, train: bool = False) -> torch.Tensor:
        """The visible part c of images x (as scored): in training (``train``) each image shows a number of
        quadrants drawn from ``visible``; otherwise the images show 1, 2 and 3 in turn, a held-out score over
        all three. Labels play no part. For another number of quadrants, pass c=quadrant_condition(x, k)."""
        if x is None:
            raise ValueError(f"{type(self).__name__} builds its condition from images: pass c=quadrant_condition(x, k)")
        if train:
            choices = torch.tensor(self.visible, device=x.device)
            return self.quadrant_condition(x, choices[torch.randint(len(choices), (x.shape[0],), device=x.device)])
        return self.quadrant_condition(x, torch.arange(x.shape[0], device=x.device) % 3 + 1)

    def sample(self, n: int = 64, y: Any = None, seed: int | None = None) -> torch.Tensor:
        raise ValueError(
            f"{type(self).__name__} completes images rather than drawing them from nothing: "
            "use model.complete(x, visible=2)"
        )

    def completion_means(self, c: torch.Tensor, samples: int) -> torch.Tensor:
        """E[x | c] for ``samples`` draws of whatever is random given c, (samples, N, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def complete(
        self, data: Data, visible: int | torch.Tensor = 2, samples: int = 1, seed: int | None = 0
    ) -> torch.Tensor:
        """``samples`` completions of each image from its ``visible`` quadrants, (N, samples, C, H, W):
        the visible pixels as the model sees them (binarised as in training), the hidden ones the model's
        mean given each draw."""
        self.eval()
        x = self.prepare(data, seed=seed or 0)
        c = self.quadrant_condition(x, visible)
        with seeded(seed, x.device):
            means = self.completion_means(c, samples)
        hidden = self.hidden_pixels(c)
        return torch.where(hidden, means, x).transpose(0, 1)

    def shown(self, data: Data, visible: int | torch.Tensor) -> torch.Tensor:
        """The images as the model sees them: visible pixels (binarised as in training), the hidden ones mid-grey."""
        x = self.prepare(data)
        return torch.where(self.hidden_pixels(self.quadrant_condition(x, visible)), torch.full_like(x, 0.5), x)

    def draw_figures(self, directory: Path, record: FitRecord) -> list[Path]:
        """completions.png: the preview's test images with 1, 2 and 3 quadrants shown, and what the model fills in."""
        if record.preview is None:
            return []
        x = record.preview[:8]
        rows = {}
        for k in QUADRANTS:
            rows.update(
                {
                    f"{name} ({k} shown)" if name != "test images" else name: images
                    for name, images in completion_rows({"completion": self}, x, k).items()
                }
            )
        return [
            save_figure_atomic(
                viz.image_rows,
                directory / "completions.png",
                rows,
                title=f"{type(self).__name__}: the hidden quadrants filled in",
            )
        ]


class CompletionVAE(Completion, VAE):
    """A CVAE that fills in the hidden quadrants of an image: several plausible completions, not one blur.

    The prior is a network on the visible part, p(z | v); the encoder sees the whole image
    and v; the decoder takes z and v and scores the hidden pixels. ``visible`` lists the
    quadrant counts training shows (each image draws one per step).

        model = CompletionVAE(x_shape=(1, 28, 28))
        model.fit(train, epochs=10)
        model.complete(test[:8], visible=1, samples=4)   # (8, 4, 1, 28, 28)
    """

    aliases = ("completion",)  # a name for the CLI and spec files, beside completion-vae

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int | Sequence[int] = 20,
        prior: PartSpec = {"name": "conditional", "hidden": 400},  # noqa: B006 (read, never written)
        likelihood: PartSpec = "bernoulli",
        guide: PartSpec = "normal",
        network: PartSpec = "mlp",
        beta: float = 1.0,
        visible: Sequence[int] = QUADRANTS,
        layer_hidden: Sequence[int] = (256,),
    ):
        LatentVariableModel.__init__(self, tuple(x_shape), z_dim, beta)
        self.visible = self._check_visible(visible)
        self._build_parts(prior, likelihood, guide, network, self.condition_dim, layer_hidden)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "visible": list(self.visible)}

    def model(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """The VAE's program on the visible part c, scoring the hidden pixels only (see ``observed``)."""
        return super().model(x, self.required(c), kl_weight, size)

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """q(z | x, c): the encoder sees the whole image and the visible part."""
        return super().guide(x, self.required(c), kl_weight, size)

    def lowered_elbo(
        self, x: torch.Tensor, c: torch.Tensor | None = None, kl_weight: float = 1.0, analytic_kl: bool = False
    ) -> torch.Tensor:
        """The programs' ELBO in plain torch (see `VAE.lowered_elbo`), on the visible part c."""
        return super().lowered_elbo(x, self.required(c), kl_weight, analytic_kl)

    def lowered_log_joint(
        self, x: torch.Tensor, c: torch.Tensor | None, values: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The programs' densities in plain torch (see `VAE.lowered_log_joint`), on the visible part c."""
        return super().lowered_log_joint(x, self.required(c), values)

    def lowered_log_guide(
        self, x: torch.Tensor, c: torch.Tensor | None, values: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return super().lowered_log_guide(x, self.required(c), values)

    def observed(self, likelihood, c: torch.Tensor):
        return observed_where(likelihood, self.hidden_pixels(c))

    def completion_means(self, c: torch.Tensor, samples: int) -> torch.Tensor:
        z = self.prior(c).sample((samples,))  # (samples, N, size of the top layer)
        return self.likelihood_mean(self.descend(z, self.sites[-1], c, sample=True), c)


class CompletionNetwork(Completion, DeclaredParts, LatentVariableModel):
    """The deterministic baseline: a network from the visible part to the hidden pixels' distribution.

    A Pyro program with no latent variable (its guide is empty), trained by the same loop: the
    ELBO is then the exact log-likelihood of the hidden pixels, and ``fit`` maximises it.
    """

    capabilities = Capabilities(latent=False, samples_from_prior=False, condition="images")

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        likelihood: PartSpec = "bernoulli",
        network: PartSpec = "mlp",
        visible: Sequence[int] = QUADRANTS,
    ):
        super().__init__(tuple(x_shape), z_dim=0)
        self.visible = self._check_visible(visible)
        self.declare(likelihood=likelihood, network=network)
        options = {k: v for k, v in self.specs["network"].items() if k != "name"}
        if self.specs["network"]["name"] != "mlp" or set(options) - {"hidden"}:
            raise ValueError(f"CompletionNetwork takes network='mlp' with an optional 'hidden' list, got {network!r}")
        self.likelihood = LIKELIHOODS.build(likelihood, x_shape=self.x_shape)
        self.capabilities = dataclasses.replace(type(self).capabilities, binary=self.likelihood.binary)
        self.net = MLP(self.condition_dim, self.likelihood.width, options.get("hidden", (400,)))
        self._pyro_parts = {"model": self._with_parameters(net=self.net, likelihood=self.likelihood)}

    def config(self) -> dict[str, Any]:
        return {"x_shape": list(self.x_shape), **self.specs, "visible": list(self.visible)}

    def model(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """p(x_hidden | v): the network's distribution over the hidden pixels, observed where ``x`` is given."""
        self._register("model")
        c = self.required(c)
        if x is not None:
            x = x.reshape((c.shape[0],) + self.x_shape)
        with pyro.plate("data", c.shape[0]):
            return pyro.sample("x", observed_where(self.likelihood(self.net(c)), self.hidden_pixels(c)), obs=x)

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """Nothing to infer: no latent variables."""

    def likelihood_mean(self, z: torch.Tensor | None, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood(self.net(self.required(c))).mean

    def completion_means(self, c: torch.Tensor, samples: int) -> torch.Tensor:
        return self.likelihood_mean(None, c).expand((samples,) + (c.shape[0],) + self.x_shape)

    def __repr__(self) -> str:
        return f"CompletionNetwork(x_shape={self.x_shape}, {self.described_parts()})"


# -- the tutorial's table --------------------------------------------------------------------------------


@torch.no_grad()
def completion_scores(
    model: LatentVariableModel,
    data: Data,
    visible: Sequence[int] = QUADRANTS,
    num_samples: int = 1000,
    particles: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict[int, dict[str, float]]:
    """Negative conditional log-likelihood of the hidden pixels, nats per image, for each number of visible quadrants.

    ``nll``: exact for the network (it has no latent variable), importance-sampled with K =
    ``num_samples`` for a CVAE; ``elbo_nll``: minus the ``particles``-particle ELBO, what Pyro's
    tutorial tabulates (equal to ``nll`` for the network); for a CVAE ``khat_unreliable``, the share of
    images whose importance-sampled estimate has Pareto k-hat > 0.7. Images are binarised as the model was scored.
    """
    scores = {}
    for k in visible:
        draws = []
        for i in range(particles):  # each particle scores its own seeded binarisation of the images
            x = model.prepare(data, seed=seed + i)
            c = model.quadrant_condition(x, int(k))
            draws.append(model.elbo_terms(x, c=c, binarize=None, seed=seed + i)["elbo"])
        elbo_nll = -torch.stack(draws).mean(0).mean().item()
        scores[int(k)] = {"nll": elbo_nll, "elbo_nll": elbo_nll}  # no latent: the likelihood is exact
        if model.capabilities.latent:
            x = model.prepare(data, seed=seed)
            c = model.quadrant_condition(x, int(k))
            estimate = model.log_evidence(
                x, num_samples, c=c, binarize=None, seed=seed, diagnostics=True, progress=progress
            )
            scores[int(k)].update(
                nll=-estimate.log_evidence.mean().item(),
                khat_unreliable=(estimate.pareto_k > KHAT_UNRELIABLE).double().mean().item(),
            )
    return scores


def completion_rows(
    models: Mapping[str, LatentVariableModel], data: Data, visible: int, samples: int = 3, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Rows for ``viz.image_rows``: the images, what is shown, then each model's completions
    (one row per draw for a latent-variable model, one for a network)."""
    first = next(iter(models.values()))
    x = first.prepare(data, seed=seed)
    rows = {"test images": x.cpu(), "shown": first.shown(x, visible).cpu()}
    for name, model in models.items():
        draws = model.complete(x, visible, samples=samples if model.capabilities.latent else 1, seed=seed)
        draws = draws.transpose(0, 1)
        for i, row in enumerate(draws.cpu()):
            rows[f"{name} {i + 1}" if draws.shape[0] > 1 else name] = row
    return rows
