"""The estimator floor: what every model shares, below the models and above ``infer``.

    contract    what the machinery may use of a model: Capabilities, the condition hook, FitRecord
    base        LatentVariableModel, the estimator API (fit, encode, sample, evaluate, save)
    fitting     a fit turned into a job for the shared training loop
    runs        run folders: spec, weights, checkpoint, metrics; files (atomic writes, locks); figures
    evidence    the evidence front door: one method at a time, with only its options
    registry    the one table of model classes and the names derived from it

Nothing here names a model class; a model enters only through the contract.
"""

from ppvae.estimator.base import LatentVariableModel
from ppvae.estimator.contract import Capabilities, FitRecord, Model, class_index, labels_for
from ppvae.estimator.evidence import METHOD_OPTIONS, METHODS, bdmc, bits_per_dim, log_evidence
from ppvae.estimator.fitting import TrainingDiverged
from ppvae.estimator.registry import MODEL_CLASSES, model_names
from ppvae.estimator.runs import load

__all__ = [
    "METHODS",
    "METHOD_OPTIONS",
    "MODEL_CLASSES",
    "Capabilities",
    "FitRecord",
    "LatentVariableModel",
    "Model",
    "TrainingDiverged",
    "bdmc",
    "bits_per_dim",
    "class_index",
    "labels_for",
    "load",
    "log_evidence",
    "model_names",
]
