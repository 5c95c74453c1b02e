"""ppvae: variational autoencoders as Pyro probabilistic programs.

    import ppvae
    train = ppvae.data.load("fashion-mnist", split="train")
    model = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20)
    model.fit(train, epochs=5)
    model.sample(64)

Layers, imports pointing downward only:
    cli, report, compare what a person runs and reads
    models               VAE ...: the Pyro programs and the estimator API (fit, encode, save)
    infer                the training loop on Lightning Fabric, objectives, evidence (any Pyro model/guide)
    parts                priors, likelihoods, guide families, networks, by name
    data, viz            datasets and figures (leaves)
"""

from ppvae import data
from ppvae.compare import Comparison, compare
from ppvae.models import (
    CVAE, MODELS, VAE, CompletionNetwork, CompletionVAE, completion_rows, completion_scores, FactorAnalysis, LatentVariableModel, TrainingDiverged, bits_per_dim, load, log_evidence,
)  # fmt: skip

__version__ = "0.1.0"

__all__ = [
    "CVAE", "CompletionNetwork", "CompletionVAE", "MODELS", "Comparison", "FactorAnalysis", "VAE", "LatentVariableModel", "TrainingDiverged", "bits_per_dim", "compare", "completion_rows",
    "completion_scores", "data", "load",
    "log_evidence", "__version__",
]  # fmt: skip
