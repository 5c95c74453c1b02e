"""Run folders: everything needed to rebuild, inspect and continue a model.

    spec.json       the model's class and constructor arguments, how it was fitted, where its data came from
    weights.pt      the model's weights (the best epoch's when a validation set chose it), plain tensors
    checkpoint.pt   the last epoch's training state: weights, optimizer, epoch, step, seed, history
    metrics.jsonl   one JSON record per epoch
    logs/           the engine's loggers: csv/metrics.csv always, tensorboard/ when it is installed
    *.png           training curves, samples, reconstructions (`ppvae.estimator.figures`)

Every file is written atomically (`ppvae.estimator.files`). The spec goes
first, so a kill after the first checkpoint leaves a run that resumes. ``.pt``
files hold only tensors and plain containers: ``torch.load(..., weights_only=True)``
reads them. A model enters only through its contract: its class name, ``config()``,
its weights and the `FitRecord` of its fit.
"""

from __future__ import annotations

import inspect
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from ppvae.atomic import WRITTEN, note_written, remove_written, written
from ppvae.estimator.contract import FitRecord
from ppvae.estimator.figures import run_figures
from ppvae.estimator.files import LOCK, interrupt_after, save_torch_atomic, write_text_atomic
from ppvae.estimator.memory import check_model_size
from ppvae.estimator.registry import model_class
from ppvae.infer import check_device

SPEC, WEIGHTS, CHECKPOINT, METRICS = "spec.json", "weights.pt", "checkpoint.pt", "metrics.jsonl"
EVALUATION, LOGS = "evaluation.json", "logs"
FORMAT_VERSION = 4
# Constructor arguments newer than a format: a spec of an older format omits them, and they take their defaults
# (format 3 added the hierarchy, a run of format 2 has one latent layer; format 4 added M2's own classifier
# network, which in a run of format 3 is the model's network).
ADDED_IN_FORMAT = {"layer_hidden": 3, "classifier_network": 4}


class DamagedCheckpoint(ValueError):
    """A checkpoint.pt that cannot be read: the run's weights still load, but it cannot resume."""


# -- claiming a folder for a training run ----------------------------------------------------------


def check_run_folder(directory: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """The run folder a training may write, created; refused before any training if it would lose work.

    A folder that holds anything is refused unless the training continues it (``resume``) or replaces
    it (``overwrite``); a path that is a file, or a place that cannot be written, is refused too.
    """
    directory = Path(directory)
    if resume and overwrite:
        raise ValueError("resume continues the run in the folder and overwrite replaces it: pass one of them")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"the run folder {directory} is a file; give a folder to write the run in")
    held = sorted(p.name for p in directory.iterdir() if p.name not in (LOCK, WRITTEN)) if directory.is_dir() else []
    if SPEC in held and WEIGHTS not in held and CHECKPOINT not in held and not overwrite:
        raise ValueError(
            f"{directory} holds a run that never finished an epoch (it has a {SPEC} and no weights), so there is "
            "nothing to continue: start it again with overwrite=True (--overwrite)"
        )
    if held and not (resume or overwrite):
        what = (
            "a run"
            if SPEC in held
            else f"{len(held)} file(s) ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
        )
        raise ValueError(
            f"{directory} already holds {what}: continue it with resume=True (--resume) or replace it "
            "with overwrite=True (--overwrite)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ValueError(f"cannot write the run folder {directory}: {error.strerror or error}") from None
    return directory


def remove_if_empty(directory: str | Path) -> None:
    """Remove a run folder that holds nothing but ppvae's own bookkeeping (its lock, its record of written files)."""
    directory = Path(directory)
    if directory.is_dir() and not directory.is_symlink():
        if all(p.name in (LOCK, WRITTEN) and p.is_file() for p in directory.iterdir()):
            for p in directory.iterdir():
                p.unlink()
            directory.rmdir()


def remove_stale(directory: str | Path, logs: bool = False) -> None:
    """Remove from a run folder what its weights are about to make stale: the evaluation and the figures
    (the run's own are drawn again after training), and with ``logs`` the loggers' folder (a run that
    replaces another starts its logs afresh). Only files ppvae wrote go (the folder's record of them;
    a run written before the record kept one is taken to be ppvae's whole)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    stale = [EVALUATION, *(p.name for p in directory.glob("*.png")), *([LOGS] if logs else [])]
    if (directory / SPEC).exists() and SPEC not in written(directory):  # a run from before the record
        note_written(directory, *(name for name in stale if (directory / name).exists()))
    remove_written(directory, stale)


# -- metrics ----------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_text(history: list[dict[str, Any]]) -> str:
    return "".join(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n" for record in history)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The whole records of a metrics.jsonl; a torn line (a kill mid-write, by an older version) is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


# -- writing a run ----------------------------------------------------------------------------------


def spec_of(model: Any, record: FitRecord) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "model": type(model).__name__,
        "config": model.config(),
        "fit": record.options,
        "data": record.data_source,
    }


def write_run(
    model: Any,
    record: FitRecord,
    directory: Path,
    weights: dict[str, torch.Tensor] | None = None,
    checkpoint: dict[str, Any] | None = None,
    figures: bool = False,
) -> Path:
    """Write a run folder: spec, checkpoint, weights, metrics (in that order), then figures.

    The spec comes first because nothing can resume without it: a kill at any moment after the first
    epoch's checkpoint leaves a folder that ``resume=True`` continues. A Ctrl-C waits until the four
    files are written, so an interrupted run never holds one epoch's checkpoint beside another's weights.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with interrupt_after():
        write_text_atomic(directory / SPEC, json.dumps(spec_of(model, record), indent=2) + "\n")
        if checkpoint is not None:
            save_torch_atomic(checkpoint, directory / CHECKPOINT)
        if weights is None:
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_torch_atomic(
            {
                "state_dict": weights,
                "preview": record.preview,
                "preview_y": record.preview_y,
                "snapshots": record.snapshots,
                "snapshot_labels": record.snapshot_labels,
            },
            directory / WEIGHTS,
        )
        write_text_atomic(directory / METRICS, metrics_text(record.history))
    if figures:
        run_figures(model, record, directory)
    return directory


def save_run(model: Any, record: FitRecord, directory: str | Path, figures: bool = True) -> Path:
    """Write the model as it is now: spec.json, weights.pt, metrics.jsonl, the training state and, with
    ``figures``, PNGs.

    What the folder held that described other weights goes: the evaluation, the figures and, for a
    model without a training state, an old checkpoint that ``resume`` would otherwise continue.
    """
    directory = Path(directory)
    if directory.is_dir():
        remove_stale(directory)
        if record.training_state is None:
            remove_written(directory, [CHECKPOINT])
    return write_run(model, record, directory, checkpoint=record.training_state, figures=figures)


# -- reading a run ----------------------------------------------------------------------------------


def read_spec(directory: str | Path) -> dict[str, Any]:
    """A run folder's spec, checked (see `validate_spec`)."""
    path = Path(directory) / SPEC
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a ppvae run folder: it has no {SPEC}")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    return validate_spec(spec, path)


def _type_fits(value: Any, parameter: inspect.Parameter) -> bool:
    """Whether a spec value has the type of the constructor's default (a part spec: a name or a dict; a list
    where the argument also takes a sequence, as ``z_dim`` does for a hierarchy)."""
    default = parameter.default
    if isinstance(value, list) and "Sequence" in str(parameter.annotation):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    if isinstance(default, str):
        return isinstance(value, (str, dict))
    return True


def validate_spec(spec: Any, where: str | Path = "the spec") -> dict[str, Any]:
    """``spec`` if it describes a model this version can build; otherwise one error naming ``where`` and the field.

    Every constructor argument must be there with the right type: a missing field is an error, never a
    silent default (a spec without its prior would load as another model).
    """
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a spec is a JSON object, got {type(spec).__name__}")
    version = spec.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: field 'format' must be a positive whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} has format {version}, written by a newer ppvae; this version reads formats up to "
            f"{FORMAT_VERSION}: upgrade ppvae"
        )
    cls = model_class(spec.get("model"), str(where))
    config = spec.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: field 'config' must be an object of {cls.__name__}'s arguments, got {config!r}")
    parameters = {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    unknown = sorted(set(config) - set(parameters))
    if unknown:
        raise ValueError(
            f"{where}: unknown field 'config.{unknown[0]}' for {cls.__name__}; it takes {', '.join(parameters)}"
        )
    for name, parameter in parameters.items():
        if name not in config and version < ADDED_IN_FORMAT.get(name, 1):
            continue  # newer than the spec: the constructor's default
        if name not in config:
            raise ValueError(f"{where}: field 'config.{name}' is missing")
        if not _type_fits(config[name], parameter):
            raise ValueError(
                f"{where}: field 'config.{name}' has the wrong type: {config[name]!r} "
                f"(like the default, {parameter.default!r})"
            )
    for name in ("fit", "data"):
        if spec.get(name) is not None and not isinstance(spec[name], dict):
            raise ValueError(f"{where}: field {name!r} must be an object, got {spec[name]!r}")
    return spec


CHECKPOINT_KEYS = ("epoch", "global_step", "model", "optimizer", "history")


def read_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The training state of a run folder, or None if it has none; an error saying what to do if it is damaged
    (truncated, corrupt, or not a ppvae checkpoint), which only resuming needs."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a damaged zip or pickle
        state, why = None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    else:
        missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
        why = f"it holds no {', '.join(missing)}" if missing else ""
    if why:
        raise DamagedCheckpoint(
            f"{path} is damaged ({why}), so the run cannot resume; weights.pt is whole, so load, evaluate, sample "
            "and plot still work, and ppvae.load(run).fit(data, out=<another folder>) trains on from those weights"
        )
    return state


def readable_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The training state, or None where there is none or it is damaged: what loading a model for use needs."""
    try:
        return read_checkpoint(directory)
    except DamagedCheckpoint:
        return None


def data_source_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """Where a run's data came from (runs of format 1 kept it under ``fit``)."""
    return spec.get("data") or spec.get("fit", {}).get("data")


def build(spec: dict[str, Any], directory: str | Path = "the spec") -> Any:
    """The untrained model a spec describes."""
    where = f"{directory}/{SPEC}"
    validate_spec(spec, where)
    cls = model_class(spec["model"], where)
    check_model_size(cls, spec["config"], where)
    try:
        return cls(**spec["config"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None


def read_weights(path: Path) -> dict[str, Any]:
    """A weights.pt, or an error saying it is damaged (truncated, corrupt, or not ppvae's)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path.parent} has a spec but no {path.name}: the run never finished an epoch"
        ) from None
    except Exception as error:  # torch raises several kinds for a damaged zip or pickle
        raise ValueError(
            f"{path} is damaged or not a ppvae weights file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise ValueError(f"{path} is not a ppvae weights file: it holds no state_dict")
    return saved


def load(directory: str | Path, device: str | torch.device = "cpu") -> Any:
    """Rebuild a model from its run folder: same class, same parts, same weights, same history."""
    directory = Path(directory)
    device = check_device(device)
    spec = read_spec(directory)
    model = build(spec, directory)
    saved = read_weights(directory / WEIGHTS)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise ValueError(
            f"{directory / WEIGHTS} does not fit the model {directory / SPEC} describes: "
            f"{str(error).splitlines()[0]} ..."
        ) from None
    model.fit_record = FitRecord(
        history=read_metrics(directory / METRICS),
        options=spec.get("fit", {}),
        data_source=data_source_of(spec),
        training_state=readable_checkpoint(directory),  # a damaged one stops resume alone
        preview=saved.get("preview"),
        preview_y=saved.get("preview_y"),
        snapshots=dict(saved.get("snapshots") or {}),
        snapshot_labels=saved.get("snapshot_labels"),
        folder=directory,
    )
    return model.to(device).eval()
