"""The models: Pyro programs built from parts, each with its capabilities line, behind the estimator API."""

from ppvae.estimator import MODEL_CLASSES, LatentVariableModel
from ppvae.models.completion import CompletionNetwork, CompletionVAE, completion_rows, completion_scores
from ppvae.models.cvae import CVAE
from ppvae.models.denoising import DenoisingAutoencoder
from ppvae.models.factor_analysis import FactorAnalysis
from ppvae.models.semi_supervised import SemiSupervisedVAE
from ppvae.models.vae import VAE

MODELS: dict[str, type[LatentVariableModel]] = MODEL_CLASSES
"""Every model class by name: the one table (``ppvae.estimator.registry``), filled as each class is defined."""

__all__ = [
    "CVAE",
    "MODELS",
    "SemiSupervisedVAE",
    "CompletionNetwork",
    "CompletionVAE",
    "DenoisingAutoencoder",
    "FactorAnalysis",
    "VAE",
    "completion_rows",
    "completion_scores",
]
