"""The generalized denoising autoencoder of Bengio, Yao, Alain & Vincent (2013), and its sampling chain.

    x~ ~ C(x~ | x)        a corruption part (salt and pepper, Gaussian, masked pixels)
    x  ~ p(x | x~)        a network from the corrupted image to a likelihood over the clean one

A Pyro program with no latent site, as `CompletionNetwork` is: the corruption is drawn inside
the program, and SVI maximises log p(x | x~) over the training images and their corruptions.
Bengio et al. show that the Markov chain that alternates corruption and denoising,

    x_{t+1} ~ p(x | x~_t),   x~_t ~ C(x~ | x_t),

has as its stationary distribution an estimate of the data distribution that is consistent where
p(x | x~) is; ``chain`` runs it, vectorised over chains, with burn-in and thinning. *Walkback*
(their section 3.4) trains on the chain's own excursions too: from each training image a few
steps are taken, and each step's p(x | x~_k) is scored against the original image, which
teaches the model to pull back the spurious modes the chain would otherwise wander into.

There is no tractable p(x) here, only a conditional: ``log_evidence`` refuses in one line, and
the chain's samples are compared by sample measures instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pyro
import torch

from ppvae.data import Data
from ppvae.estimator import Capabilities, LatentVariableModel
from ppvae.infer import seeded, serialised
from ppvae.models.declared import DeclaredParts
from ppvae.parts import LIKELIHOODS, NETWORKS
from ppvae.parts.corruptions import CORRUPTIONS
from ppvae.parts.registry import PartSpec

CHAIN_STEPS = 100  # the chain's default length, from noise, for ``sample``
# with walkback 4, the setting whose chain moves among the garments from noise (see the class's docstring)
DEFAULT_CORRUPTION = {"name": "salt_pepper", "level": 0.5}


class DenoisingAutoencoder(DeclaredParts, LatentVariableModel):
    """x~ ~ ``corruption``(x), x ~ ``likelihood``(network(x~)); ``sample(n)`` runs the denoising chain from noise.

    ``network`` is an encoder x~ -> ``code_dim`` numbers and a decoder to the likelihood's parameters (the
    VAE's networks, with no noise between them); ``walkback=k`` scores k more chain steps from each training
    image against it (0: the plain denoising objective).

    The defaults, salt and pepper on half of the pixels and four walkback steps, are what made the chain move
    among Fashion-MNIST's garments from noise: with 0.3 and one walkback step or four the chains fell into one or
    two garments (MMD² to the test images 0.27 after 10 epochs and 1,000 steps). Even so the chain reached the
    data in one run of four (0.021, against 0.036 for a VAE's samples); in three seeds' runs and tutorial 8's it
    ended at 0.203, 0.147 and 0.132, settled in a few garments, its best samples near step 100 (``python
    benchmarks/denoising_chain.py --seeds 0 1 2``, docs/results.md). Walkback costs its steps: with 4 an epoch
    takes about five times as long.

        DenoisingAutoencoder(x_shape=(1, 28, 28), corruption={"name": "mask", "level": 0.4}, walkback=1)
    """

    capabilities = Capabilities(latent=False, density=False)
    aliases = ("dae",)

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        corruption: PartSpec = DEFAULT_CORRUPTION,
        likelihood: PartSpec = "bernoulli",
        network: PartSpec = "mlp",
        code_dim: int = 256,
        walkback: int = 4,
    ):
        super().__init__(tuple(x_shape), z_dim=0)
        for name, value, low in (("code_dim", code_dim, 1), ("walkback", walkback, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        self.code_dim, self.walkback = code_dim, walkback
        self.declare(corruption=corruption, likelihood=likelihood, network=network)
        self.corruption = CORRUPTIONS.build(corruption)
        self.likelihood = LIKELIHOODS.build(likelihood, x_shape=self.x_shape)
        self.networks = NETWORKS.build(
            network,
            x_shape=self.x_shape,
            z_dim=code_dim,
            encoder_out=code_dim,
            decoder_out=self.likelihood.width,
            condition_dim=0,
        )
        self.capabilities = dataclasses.replace(type(self).capabilities, binary=self.likelihood.binary)
        self._pyro_parts = {"model": self._with_parameters(networks=self.networks, likelihood=self.likelihood)}

    def config(self) -> dict[str, Any]:
        return {"x_shape": list(self.x_shape), **self.specs, "code_dim": self.code_dim, "walkback": self.walkback}

    @property
    def training_arguments(self) -> dict[str, Any]:
        return {"walkback": self.walkback} if self.walkback else {}

    def denoiser(self, noisy: torch.Tensor):
        """p(x | x~) for corrupted images (N, C, H, W)."""
        return self.likelihood(self.networks.decoder(torch.relu(self.networks.encoder(noisy))))

    # -- the Pyro programs ------------------------------------------------------------------------------

    def model(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
        walkback: int = 0,
    ):
        """x~ drawn from the corruption, then x ~ p(x | x~), observed. With ``walkback=k`` (in training), k more
        steps of the chain from each image, each step's p(x | x~_j) observing the original image."""
        if x is None:
            raise ValueError(f"{type(self).__name__} generates by its chain: model.chain(...) or model.sample(n)")
        self._register("model")
        x = x.reshape((x.shape[0],) + self.x_shape)
        with pyro.plate("data", x.shape[0]):
            current = x
            for step in range(1 + walkback):
                denoised = self.denoiser(self.corruption(current))
                pyro.sample("x" if step == 0 else f"x_walkback_{step}", denoised, obs=x)
                if step < walkback:
                    with torch.no_grad():
                        current = denoised.sample()
            return x

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
        walkback: int = 0,
    ):
        """Nothing to infer: no latent variables."""

    # -- the chain -------------------------------------------------------------------------------------------

    @serialised
    @torch.no_grad()
    def chain(
        self,
        start: Data | int = 16,
        steps: int = CHAIN_STEPS,
        burn_in: int = 0,
        thin: int = 1,
        means: bool = True,
        seed: int | None = 0,
        keep: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Run the chain x_{t+1} ~ p(x | C(x_t)) from ``start`` (images, or a number of chains started from
        uniform noise), one chain per image at once; keep every ``thin``-th step after ``burn_in``, or the
        steps listed in ``keep`` (from 1, at most ``steps``).

        Returns (kept steps, chains, C, H, W): E[x | x~_t] at each kept step with ``means`` (what one shows),
        else the chain's states themselves."""
        for name, value, low in (("steps", steps, 1), ("thin", thin, 1), ("burn_in", burn_in, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if burn_in >= steps:
            raise ValueError(f"burn_in={burn_in} leaves none of the {steps} steps to keep")
        if keep is not None and (not keep or any(not isinstance(k, int) or not 1 <= k <= steps for k in keep)):
            raise ValueError(f"keep lists steps from 1 to {steps}, got {keep!r}")
        kept_steps = (
            set(keep) if keep is not None else {t for t in range(burn_in + 1, steps + 1) if (t - burn_in) % thin == 0}
        )
        self.eval()
        with seeded(seed, self.device):
            if isinstance(start, int) and not isinstance(start, bool):
                if start < 1:
                    raise ValueError(f"start is images or a number of chains >= 1, got {start}")
                x = torch.rand(start, *self.x_shape, device=self.device)
                x = torch.bernoulli(x) if self.capabilities.binary else x
            else:
                x = self.prepare(start, "auto", 0 if seed is None else seed)
            kept = []
            for step in range(1, steps + 1):
                denoised = self.denoiser(self.corruption(x))
                x = denoised.sample()
                if step in kept_steps:
                    kept.append(denoised.mean if means else x)
        return torch.stack(kept)

    def sample(self, n: int = 64, y: Any = None, seed: int | None = None) -> torch.Tensor:
        """``n`` images: the means of ``CHAIN_STEPS`` steps of the chain from noise (its last step)."""
        if y is not None:
            raise ValueError(f"{type(self).__name__} is not conditional: sample takes no labels")
        return self.chain(n, steps=CHAIN_STEPS, keep=[CHAIN_STEPS], seed=seed)[0]

    @torch.no_grad()
    def reconstruct(
        self, data: Data, y: Any = None, c: torch.Tensor | None = None, binarize: str | None = "auto", seed: int = 0
    ) -> torch.Tensor:
        """E[x | x~] for one corruption x~ of each image (drawn with ``seed``): its denoising."""
        self.eval()
        x = self.prepare(data, binarize, seed)
        with seeded(seed, self.device):
            return self.denoiser(self.corruption(x)).mean

    def likelihood_mean(self, z: torch.Tensor | None, c: torch.Tensor | None = None) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} has no latent code to decode; see chain and reconstruct")

    def __repr__(self) -> str:
        walkback = f", walkback={self.walkback}" if self.walkback else ""
        parts = self.described_parts()
        return f"DenoisingAutoencoder(x_shape={self.x_shape}, {parts}, code_dim={self.code_dim}{walkback})"
