"""The options of ``fit``: each checked up front with a message that names it, and those a run folder records.

A run records the options that decide what it trains (`RECORDED`); a resumed run takes them from its
folder, and may change only `CHANGEABLE_ON_RESUME` (see `ppvae.estimator.resume`).
"""

from __future__ import annotations

import math
from typing import Any

from ppvae.data import check_binarize
from ppvae.estimator.contract import Model
from ppvae.estimator.memory import check_particles
from ppvae.estimator.step import check_compile
from ppvae.infer import OBJECTIVES


def _positive(name: str, value: Any, integer: bool = False) -> None:
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < math.inf:
        raise ValueError(
            f"{name} must be a {'positive integer' if integer else 'positive finite number'}, got {value!r}"
        )


MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int:
    """A seed is a whole number from 0 to 2**63 - 1 (what every random stream here takes), or an error naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return seed


def check_options(options: dict[str, Any], model: Model) -> None:
    """Every option of ``fit`` checked up front, with a message that names it."""
    _positive("epochs", options["epochs"], integer=True)
    _positive("batch_size", options["batch_size"], integer=True)
    _positive("lr", options["lr"])
    check_seed(options["seed"])
    _positive("num_particles", options["num_particles"], integer=True)
    check_particles(options["batch_size"], options["num_particles"], model.x_dim)
    if options["elbo"] not in OBJECTIVES:
        raise ValueError(f"unknown elbo {options['elbo']!r}; choose one of {', '.join(OBJECTIVES)}")
    if options["binarize"] != "auto":
        check_binarize(options["binarize"])
    warmup = options["kl_warmup"]
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"kl_warmup must be a number of epochs >= 0, got {warmup!r}")
    iwae = options["elbo"] == "iwae" and not model.capabilities.latent_labels  # M2 is refused for its label, below
    if iwae and (model.beta != 1.0 or warmup):
        raise ValueError(
            "elbo='iwae' trains the importance-weighted bound, which has no beta; use beta=1 and no kl_warmup"
        )
    if options["elbo"] == "meanfield" and len(model.latent_sizes) > 1:
        raise ValueError(
            "elbo='meanfield' takes each latent site's KL in closed form, which is biased where a site's prior "
            f"depends on another site's draw (the layers {', '.join(model.latent_sizes)}): use elbo='trace' or 'iwae'"
        )
    if options["labelled"] is not None and not model.capabilities.latent_labels:
        reads = "reads every label" if model.capabilities.condition == "labels" else "takes none"
        raise ValueError(
            f"labelled= chooses the labels a model whose label is latent (M2, --model m2) may read; "
            f"{type(model).__name__} {reads}"
        )
    share = options["labelled_share"]
    if share != "auto" and share is not None:
        if not model.capabilities.latent_labels:
            raise ValueError(
                f"labelled_share= repeats the labelled images of a model whose label is latent (M2, --model m2); "
                f"{type(model).__name__} has none"
            )
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ValueError(
                "labelled_share is the share of each epoch's images that are labelled, in [0, 1) (0: each image "
                f"once), or 'auto' (0.5 for M2), got {share!r}"
            )
    check_compile(options["compile"])
    if options["clip_norm"] is not None:
        _positive("clip_norm", options["clip_norm"])
    if options["early_stopping"] is not None:
        _positive("early_stopping", options["early_stopping"], integer=True)
        if options["validation"] is None:
            raise ValueError(
                "early_stopping needs held-out data to watch: pass validation=0.1 (a fraction) or a dataset"
            )
    if isinstance(options["validation"], float) and not 0 < options["validation"] < 1:
        raise ValueError(f"validation as a fraction must be in (0, 1), got {options['validation']}")
    if options["resume"] and options["out"] is None and model.fit_record.training_state is None:
        raise ValueError("resume=True needs a run folder (out=...) or a model that has been fitted in this session")
    if (
        isinstance(options["num_workers"], bool)
        or not isinstance(options["num_workers"], int)
        or options["num_workers"] < 0
    ):
        raise ValueError(f"num_workers must be an integer >= 0, got {options['num_workers']!r}")
    snapshots = options["snapshot_epochs"]
    if snapshots is not None:
        if isinstance(snapshots, (int, str)) or any(
            isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in snapshots
        ):
            raise ValueError(f"snapshot_epochs must be a list of epoch numbers >= 1, got {snapshots!r}")
        if not model.capabilities.latent:
            raise ValueError(f"{type(model).__name__} has no latent space to take snapshots of")


RECORDED = (
    "epochs",
    "batch_size",
    "lr",
    "elbo",
    "num_particles",
    "kl_warmup",
    "clip_norm",
    "seed",
    "precision",
    "validation",
    "early_stopping",
    "labelled",
    "labelled_share",
    "compile",
)
"""The options a run folder records, and that a resumed run takes from it (``epochs`` from the call)."""


CHANGEABLE_ON_RESUME = ("lr", "clip_norm", "compile")
"""What a resumed run may change when asked (what a divergence's advice asks for, and how the step runs, which
changes nothing but float rounding); the run records the new value."""
