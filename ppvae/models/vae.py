"""The variational autoencoder as a pair of Pyro programs built from parts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import pyro
import pyro.poutine as poutine
import torch

from ppvae.estimator import Capabilities, LatentVariableModel
from ppvae.parts import GUIDES, LIKELIHOODS, NETWORKS, PRIORS, normalize_spec
from ppvae.parts.registry import PartSpec


class VAE(LatentVariableModel):
    """Variational autoencoder (Kingma & Welling, 2014): z ~ prior, x ~ likelihood(decoder(z)).

    The guide is the encoder's q(z | x). Every part is chosen by name or small
    dict (see ``ppvae parts``); ``beta`` scales the latent site of model and
    guide alike, which multiplies the KL term by beta (a beta-VAE).

        VAE(x_shape=(1, 28, 28), z_dim=20)   # MLP 784-400-20, N(0, I) prior, Bernoulli likelihood
    """

    capabilities = Capabilities()  # binary data and a usable proposal follow the likelihood and guide built

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 20,
        prior: PartSpec = "normal",
        likelihood: PartSpec = "bernoulli",
        guide: PartSpec = "normal",
        network: PartSpec = "mlp",
        beta: float = 1.0,
    ):
        super().__init__(tuple(x_shape), z_dim, beta)
        self._build_parts(prior, likelihood, guide, network, condition_dim=0)

    def _build_parts(
        self, prior: PartSpec, likelihood: PartSpec, guide: PartSpec, network: PartSpec, condition_dim: int
    ) -> None:
        """Build every part from its spec; ``condition_dim`` is the width of the condition c (0: none)."""
        self.specs = {
            "prior": normalize_spec(prior, "prior"),
            "likelihood": normalize_spec(likelihood, "likelihood"),
            "guide": normalize_spec(guide, "guide"),
            "network": normalize_spec(network, "network"),
        }
        self.prior = PRIORS.build(prior, z_dim=self.z_dim, x_shape=self.x_shape, condition_dim=condition_dim)
        self.likelihood = LIKELIHOODS.build(likelihood, x_shape=self.x_shape)
        self.guide_family = GUIDES.build(guide, z_dim=self.z_dim)
        self.capabilities = dataclasses.replace(
            type(self).capabilities, binary=self.likelihood.binary, proposal=not self.guide_family.point_mass
        )
        self.networks = NETWORKS.build(
            network,
            x_shape=self.x_shape,
            z_dim=self.z_dim,
            encoder_out=self.guide_family.width,
            decoder_out=self.likelihood.width,
            condition_dim=condition_dim,
        )

        # Each program registers only the parts it uses, as Pyro's VAE tutorial does:
        # half the parameter messages per step of registering the whole model twice.
        model_parts = dict(prior=self.prior, likelihood=self.likelihood, decoder=self.networks.decoder_net)
        if self.prior.uses_encoder:  # the VampPrior: p(z) is built from q(z | pseudo-inputs)
            self.prior.attach(self.pseudo_posterior)
            model_parts.update(guide=self.guide_family, encoder=self.networks.encoder_net)
        self._pyro_parts = {
            "model": self._with_parameters(**model_parts),
            "guide": self._with_parameters(guide=self.guide_family, encoder=self.networks.encoder_net),
        }

    def pseudo_posterior(
        self, u: torch.Tensor, c: torch.Tensor | None = None, batch_shape: tuple[int, ...] | None = None
    ):
        """q(z | u, c) for pseudo-images u: what the VampPrior averages (a method, so the model pickles)."""
        h = self.networks.encoder(u, c)
        return self.guide_family(h if batch_shape is None else h.reshape(*batch_shape, h.shape[-1]))

    def _with_parameters(self, **modules: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return [(f"{self.pyro_name}.{name}", m) for name, m in modules.items() if any(True for _ in m.parameters())]

    def _register(self, program: str) -> None:
        for name, module in self._pyro_parts[program]:
            pyro.module(name, module)

    def config(self) -> dict[str, Any]:
        return {"x_shape": list(self.x_shape), "z_dim": self.z_dim, **self.specs, "beta": self.beta}

    @staticmethod
    def _latent_scale(kl_weight: float):
        """poutine.scale(kl_weight) around the latent site, in model and guide alike, so that the
        ELBO's KL term is multiplied by it; nothing at 1, the common case."""
        return poutine.scale(scale=kl_weight) if kl_weight != 1.0 else nullcontext()

    # -- the Pyro programs ------------------------------------------------------------------------

    def model(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """p(z | c) p(x | z, c): z ~ prior, x ~ likelihood(decoder(z, c)), observed where ``x`` is given.

        ``kl_weight`` scales the latent site (beta, times a warm-up factor, in training);
        without ``x``, ``size`` images are generated.
        """
        self._register("model")
        n = x.shape[0] if x is not None else size if size is not None else c.shape[0]
        if x is not None:
            x = x.reshape((n,) + self.x_shape)
        with pyro.plate("data", n):
            with self._latent_scale(kl_weight):
                z = pyro.sample("z", self.prior(c))
            return pyro.sample("x", self.observed(self.likelihood(self.networks.decoder(z, c)), c), obs=x)

    def observed(self, likelihood, c: torch.Tensor | None):
        """p(x | z, c) as the model observes it: whole images here; a completion model scores only hidden pixels."""
        return likelihood

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """q(z | x, c): the encoder's distribution over z for each image, its site scaled like the model's."""
        self._register("guide")
        x = x.reshape((x.shape[0],) + self.x_shape)
        with pyro.plate("data", x.shape[0]):
            with self._latent_scale(kl_weight):
                return pyro.sample("z", self.guide_family(self.networks.encoder(x, c)))

    # -- the parts, for the estimator API ---------------------------------------------------------

    def likelihood_mean(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood(self.networks.decoder(z, c)).mean

    def prior_sample(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        prior = self.prior(c)
        return prior.sample() if prior.batch_shape == (n,) else prior.sample((n,))

    def check_data(self, x: torch.Tensor) -> None:
        self.likelihood.check(x)

    def initialize(self, x: torch.Tensor) -> None:
        self.likelihood.initialize(x)
        self.prior.initialize(x)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v['name'] if len(v) == 1 else v}" for k, v in self.specs.items())
        beta = f", beta={self.beta:g}" if self.beta != 1 else ""
        return f"{type(self).__name__}(x_shape={self.x_shape}, z_dim={self.z_dim}, {parts}{beta})"
