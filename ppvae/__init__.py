"""ppvae: variational autoencoders as Pyro probabilistic programs.

    import ppvae
    train = ppvae.data.load("fashion-mnist", split="train")
    model = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20)
    model.fit(train, epochs=5)
    model.sample(64)

Layers, imports pointing downward only:
    cli, report, compare, sweep, latent   what a person runs, reads and measures
    models               VAE, CVAE, ...: the Pyro programs, one capabilities line each
    estimator            the estimator API, fitting, run folders, the evidence front door, the contract
    infer                the training loop on Lightning Fabric, objectives, evidence (any Pyro model/guide)
    parts                priors, likelihoods, guide families, networks, by name
    data, viz            datasets and figures (leaves)
"""

from ppvae import data, latent, plots
from ppvae.compare import Comparison, compare
from ppvae.estimator import (
    Capabilities,
    FitRecord,
    LatentVariableModel,
    TrainingDiverged,
    bdmc,
    bits_per_dim,
    load,
    log_evidence,
)
from ppvae.models import (
    CVAE,
    MODELS,
    VAE,
    CompletionNetwork,
    CompletionVAE,
    DenoisingAutoencoder,
    FactorAnalysis,
    SemiSupervisedVAE,
    completion_rows,
    completion_scores,
)
from ppvae.plots import plot
from ppvae.sweep import Sweep, sweep

__version__ = "0.1.0"

__all__ = [
    "Capabilities",
    "FitRecord",
    "CVAE",
    "MODELS",
    "VAE",
    "Comparison",
    "CompletionNetwork",
    "CompletionVAE",
    "DenoisingAutoencoder",
    "FactorAnalysis",
    "LatentVariableModel",
    "SemiSupervisedVAE",
    "Sweep",
    "TrainingDiverged",
    "bdmc",
    "bits_per_dim",
    "compare",
    "completion_rows",
    "completion_scores",
    "data",
    "latent",
    "load",
    "log_evidence",
    "plot",
    "plots",
    "sweep",
    "__version__",
]
