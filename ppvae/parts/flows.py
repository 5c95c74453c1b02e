"""Normalizing flows as parts: a flow guide q(z | x) and a flow prior p(z), from Pyro's transforms.

A flow carries a simple distribution through invertible maps f_K o ... o f_1, and scores a point by the change of
variables (Rezende & Mohamed, 2015):

    log q(z) = log q_0(f^-1(z)) - sum_k log |det df_k / dz_{k-1}|

- the flow guide: q_0 = a guide family's q(z | x) (normal, Laplace, ...), and each f_k is conditioned on a context
  vector the encoder outputs beside the family's parameters (Kingma et al., 2016);
- the flow prior: q_0 = N(0, I), and each f_k is learned with the model.

Between two layers the dimensions are reversed, so that a coupling layer's fixed half is changed by the next. A
transform's inverse decides what the flow can do beyond training. Coupling layers invert in one pass;
autoregressive ones in one pass per latent dimension, so a flow prior uses them the other way round (density in
one pass, as a masked autoregressive flow); a neural autoregressive layer has no inverse at all, so a guide built
from it scores only its own draws: enough for the ELBO and importance sampling from the guide, not for AIS or the
defensive proposal, which score the guide at points it did not draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.distributions import constraints

from ppvae.parts.guides import GUIDES
from ppvae.parts.priors import PRIORS, Prior
from ppvae.parts.registry import positive


class Reverse(T.Transform):
    """z -> z[..., ::-1]: the permutation between two flow layers (volume-preserving, its own inverse)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self):
        super().__init__(cache_size=1)  # so that a draw scored at once is the layers' own (their inverse cached)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[:-1])


@dataclass(frozen=True)
class Kind:
    """A kind of flow layer: how to build it (plain and conditioned on a context) and what its inverse costs."""

    plain: Callable | None  # (dim, hidden) -> TransformModule
    conditional: Callable | None  # (dim, context, hidden) -> ConditionalTransformModule
    inverse: str  # "one pass", "per dimension" or "none"
    min_dim: int = 2


KINDS = {
    "affine_coupling": Kind(
        lambda d, h: T.affine_coupling(d, hidden_dims=h),
        lambda d, c, h: T.conditional_affine_coupling(d, c, hidden_dims=h),
        "one pass",
    ),
    "spline_coupling": Kind(lambda d, h: T.spline_coupling(d, hidden_dims=h), None, "one pass"),
    "affine_autoregressive": Kind(
        lambda d, h: T.affine_autoregressive(d, hidden_dims=h),
        lambda d, c, h: T.conditional_affine_autoregressive(d, c, hidden_dims=h),
        "per dimension",
    ),
    "spline_autoregressive": Kind(
        lambda d, h: T.spline_autoregressive(d, hidden_dims=h),
        lambda d, c, h: T.conditional_spline_autoregressive(d, c, hidden_dims=h),
        "per dimension",
    ),
    "neural_autoregressive": Kind(
        None, lambda d, c, h: T.conditional_neural_autoregressive(d, c, hidden_dims=h), "none"
    ),
    "spline": Kind(lambda d, h: T.spline(d), lambda d, c, h: T.conditional_spline(d, c, hidden_dims=h), "one pass", 1),
}


def _check(transform: str, layers: int, hidden: Sequence[int], z_dim: int, where: str) -> tuple[Kind, list[int]]:
    usable = [name for name, kind in KINDS.items() if (kind.conditional if where == "guide" else kind.plain)]
    if transform not in usable:
        raise ValueError(f"unknown transform {transform!r} for a flow {where}; available: {', '.join(usable)}")
    kind = KINDS[transform]
    if z_dim < kind.min_dim:
        raise ValueError(f"the {transform} transform needs at least {kind.min_dim} latent dimensions, got {z_dim}")
    positive("layers", layers, integer=True)
    hidden = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden must list positive widths, got {hidden}")
    return kind, hidden


def _interleaved(layers: Sequence[T.Transform]) -> list[T.Transform]:
    """The layers with the dimensions reversed between each two."""
    out: list[T.Transform] = []
    for i, layer in enumerate(layers):
        out += [Reverse(), layer] if i else [layer]
    return out


@GUIDES.register("flow")
class FlowGuide(nn.Module):
    """A base family's q(z | x) carried through ``layers`` invertible transforms conditioned on x (an IAF-style flow).

    The encoder outputs the base family's parameters and ``context`` more numbers, which every transform reads.
    ``transform``: affine_coupling, affine_autoregressive, spline_autoregressive, spline (per dimension) or
    neural_autoregressive (no inverse: scores only its own draws, so no AIS or defensive proposal).
    """

    point_mass = False

    def __init__(
        self,
        z_dim: int,
        base: str = "normal",
        transform: str = "affine_coupling",
        layers: int = 2,
        hidden: Sequence[int] = (64,),
        context: int = 32,
    ):
        super().__init__()
        if base == "flow":
            raise ValueError("a flow guide's base is a guide family (normal, laplace, ...), not another flow")
        self.base = GUIDES.build(base, z_dim=z_dim)
        if self.base.point_mass:
            raise ValueError(
                f"a flow on the point-mass guide {base!r} has no density to carry: take base='normal' or another family"
            )
        kind, hidden = _check(transform, layers, hidden, z_dim, "guide")
        self.z_dim, self.context = z_dim, int(positive("context", context, integer=True))
        self.transforms = nn.ModuleList(kind.conditional(z_dim, self.context, hidden) for _ in range(int(layers)))
        self.scores_any_point = kind.inverse != "none"
        self.transform = transform

    @property
    def width(self) -> int:
        return self.base.width + self.context

    def loc_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base family's location and scale (before the transforms)."""
        return self.base.loc_scale(h[..., : self.base.width])

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        base_h, context = h.split([self.base.width, self.context], dim=-1)
        layers = [t.condition(context) for t in self.transforms]
        return dist.TransformedDistribution(self.base(base_h), _interleaved(layers))


@PRIORS.register("flow")
class FlowPrior(Prior):
    """A learned p(z): N(0, I) carried through ``layers`` invertible transforms (a flow prior).

    ``transform``: affine_coupling (default), spline_coupling, affine_autoregressive or spline_autoregressive
    (used as masked autoregressive flows: the density in one pass, a draw in one pass per dimension), or spline
    (per dimension, for any z_dim).
    """

    def __init__(self, z_dim: int, transform: str = "affine_coupling", layers: int = 4, hidden: Sequence[int] = (64,)):
        super().__init__(z_dim)
        kind, hidden = _check(transform, layers, hidden, z_dim, "prior")
        self.transforms = nn.ModuleList(kind.plain(z_dim, hidden) for _ in range(int(layers)))
        self.transform = transform
        # an autoregressive layer is cheap one way only: put that way on the density, which training needs
        self._inverted = kind.inverse == "per dimension"

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        layers = [t.inv if self._inverted else t for t in self.transforms]
        return dist.TransformedDistribution(dist.Normal(self._zeros, self._ones).to_event(1), _interleaved(layers))
