"""Resuming a fit: the training state it continues, the options it keeps, and the checks that it is the same run.

A run folder (or a model fitted in this session) holds a checkpoint: the weights, the optimizer's state, the
history and the epoch reached. A resumed fit continues from there with the run's recorded options (but for
``epochs``, and a changed ``lr``, ``clip_norm`` or ``compile``), on the same data (counted and, in memory,
checksummed), into the same kind of model; anything else is refused with one line naming both sides.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ppvae.data import as_images, in_memory
from ppvae.estimator import runs
from ppvae.estimator.contract import FitRecord, Model
from ppvae.estimator.labels import describe_labelled
from ppvae.estimator.options import CHANGEABLE_ON_RESUME, RECORDED


def data_fingerprint(model: Model, data: Any, y: Any = None) -> dict[str, Any]:
    """How many images a fit trains on and, for data in memory, a checksum of them and their labels: what a
    resumed fit checks it is handed the same data by (data read from disk is counted, not read twice)."""
    fingerprint: dict[str, Any] = {"images": len(data)}
    if in_memory(data):
        digest = hashlib.blake2b(digest_size=8)
        digest.update(as_images(data, model.x_shape).detach().cpu().contiguous().numpy().tobytes())  # not moved
        labels = y if y is not None else getattr(data, "y", None)
        try:
            digest.update(torch.as_tensor(labels).cpu().contiguous().numpy().tobytes())
        except (TypeError, ValueError, RuntimeError):  # no labels, or not numbers: the labels' own check says so
            pass
        fingerprint["checksum"] = digest.hexdigest()
    return fingerprint


def check_same_data(recorded: dict[str, Any] | None, given: dict[str, Any], out: Path | None) -> None:
    """Refuse to resume on other data than the run trained on (a checkpoint from before the record passes)."""
    if recorded is None:
        return
    checksums = [f.get("checksum") for f in (recorded, given)]
    if recorded.get("images") == given["images"] and (None in checksums or checksums[0] == checksums[1]):
        return
    where = f"the run in {out}" if out is not None else "this model's last fit"
    raise ValueError(
        f"resume=True continues {where}, which trained on {recorded['images']:,} images (checksum "
        f"{recorded.get('checksum', 'not taken')}), and this call hands it {given['images']:,} (checksum "
        f"{given.get('checksum', 'not taken')}): pass the same data (spec.json names it), or start a new run"
    )


def resume_state(model: Model, out: Path | None) -> dict[str, Any]:
    """The checkpoint a resumed fit continues: the run folder's, or the one the model kept from its last fit."""
    state = runs.read_checkpoint(out) if out is not None else model.fit_record.training_state
    if state is None:
        where = f"{out} holds no {runs.CHECKPOINT}" if out is not None else "the model has no training state"
        raise ValueError(f"resume=True but {where}; train without resume first")
    return state


def restore(
    model: Model, record: FitRecord, out: Path | None, options: dict[str, Any], validation: Any
) -> tuple[dict[str, Any], Any]:
    """The training state to continue (its weights loaded, its history and snapshots in ``record``) and the
    validation data; a run folder's recorded options replace the call's, all but ``epochs``."""
    state = resume_state(model, out)
    if out is not None:
        recorded = runs.read_spec(out).get("fit", {})
        options.update(resumed_options(model, options, recorded, out))
        if validation is None and isinstance(recorded.get("validation"), float):
            validation = recorded["validation"]  # the same seeded split as before
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        where = f"the checkpoint in {out}" if out is not None else "the model's training state"
        differs = built_otherwise(model, runs.read_spec(out)) if out is not None else None
        raise ValueError(
            f"{where} is of another model than {model!r} ({differs or str(error).splitlines()[0]}): resume the "
            "model the run describes, ppvae.load(run).fit(data, out=run, resume=True), or the training command "
            "with --resume"
        ) from None
    record.history = copy.deepcopy(state["history"])
    record.snapshots = dict(state.get("snapshots") or {})
    return state, validation


def built_otherwise(model: Model, spec: dict[str, Any]) -> str | None:
    """How the run's recorded model differs from ``model``, in words ("the run's z_dim=20, this model's 5"),
    or None where the record says nothing that tells them apart."""
    if spec.get("model") != type(model).__name__:
        return f"the run holds a {spec.get('model')}"
    recorded, own = spec.get("config", {}), model.config()
    fields = [k for k in own if k in recorded and json.loads(json.dumps(own[k])) != recorded[k]]
    return "; ".join(f"the run's {k}={recorded[k]!r}, this model's {own[k]!r}" for k in fields) or None


def resumed_options(model: Model, options: dict[str, Any], recorded: dict[str, Any], out: Path) -> dict[str, Any]:
    """The options a resumed fit runs with: the run's own, but for ``epochs`` and a changed ``lr`` or
    ``clip_norm``. An option left at fit's default takes the run's value; one given with another value is
    refused, naming both, unless it may change (`CHANGEABLE_ON_RESUME`)."""
    defaults = type(model).fit_defaults()
    resumed = {}
    for key in (*RECORDED, "binarize"):
        if key == "epochs" or key not in recorded:
            continue
        given, kept = options[key], recorded[key]
        if key == "labelled":  # chosen images are recorded, and so compared, by their number
            given = describe_labelled(given)
        unasked = given == defaults.get(key) or (key == "binarize" and given == "auto")
        if given == kept or unasked or key in CHANGEABLE_ON_RESUME:
            resumed[key] = kept if unasked else given
            continue
        raise ValueError(
            f"resume=True continues the run in {out} as it was fitted with {key}={kept!r}, and this call "
            f"asks for {key}={given!r}: leave {key} out, or start a new run (overwrite=True); only "
            f"{' and '.join(CHANGEABLE_ON_RESUME)} may change on resume"
        )
    return resumed


def best_so_far(state: dict[str, Any] | None, out: Path | None) -> dict[str, Any]:
    """A resumed run's best epoch under validation, with its weights from the run folder."""
    if state is None or state.get("best_epoch") is None or out is None:
        return {}
    weights = torch.load(out / runs.WEIGHTS, map_location="cpu", weights_only=True)["state_dict"]
    return {"epoch": state["best_epoch"], "score": state["best_score"], "weights": weights}
