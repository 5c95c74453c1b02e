"""The models: Pyro programs built from parts, behind one estimator API."""

from ppvae.models.base import LatentVariableModel
from ppvae.models.completion import CompletionNetwork, CompletionVAE, completion_rows, completion_scores
from ppvae.models.cvae import CVAE
from ppvae.models.evidence import bdmc, bits_per_dim, log_evidence
from ppvae.models.factor_analysis import FactorAnalysis
from ppvae.models.runs import load
from ppvae.models.training import TrainingDiverged
from ppvae.models.vae import VAE

MODELS: dict[str, type[LatentVariableModel]] = {
    "VAE": VAE,
    "CVAE": CVAE,
    "FactorAnalysis": FactorAnalysis,
    "CompletionVAE": CompletionVAE,
    "CompletionNetwork": CompletionNetwork,
}

__all__ = [
    "CVAE",
    "CompletionNetwork",
    "CompletionVAE",
    "MODELS",
    "FactorAnalysis",
    "VAE",
    "LatentVariableModel",
    "TrainingDiverged",
    "bits_per_dim",
    "completion_rows",
    "completion_scores",
    "load",
    "log_evidence",
    "bdmc",
]
