"""Likelihoods p(x | decoder output): modules that turn the decoder's flat output into a distribution over images.

A likelihood says how many numbers per pixel it needs from the decoder
(``outputs_per_pixel``) and which data it accepts (``check``), checked once
before training rather than at every step.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae.parts.registry import Registry

LIKELIHOODS = Registry("likelihood", context=("x_shape",))


class Likelihood(nn.Module):
    """Base class: ``likelihood(h) -> Distribution`` with event shape ``x_shape``.

    ``h`` has shape (..., outputs_per_pixel * prod(x_shape)); leading dims are batch dims.
    """

    outputs_per_pixel = 1
    binary = False  # True if the likelihood is defined on {0, 1} pixels only

    def __init__(self, x_shape: tuple[int, ...]):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.x_dim = math.prod(self.x_shape)

    @property
    def width(self) -> int:
        """How many numbers the decoder must output."""
        return self.outputs_per_pixel * self.x_dim

    def _images(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(h.shape[:-1] + self.x_shape)

    def check(self, x: torch.Tensor) -> None:
        """Raise ValueError, saying what to do, if ``x`` is outside this likelihood's support."""

    def initialize(self, x: torch.Tensor) -> None:
        """Set learned parameters from the training data (N, C, H, W) before the first step; by default nothing."""


class IndependentBernoulli(dist.Independent):
    """``Bernoulli(logits).to_event(d)`` whose ``log_prob`` is one of two formulas for the same number.

    Training (gradients on): torch's fused cross-entropy kernel, whose backward is one kernel
    too, negated after the sum over pixels rather than per pixel. Without gradients (the
    evidence, evaluation): sum(x * logits) - sum(softplus(logits)), two passes over the
    (samples x images x pixels) numbers where the fused kernel makes about five.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        dims = list(range(-self.reinterpreted_batch_ndims, 0))
        logits = self.base_dist.logits
        if torch.is_grad_enabled() and logits.requires_grad:
            logits, value = torch.broadcast_tensors(logits, value)
            return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(dims)
        n = self.reinterpreted_batch_ndims
        logits = _unexpanded(logits)  # a plate's expand() makes views; compute on the numbers that exist
        if _spreads(logits.shape[:-n], value.shape[:-n]):  # one decoder output for many images (quadrature):
            products = torch.einsum("...e,...e->...", logits.flatten(-n), value.flatten(-n))  # a matrix product
        else:
            products = (logits * value).sum(dims)
        log_prob = products - F.softplus(logits).sum(dims)
        return log_prob.expand(self.batch_shape) if log_prob.shape != self.batch_shape else log_prob

    def total_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log_prob(value).sum()``, for a training step that wants no per-image numbers: under gradients the
        fused kernel reduces over everything at once (the same gradients, one pass fewer)."""
        logits = self.base_dist.logits
        if torch.is_grad_enabled() and logits.requires_grad and logits.shape == value.shape:
            return -F.binary_cross_entropy_with_logits(logits, value, reduction="sum")
        return self.log_prob(value).sum()


def _unexpanded(t: torch.Tensor) -> torch.Tensor:
    """``t`` without the broadcast dims of an ``expand`` (stride 0): size 1 there, the same values."""
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if stride == 0 and size > 1:
            t = t.narrow(dim, 0, 1)
    return t


def _spreads(small: torch.Size, large: torch.Size) -> bool:
    """True if broadcasting stretches a size-1 dim of ``small`` over a longer dim of ``large``."""
    return any(a == 1 and b > 1 for a, b in zip(reversed(small), reversed(large)))


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Bernoulli per pixel on logits: for binary (binarised) images."""

    binary = True

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        return IndependentBernoulli(dist.Bernoulli(logits=self._images(h)), len(self.x_shape))

    def total_log_prob(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | h) summed over the batch without building the distribution, for the lowered step: the
        fused cross-entropy that `IndependentBernoulli.total_log_prob` takes under gradients."""
        return -F.binary_cross_entropy_with_logits(self._images(h), x, reduction="sum")

    def check(self, x: torch.Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            grey = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(
                "the Bernoulli likelihood needs binary pixels (0 or 1), but the data has grey levels "
                f"(for example {grey:.4g}); binarise it with binarize='dynamic', 'static' or 'threshold', "
                'or use likelihood="continuous_bernoulli" for grey levels'
            )


class LocationScaleLikelihood(Likelihood):
    """A location-scale family per pixel around the decoder's output; ``scale``: a fixed number,
    "learned" (one for all pixels), "per_pixel" (one per pixel) or "decoder" (the decoder outputs it),
    never below ``min_scale``; ``mean="sigmoid"`` keeps the mean in [0, 1], for pixels that live there.

    A learned scale starts at the training data's spread (see ``initialize``).
    """

    SCALES = ("learned", "per_pixel", "decoder")
    family: type[dist.Distribution]

    MEANS = ("identity", "sigmoid")

    def __init__(
        self,
        x_shape: tuple[int, ...],
        scale: float | str = "per_pixel",
        min_scale: float = 1e-3,
        mean: str = "identity",
    ):
        super().__init__(x_shape)
        if isinstance(scale, str) and scale not in self.SCALES:
            raise ValueError(f"scale must be a positive number or one of {self.SCALES}, got {scale!r}")
        if mean not in self.MEANS:
            raise ValueError(f"mean must be one of {self.MEANS}, got {mean!r}")
        if not float(min_scale) > 0:
            raise ValueError(f"min_scale must be positive, got {min_scale}")
        self.mean_map = mean
        if not isinstance(scale, str) and not float(scale) > 0:
            raise ValueError(f"a fixed scale must be positive, got {scale}")
        self.scale_mode = scale
        self.min_scale = float(min_scale)
        self.outputs_per_pixel = 2 if scale == "decoder" else 1
        if scale in ("learned", "per_pixel"):
            self.log_scale = nn.Parameter(torch.zeros(1 if scale == "learned" else self.x_dim))
        elif not isinstance(scale, str):
            self.register_buffer("fixed_scale", torch.tensor(float(scale)), persistent=False)

    def scale(self, h: torch.Tensor | None = None) -> torch.Tensor:
        """The scale per pixel, flat (..., x_dim)."""
        if self.scale_mode == "decoder":
            return nn.functional.softplus(h[..., self.x_dim :]) + self.min_scale
        if isinstance(self.scale_mode, str):
            return self.log_scale.exp() + self.min_scale
        return self.fixed_scale

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        loc = h[..., : self.x_dim]
        if self.mean_map == "sigmoid":  # for pixels in [0, 1]: the mean cannot leave the range the data lives in
            loc = torch.sigmoid(loc)
        scale = self.scale(h).expand(loc.shape)
        return self.family(self._images(loc), self._images(scale)).to_event(len(self.x_shape))

    def check(self, x: torch.Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"the {self.registry_name} likelihood needs finite pixel values; the data has NaN or infinity"
            )

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """A learned scale starts at the data's standard deviation (per pixel, or overall), not at 1.

        Adam moves a log-scale by about the learning rate per step, so from 1 it would take
        thousands of steps to reach the small noise of [0, 1] images.
        """
        if self.scale_mode not in ("learned", "per_pixel"):
            return
        flat = x.reshape(x.shape[0], -1)
        std = flat.std(0) if self.scale_mode == "per_pixel" else flat.std().reshape(1)
        self.log_scale.copy_(torch.log(std.clamp_min(2 * self.min_scale) - self.min_scale))


@LIKELIHOODS.register("normal")
class Normal(LocationScaleLikelihood):
    """Normal per pixel around the decoder's mean; ``scale``: a fixed number, "learned", "per_pixel" or "decoder"."""

    family = dist.Normal


@LIKELIHOODS.register("laplace")
class Laplace(LocationScaleLikelihood):
    """Laplace per pixel around the decoder's output (an L1 reconstruction loss); ``scale`` as for normal."""

    family = dist.Laplace


@LIKELIHOODS.register("continuous_bernoulli")
class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli on logits (Loaiza-Ganem & Cunningham, 2019): a proper density for grey levels in [0, 1]."""

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=self._images(h)).to_event(len(self.x_shape))

    def check(self, x: torch.Tensor) -> None:
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"the continuous_bernoulli likelihood needs pixels in [0, 1], got values in [{x.min():.3g}, "
                f"{x.max():.3g}]; "
                "rescale the images or choose the normal or laplace likelihood"
            )


def observed_where(likelihood: dist.Independent, mask: torch.Tensor) -> dist.Distribution:
    """``likelihood`` (a per-pixel family made an image by ``to_event``) scored only where ``mask`` is True.

    The other pixels add nothing to log p: a completion model observes the hidden pixels alone,
    since the visible ones are its input, not its output.
    """
    if not isinstance(likelihood, dist.Independent):
        raise TypeError(f"observed_where needs a per-pixel likelihood made an image with to_event, got {likelihood}")
    return likelihood.base_dist.mask(mask).to_event(likelihood.reinterpreted_batch_ndims)
