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
from ppvae.infer.lowered import latent_terms, total_log_prob, weighted
from ppvae.models.declared import DeclaredParts
from ppvae.parts import GUIDES, LIKELIHOODS, NETWORKS, PRIORS
from ppvae.parts.guides import NormalGuide
from ppvae.parts.layers import LatentLayers
from ppvae.parts.priors import StandardNormal
from ppvae.parts.registry import PartSpec


class VAE(DeclaredParts, LatentVariableModel):
    """Variational autoencoder (Kingma & Welling, 2014): z ~ prior, x ~ likelihood(decoder(z)).

    The guide is the encoder's q(z | x). Every part is chosen by name or small
    dict (see ``ppvae parts``); ``beta`` scales the latent sites of model and
    guide alike, which multiplies the KL term by beta (a beta-VAE).

    ``z_dim`` as a list declares a hierarchy of stochastic layers, z1 next to x (Burda et al., 2016):
    ``z_dim=[64, 32]`` is z2 ~ prior, z1 ~ N(mu(z2), sigma(z2)^2), x ~ likelihood(decoder(z1)) in the
    model and z1 ~ q(z1 | x), z2 ~ q(z2 | z1) in the guide, one sample site per layer. The prior is
    the top layer's; each layer below has a diagonal normal given the one above; the guide family
    serves every layer; the network joins x and z1, and MLPs of ``layer_hidden`` widths join the
    layers. ``z_dim`` is then z1's size: the layer ``encode`` reads and ``decode`` takes by default.

        VAE(x_shape=(1, 28, 28), z_dim=20)        # MLP 784-400-20, N(0, I) prior, Bernoulli likelihood
        VAE(x_shape=(1, 28, 28), z_dim=[64, 32])  # two stochastic layers
    """

    capabilities = Capabilities()  # binary data and a usable proposal follow the likelihood and guide built

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int | Sequence[int] = 20,
        prior: PartSpec = "normal",
        likelihood: PartSpec = "bernoulli",
        guide: PartSpec = "normal",
        network: PartSpec = "mlp",
        beta: float = 1.0,
        layer_hidden: Sequence[int] = (256,),
    ):
        super().__init__(tuple(x_shape), z_dim, beta)
        self._build_parts(prior, likelihood, guide, network, condition_dim=0, layer_hidden=layer_hidden)

    def _build_parts(
        self,
        prior: PartSpec,
        likelihood: PartSpec,
        guide: PartSpec,
        network: PartSpec,
        condition_dim: int,
        layer_hidden: Sequence[int] = (256,),
    ) -> None:
        """Build every part from its spec; ``condition_dim`` is the width of the condition c (0: none)."""
        sizes = self.layer_sizes
        self.sites = ("z",) if len(sizes) == 1 else tuple(f"z{i + 1}" for i in range(len(sizes)))
        self.declare(prior=prior, likelihood=likelihood, guide=guide, network=network)
        self.prior = PRIORS.build(prior, z_dim=sizes[-1], x_shape=self.x_shape, condition_dim=condition_dim)
        self.likelihood = LIKELIHOODS.build(likelihood, x_shape=self.x_shape)
        self.guide_family = GUIDES.build(guide, z_dim=sizes[0])
        if len(sizes) > 1 and self.prior.uses_encoder:
            raise ValueError(
                f"the {self.specs['prior']['name']} prior is built from q(z | x), which a hierarchy reaches only "
                "through the layers below: with several layers take prior='normal', 'mixture' or another"
            )
        if self.prior.uses_encoder and (self.guide_family.point_mass or self.specs["guide"]["name"] == "flow"):
            why = (
                "a point mass has no density to average"
                if self.guide_family.point_mass
                else "a flow's transforms read one context per image and cannot score every code under every "
                "pseudo-image at once"
            )
            raise ValueError(
                f"the {self.specs['prior']['name']} prior is the mean of q(z | u_k) over its pseudo-images, which the "
                f"{self.specs['guide']['name']} guide cannot give ({why}): take guide='normal' or another family, "
                "or prior='flow' or 'mixture'"
            )
        # the layers above z1 (empty for one layer): their guide families, p(z_l | z_{l+1}), the networks between
        self.upper_guides = torch.nn.ModuleList(GUIDES.build(guide, z_dim=size) for size in sizes[1:])
        self.layer_priors = torch.nn.ModuleList(GUIDES.build("normal", z_dim=size) for size in sizes[:-1])
        widths = [self.guide_family.width] + [family.width for family in self.upper_guides]
        self.layers = LatentLayers(sizes, widths, layer_hidden, condition_dim)
        self.capabilities = dataclasses.replace(
            type(self).capabilities,
            binary=self.likelihood.binary,
            proposal=not self.guide_family.point_mass,
            scores_any_point=getattr(self.guide_family, "scores_any_point", True),
        )
        self.networks = NETWORKS.build(
            network,
            x_shape=self.x_shape,
            z_dim=self.z_dim,
            encoder_out=self.guide_family.width,
            decoder_out=self.likelihood.width,
            condition_dim=condition_dim,
        )

        # each program registers only the parts it uses (see ppvae.models.declared)
        model_parts = dict(prior=self.prior, likelihood=self.likelihood, decoder=self.networks.decoder_net)
        guide_parts = dict(guide=self.guide_family, encoder=self.networks.encoder_net)
        if self.prior.uses_encoder:  # the VampPrior: p(z) is built from q(z | pseudo-inputs)
            self.prior.attach(self.pseudo_posterior)
            model_parts.update(guide_parts)
        model_parts.update(layers_down=self.layers.down, layer_priors=self.layer_priors)
        guide_parts.update(layers_up=self.layers.up, upper_guides=self.upper_guides)
        self._pyro_parts = {
            "model": self._with_parameters(**model_parts),
            "guide": self._with_parameters(**guide_parts),
        }

    def pseudo_posterior(
        self, u: torch.Tensor, c: torch.Tensor | None = None, batch_shape: tuple[int, ...] | None = None
    ):
        """q(z | u, c) for pseudo-images u: what the VampPrior averages (a method, so the model pickles)."""
        h = self.networks.encoder(u, c)
        return self.guide_family(h if batch_shape is None else h.reshape(*batch_shape, h.shape[-1]))

    def config(self) -> dict[str, Any]:
        z_dim = self.z_dim if len(self.layer_sizes) == 1 else list(self.layer_sizes)
        return {
            "x_shape": list(self.x_shape),
            "z_dim": z_dim,
            **self.specs,
            "beta": self.beta,
            "layer_hidden": list(self.layers.hidden),
        }

    @property
    def latent_sizes(self) -> dict[str, int]:
        """Each latent site's size, z1 (next to x) first: ``{"z": 20}``, or ``{"z1": 64, "z2": 32}``."""
        return dict(zip(self.sites, self.layer_sizes))

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

        In a hierarchy the top layer comes from the prior and each one below from p(z_l | z_{l+1}, c).
        ``kl_weight`` scales the latent sites (beta, times a warm-up factor, in training);
        without ``x``, ``size`` images are generated.
        """
        n = x.shape[0] if x is not None else size if size is not None else c.shape[0]
        with pyro.plate("data", n):
            return self.model_sites(x, c, kl_weight)

    def model_sites(self, x: torch.Tensor | None, c: torch.Tensor | None, kl_weight: float = 1.0) -> torch.Tensor:
        """The model's sites inside the data plate, for a program that opens the plate itself (M2 samples its
        label there first and hands its one-hot vector as ``c``)."""
        self._register("model")
        if x is not None:
            x = x.reshape((x.shape[0],) + self.x_shape)
        with self._latent_scale(kl_weight):
            z = pyro.sample(self.sites[-1], self.prior(c))
            for layer in reversed(range(len(self.sites) - 1)):
                z = pyro.sample(self.sites[layer], self._layer_prior(layer, z, c))
        return pyro.sample("x", self.observed(self.likelihood(self.networks.decoder(z, c)), c), obs=x)

    def _layer_prior(self, layer: int, upper: torch.Tensor, c: torch.Tensor | None):
        """p(z_l | z_{l+1}, c) for the 0-based ``layer`` l, a diagonal normal read from the layer above."""
        return self.layer_priors[layer](self.layers.down[layer](upper, c))

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
        """q(z | x, c): the encoder's distribution over z for each image, its site scaled like the model's; in
        a hierarchy, q(z1 | x, c) and then each layer above from the one below, q(z_{l+1} | z_l, c)."""
        with pyro.plate("data", x.shape[0]):
            return self.guide_sites(x, c, kl_weight)

    def guide_sites(self, x: torch.Tensor, c: torch.Tensor | None, kl_weight: float = 1.0) -> torch.Tensor:
        """The guide's sites inside the data plate (see ``model_sites``); returns z1."""
        self._register("guide")
        x = x.reshape((x.shape[0],) + self.x_shape)
        with self._latent_scale(kl_weight):
            z = first = pyro.sample(self.sites[0], self.guide_family(self.networks.encoder(x, c)))
            for layer, family in enumerate(self.upper_guides):
                z = pyro.sample(self.sites[layer + 1], family(self.layers.up[layer](z, c)))
            return first

    def lowered_elbo(
        self, x: torch.Tensor, c: torch.Tensor | None = None, kl_weight: float = 1.0, analytic_kl: bool = False
    ) -> torch.Tensor:
        """The programs' ELBO, summed over the batch, in plain torch: the training step without Pyro's tracing.

        The same parts in the same order: z drawn from the guide layer by layer (the same noise as the guide
        draws), scored by the model's layers and prior, x by the likelihood; the latent terms weighed by
        ``kl_weight`` as the programs' scale weighs them. ``analytic_kl`` takes KL(q || p) in closed form where
        torch has one, as ``TraceMeanField_ELBO``; else log q - log p at the draw, as ``Trace_ELBO``. The fit
        checks it against the programs on its first batch (`ppvae.infer.lowered`).
        """
        x = x.reshape((x.shape[0],) + self.x_shape)
        if self._has_closed_forms():
            return self._closed_form_elbo(x, c, kl_weight, analytic_kl)
        posteriors = [self.guide_family(self.networks.encoder(x, c))]
        codes = [posteriors[0].rsample()]
        for layer, family in enumerate(self.upper_guides):
            posteriors.append(family(self.layers.up[layer](codes[-1], c)))
            codes.append(posteriors[-1].rsample())
        log_likelihood = total_log_prob(self._observed_given(codes[0], c), x)
        return log_likelihood - weighted(
            latent_terms(posteriors, self._priors_given(codes, c), codes, analytic_kl), kl_weight
        )

    def _has_closed_forms(self) -> bool:
        """Whether the ELBO can be written on tensors alone: one layer, a normal q, the standard normal prior,
        a likelihood that sums without a distribution, whole images observed."""
        return (
            not self.upper_guides
            and type(self.guide_family) is NormalGuide
            and type(self.prior) is StandardNormal
            and hasattr(self.likelihood, "total_log_prob")
            and type(self).observed is VAE.observed
        )

    def _closed_form_elbo(
        self, x: torch.Tensor, c: torch.Tensor | None, kl_weight: float, analytic_kl: bool
    ) -> torch.Tensor:
        """`lowered_elbo` by the parts' formulas on tensors, without building a distribution: on a CPU the
        objects' host time is about 5% of the default VAE's step (`benchmarks/step_overhead.py`). The same
        noise and terms; each term sums the batch at once rather than per image, which moves the loss's last
        digits and no gradient."""
        z, loc, scale = self.guide_family.draw(self.networks.encoder(x, c))
        log_likelihood = self.likelihood.total_log_prob(self.networks.decoder(z, c), x)
        if analytic_kl:
            latent = self.prior.kl_from_normal(loc, scale).sum()
        else:
            latent = (self.guide_family.log_density(z, loc, scale) - self.prior.log_density(z)).sum()
        return log_likelihood - weighted(latent, kl_weight)

    def lowered_log_joint(
        self, x: torch.Tensor, c: torch.Tensor | None, values: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(z) and log p(x | z) in plain torch at the latent ``values`` (each site (P, N, size)), each
        (P, N): the model's densities without tracing, for AIS's inner loop (`ppvae.infer.lowered_joint`)."""
        x = x.reshape((x.shape[0],) + self.x_shape)
        codes = [values[site] for site in self.sites]
        terms = [p.log_prob(z) for p, z in zip(self._priors_given(codes, c), codes)]
        log_prior = terms[-1]
        for term in reversed(terms[:-1]):  # the model's order, top layer first: the traced sum to the last bit
            log_prior = log_prior + term
        return log_prior, self._observed_given(codes[0], c).log_prob(x)

    def lowered_log_guide(
        self, x: torch.Tensor, c: torch.Tensor | None, values: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """log q(z | x) in plain torch at the latent ``values``, (P, N): each layer scored given the one below."""
        x = x.reshape((x.shape[0],) + self.x_shape)
        codes = [values[site] for site in self.sites]
        log_q = self.guide_family(self.networks.encoder(x, c)).log_prob(codes[0])
        for layer, family in enumerate(self.upper_guides):
            log_q = log_q + family(self.layers.up[layer](codes[layer], c)).log_prob(codes[layer + 1])
        return log_q

    def _priors_given(self, codes: list[torch.Tensor], c: torch.Tensor | None) -> list:
        """Each layer's prior, z1 first: p(z_l | z_{l+1}, c) read from the code above, and p(z_top | c)."""
        below = [self._layer_prior(layer, codes[layer + 1], c) for layer in range(len(codes) - 1)]
        return [*below, self.prior(c)]

    def _observed_given(self, z1: torch.Tensor, c: torch.Tensor | None):
        """p(x | z1, c) as the model observes it."""
        return self.observed(self.likelihood(self.networks.decoder(z1, c)), c)

    # -- the parts, for the estimator API ---------------------------------------------------------

    def likelihood_mean(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood(self.networks.decoder(z, c)).mean

    def prior_sample(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.descend(self.top_sample(n, c), self.sites[-1], c, sample=True)

    def top_sample(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws of the top layer from the prior (in a model of one layer, of z)."""
        prior = self.prior(c)
        return prior.sample() if prior.batch_shape == (n,) else prior.sample((n,))

    def descend(
        self, z: torch.Tensor, site: str | None, c: torch.Tensor | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Codes z of ``site`` (None: z1) carried down to z1, the layer the decoder reads: each layer below at
        the location of p(z_l | z_{l+1}, c), or drawn from it with ``sample=True``. With one layer, z."""
        start = self.sites.index(self.latent_site(site))
        for layer in reversed(range(start)):
            below = self._layer_prior(layer, z, c)
            z = below.sample() if sample else below.mean
        return z

    def initialize(self, x: torch.Tensor) -> None:
        super().initialize(x)
        self.prior.initialize(x)

    def __repr__(self) -> str:
        beta = f", beta={self.beta:g}" if self.beta != 1 else ""
        z_dim = self.z_dim if len(self.layer_sizes) == 1 else list(self.layer_sizes)
        return f"{type(self).__name__}(x_shape={self.x_shape}, z_dim={z_dim}, {self.described_parts()}{beta})"
