"""Networks: the trunks of the encoder (image -> guide parameters) and decoder (z -> likelihood parameters)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ppvae.parts.registry import Registry

NETWORKS = Registry("network", context=("x_shape", "z_dim", "encoder_out", "decoder_out", "condition_dim"))


class MLP(nn.Sequential):
    """Fully connected layers with ReLU between them; the last layer is linear."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int]):
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class Networks(nn.Module):
    """An encoder and a decoder, built together because their sizes mirror each other.

    ``encoder(x, c)`` takes images (N, C, H, W) and an optional condition
    (N, condition_dim) and returns (N, encoder_out); ``decoder(z, c)`` maps
    (..., z_dim) to (..., decoder_out).
    """


@NETWORKS.register("mlp")
class MLPNetworks(Networks):
    """Multi-layer perceptrons; ``hidden`` lists the encoder's hidden widths (the decoder mirrors them)."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        z_dim: int,
        encoder_out: int,
        decoder_out: int,
        condition_dim: int = 0,
        hidden: Sequence[int] = (400,),
    ):
        super().__init__()
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {hidden}")
        self.x_dim = math.prod(x_shape)
        self.encoder_net = MLP(self.x_dim + condition_dim, encoder_out, hidden)
        self.decoder_net = MLP(z_dim + condition_dim, decoder_out, hidden[::-1])

    def encoder(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], self.x_dim)
        if c is not None:
            h = torch.cat([h, c], dim=-1)
        return self.encoder_net(h)

    def decoder(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if c is not None:
            z = torch.cat([z, c.expand(z.shape[:-1] + c.shape[-1:])], dim=-1)
        return self.decoder_net(z)


@NETWORKS.register("linear")
class LinearNetworks(MLPNetworks):
    """One linear map each way: the decoder of factor analysis and of a "linear VAE"."""

    def __init__(self, x_shape: tuple[int, ...], z_dim: int, encoder_out: int, decoder_out: int, condition_dim: int = 0):
        super().__init__(x_shape, z_dim, encoder_out, decoder_out, condition_dim, hidden=())
