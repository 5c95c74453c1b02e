"""Inference on any Pyro model/guide pair: objectives, the SVI step, per-example ELBO terms,
importance-sampled evidence.

Nothing here knows what a VAE is; the models layer drives it.
"""

from ppvae.infer.evidence import EvidenceEstimate, estimate_log_evidence, log_importance_weights
from ppvae.infer.per_example import elbo_terms
from ppvae.infer.objectives import IWAE, OBJECTIVES, make_elbo
from ppvae.infer.svi import SVITrainer

__all__ = [
    "IWAE", "OBJECTIVES", "EvidenceEstimate", "SVITrainer", "elbo_terms", "estimate_log_evidence", "log_importance_weights",
    "make_elbo",
]  # fmt: skip
