"""The networks between stochastic layers: what turns one latent layer into a hierarchy z_L -> ... -> z_1 -> x.

A hierarchical VAE (Burda, Grosse & Salakhutdinov, 2016) has L stochastic layers, z_1 next to x:

    model:  z_L ~ p(z_L | c),   z_l ~ N(mu_l(z_{l+1}, c), sigma_l(z_{l+1}, c)^2)  for l = L-1 .. 1,   x ~ p(x | z_1, c)
    guide:  z_1 ~ q(z_1 | x, c),   z_{l+1} ~ q(z_{l+1} | z_l, c)                                  for l = 1 .. L-1

The network part (mlp, conv) joins x and z_1; `LatentLayers` holds, for each pair of neighbouring
latent layers, a network up (z_l -> the guide family's parameters for z_{l+1}) and one down (z_{l+1} -> the
location and log-variance of p(z_l | z_{l+1})). Both take the condition c where there is one, and both accept
any batch shape in front of the layer (the points of AIS ride in a plate of their own).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ppvae.parts.networks import MLP


def check_layer_sizes(z_dim: int | Sequence[int]) -> tuple[int, ...]:
    """``z_dim`` as the layer sizes from x upward: one int is one layer, a list one size per layer."""
    sizes = list(z_dim) if isinstance(z_dim, (list, tuple)) else [z_dim]
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, float)) or int(s) != s or s < 1 for s in sizes):
        raise ValueError(
            f"z_dim must be a positive integer, or one positive integer per stochastic layer "
            f"(z_dim=[64, 32]: z1 of 64 next to x, z2 of 32 above it), got {z_dim!r}"
        )
    return tuple(int(s) for s in sizes)


class Conditioned(nn.Module):
    """An MLP on a latent layer and, where there is one, the condition c, for any batch shape in front."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int], condition_dim: int):
        super().__init__()
        self.net = MLP(in_features + condition_dim, out_features, hidden)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if c is not None:
            z = torch.cat([z, c.expand(z.shape[:-1] + c.shape[-1:])], dim=-1)
        return self.net(z)


class LatentLayers(nn.Module):
    """``up[l]``: z_{l+1} -> ``guide_widths[l+1]`` numbers, ``down[l]``: z_{l+2} -> 2 * size of z_{l+1}
    (0-based l over the L - 1 pairs of neighbouring layers), each an MLP with ``hidden`` widths."""

    def __init__(
        self, sizes: Sequence[int], guide_widths: Sequence[int], hidden: Sequence[int] = (256,), condition_dim: int = 0
    ):
        super().__init__()
        self.hidden = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"layer_hidden widths must be positive, got {self.hidden}")
        pairs = list(zip(sizes[:-1], sizes[1:]))
        self.up = nn.ModuleList(
            Conditioned(lower, width, self.hidden, condition_dim) for (lower, _), width in zip(pairs, guide_widths[1:])
        )
        self.down = nn.ModuleList(
            Conditioned(upper, 2 * lower, self.hidden[::-1], condition_dim) for lower, upper in pairs
        )
