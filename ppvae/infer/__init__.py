"""Inference on any Pyro model/guide pair: objectives, the SVI step, per-example ELBO terms.

Nothing here knows what a VAE is; the models layer drives it.
"""

from ppvae.infer.per_example import elbo_terms
from ppvae.infer.objectives import OBJECTIVES, make_elbo
from ppvae.infer.svi import SVITrainer

__all__ = ["OBJECTIVES", "SVITrainer", "elbo_terms", "make_elbo"]
