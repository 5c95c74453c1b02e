"""Inference on any Pyro model/guide pair: objectives, the training loop, per-example ELBO terms,
importance-sampled, quadrature and annealed-importance-sampled evidence.

Nothing here knows what a VAE is; the models layer drives it.
"""

from ppvae.infer.ais import AISEstimate, ais_log_evidence, bidirectional, simulate
from ppvae.infer.batches import LoaderBatches, TensorBatches, shard_order
from ppvae.infer.evidence import EvidenceEstimate, estimate_log_evidence, log_importance_weights
from ppvae.infer.launch import ACCELERATORS, PRECISIONS, STRATEGIES, check_device, launch, make_fabric
from ppvae.infer.loop import LoopResult, ObjectiveModule, TrainingLoop, validate_programs
from ppvae.infer.objectives import IWAE, OBJECTIVES, KLWeight, make_elbo
from ppvae.infer.per_example import elbo_terms
from ppvae.infer.quadrature import QuadratureEstimate, quadrature_log_evidence
from ppvae.infer.random import derive_seed, seeded
from ppvae.infer.svi import make_adam
from ppvae.infer.threads import PYRO_LOCK, serialised

__all__ = [
    "ACCELERATORS",
    "AISEstimate",
    "PYRO_LOCK",
    "IWAE",
    "OBJECTIVES",
    "PRECISIONS",
    "STRATEGIES",
    "EvidenceEstimate",
    "KLWeight",
    "LoaderBatches",
    "LoopResult",
    "ObjectiveModule",
    "QuadratureEstimate",
    "TensorBatches",
    "TrainingLoop",
    "ais_log_evidence",
    "bidirectional",
    "check_device",
    "derive_seed",
    "elbo_terms",
    "estimate_log_evidence",
    "launch",
    "log_importance_weights",
    "make_adam",
    "make_elbo",
    "make_fabric",
    "quadrature_log_evidence",
    "seeded",
    "serialised",
    "shard_order",
    "simulate",
    "validate_programs",
]
