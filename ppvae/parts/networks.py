"""Networks: the trunks of the encoder (image -> guide parameters) and decoder (z -> likelihood parameters)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ppvae.parts.registry import Registry

NETWORKS = Registry("network", context=("x_shape", "z_dim", "encoder_out", "decoder_out", "condition_dim"))


class MLP(nn.Sequential):
    """Fully connected layers with ReLU between them; the last layer is linear. ``hidden``: one width or a list."""

    def __init__(self, in_features: int, out_features: int, hidden: int | Sequence[int]):
        hidden = hidden_widths(hidden)
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


def hidden_widths(hidden: int | Sequence[int]) -> list[int]:
    """Hidden layer widths from one width or a list, each checked positive."""
    widths = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
    if any(h < 1 for h in widths):
        raise ValueError(f"hidden widths must be positive, got {widths}")
    return widths


def with_condition(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """Features (N, F) joined by a condition (..., N, C): a condition with leading dims (an enumerated label,
    one row per class) gives features for each, (..., N, F + C)."""
    if c is None:
        return h
    batch = torch.broadcast_shapes(h.shape[:-1], c.shape[:-1])
    return torch.cat([h.expand(batch + h.shape[-1:]), c.expand(batch + c.shape[-1:])], dim=-1)


class Networks(nn.Module):
    """An encoder and a decoder, built together because their sizes mirror each other.

    ``encoder(x, c)`` takes images (N, C, H, W) and an optional condition
    (N, condition_dim) and returns (N, encoder_out); ``decoder(z, c)`` maps
    (..., z_dim) to (..., decoder_out). ``decoder_out=0`` builds the encoder alone:
    a classifier's trunk, M2's q(y | x).
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
        hidden = hidden_widths(hidden)
        self.x_dim = math.prod(x_shape)
        self.encoder_net = MLP(self.x_dim + condition_dim, encoder_out, hidden)
        self.decoder_net = MLP(z_dim + condition_dim, decoder_out, hidden[::-1]) if decoder_out else None

    def encoder(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder_net(with_condition(x.reshape(x.shape[0], self.x_dim), c))

    def decoder(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if c is not None:
            z = torch.cat([z, c.expand(z.shape[:-1] + c.shape[-1:])], dim=-1)
        return self.decoder_net(z)


@NETWORKS.register("linear")
class LinearNetworks(MLPNetworks):
    """One linear map each way: the decoder of factor analysis and of a "linear VAE"."""

    def __init__(
        self, x_shape: tuple[int, ...], z_dim: int, encoder_out: int, decoder_out: int, condition_dim: int = 0
    ):
        super().__init__(x_shape, z_dim, encoder_out, decoder_out, condition_dim, hidden=())


def _conv_block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU()]


@NETWORKS.register("conv")
class ConvNetworks(Networks):
    """Two stride-2 conv layers with batch norm each way, then ``hidden`` units: for images whose sides divide by 4.

    Encoder: conv 4x4/2 (``channels[0]``) -> conv 4x4/2 (``channels[1]``) -> dense ``hidden`` -> out.
    Decoder: the mirror image, with transposed convolutions. A condition joins at the dense layers.
    """

    def __init__(
        self,
        x_shape: tuple[int, ...],
        z_dim: int,
        encoder_out: int,
        decoder_out: int,
        condition_dim: int = 0,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
    ):
        super().__init__()
        c, h, w = x_shape
        if h % 4 or w % 4:
            raise ValueError(f"the conv network needs image sides divisible by 4, got {h}x{w}; use network='mlp'")
        if len(channels) != 2 or min(channels) < 1 or hidden < 1:
            raise ValueError(f"channels must be two positive widths and hidden positive, got {channels} and {hidden}")
        c1, c2 = (int(k) for k in channels)
        per_pixel, extra = divmod(decoder_out, c * h * w)
        if extra:
            raise ValueError(
                f"the conv decoder outputs whole channels; {decoder_out} numbers is not a multiple of {c * h * w}"
            )
        self.x_shape, self.z_dim = tuple(x_shape), z_dim
        self.code_shape = (c2, h // 4, w // 4)
        code = math.prod(self.code_shape)
        self.encoder_convs = nn.Sequential(
            *_conv_block(nn.Conv2d(c, c1, 4, 2, 1), c1), *_conv_block(nn.Conv2d(c1, c2, 4, 2, 1), c2), nn.Flatten()
        )
        self.encoder_head = MLP(code + condition_dim, encoder_out, [hidden])
        # the parts each program registers with Pyro
        self.encoder_net = nn.ModuleList([self.encoder_convs, self.encoder_head])
        self.decoder_net = None
        if decoder_out:
            self.decoder_head = nn.Sequential(MLP(z_dim + condition_dim, code, [hidden]), nn.ReLU())
            self.decoder_convs = nn.Sequential(
                *_conv_block(nn.ConvTranspose2d(c2, c1, 4, 2, 1), c1), nn.ConvTranspose2d(c1, c * per_pixel, 4, 2, 1)
            )
            self.decoder_net = nn.ModuleList([self.decoder_head, self.decoder_convs])

    def encoder(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder_convs(x.reshape((x.shape[0],) + self.x_shape))
        return self.encoder_head(with_condition(h, c))

    def decoder(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        batch = z.shape[:-1]  # (N,) in training, (K, N) when the evidence is estimated
        if c is not None:
            z = torch.cat([z, c.expand(batch + c.shape[-1:])], dim=-1)
        h = self.decoder_head(z.reshape(-1, z.shape[-1])).reshape((-1,) + self.code_shape)
        return self.decoder_convs(h).reshape(batch + (-1,))
