"""Parts a model is built from: priors, likelihoods, guide families and networks, each in a registry."""

from ppvae.parts.corruptions import CORRUPTIONS, Corruption
from ppvae.parts.flows import FlowGuide, FlowPrior
from ppvae.parts.guides import GUIDES, LocationScaleGuide
from ppvae.parts.likelihoods import LIKELIHOODS, Likelihood, observed_where
from ppvae.parts.networks import MLP, NETWORKS, Networks
from ppvae.parts.priors import PRIORS, Prior
from ppvae.parts.registry import Registry, did_you_mean, normalize_spec

REGISTRIES = {
    "prior": PRIORS,
    "likelihood": LIKELIHOODS,
    "guide": GUIDES,
    "network": NETWORKS,
    "corruption": CORRUPTIONS,
}

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "GUIDES",
    "LIKELIHOODS",
    "NETWORKS",
    "PRIORS",
    "REGISTRIES",
    "FlowGuide",
    "FlowPrior",
    "Likelihood",
    "MLP",
    "LocationScaleGuide",
    "Networks",
    "Prior",
    "Registry",
    "did_you_mean",
    "normalize_spec",
    "observed_where",
]
