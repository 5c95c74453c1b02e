"""Fitting a model by SVI: its data, options and run folder turned into a job for the shared loop.

The loop (``ppvae.infer.TrainingLoop``) knows no VAE; this module does the
model's side, once, before the first step: seeds a fresh model's parameters,
prepares and checks the data, runs data-dependent initialisation on the first
images, validates the programs with Pyro, and records the options. After every
epoch (on rank 0) it evaluates held-out data, keeps the best weights when a
validation set chooses them, and writes the run folder atomically. Its options are checked in
`ppvae.estimator.options`; what a resumed fit continues, and checks, is in `ppvae.estimator.resume`.

A `FitJob` holds everything a training process needs and pickles, so
the same job runs in place on one device or in each process of a
data-parallel run; rank 0's result comes back to the caller's model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ppvae.atomic import note_written, remove_temporaries
from ppvae.data import ImageDataset, fixed_binarization, in_memory, refuse_tuples_and_paths, to_float_images
from ppvae.data import binarize as binarize_images
from ppvae.estimator import runs
from ppvae.estimator.contract import FitRecord, Model, labels_for
from ppvae.estimator.figures import run_figures
from ppvae.estimator.files import RunLock, inside
from ppvae.estimator.labels import describe_labelled, keep_labels, labelled_share, repeat_labelled
from ppvae.estimator.options import RECORDED, check_options
from ppvae.estimator.resume import best_so_far, check_same_data, data_fingerprint, restore
from ppvae.estimator.step import choose_graph, choose_step
from ppvae.infer import (
    PYRO_LOCK,
    KLWeight,
    LoaderBatches,
    ObjectiveModule,
    TensorBatches,
    TrainingLoop,
    derive_seed,
    launch,
    make_adam,
    make_elbo,
    make_fabric,
    seeded,
    validate_programs,
)
from ppvae.infer.batches import local_batch_size
from ppvae.infer.launch import check_engine, under_torchrun

INIT_EXAMPLES = 10_000  # images that data-dependent initialisation sees (the first ones, in storage order)
PREVIEW = 16  # test images kept for the reconstruction figure
SNAPSHOT = 2000  # test images whose latent means snapshot_epochs keeps
CHECKPOINT_FORMAT = 1


class TrainingDiverged(ValueError):
    """The loss or a parameter became non-finite; the model keeps its last finite weights and, in ``record``,
    the fit record of the epochs that finished."""

    def __init__(self, message: str, record: FitRecord | None = None):
        super().__init__(message)
        self.record = record


@contextlib.contextmanager
def argument(name: str):
    """A ValueError about the data passed as ``name`` (data, test, validation) names that argument."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def writes_run_folder() -> bool:
    """Whether this process writes the run folder: all but the ranks above 0 that torchrun started."""
    return not under_torchrun() or int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def claimed(record: FitRecord, out: str | Path | None, resume: bool, overwrite: bool):
    """The run folder checked before anything trains (see `runs.check_run_folder`) and locked
    for the whole fit, so that two trainings never write one folder. A model may go on writing its own
    run (``record.folder``: the folder it was fitted into, loaded from or saved to), as resuming does."""
    if out is None or not writes_run_folder():
        yield
        return
    own = record.folder is not None and Path(record.folder).resolve() == Path(out).resolve()
    created = not Path(out).exists()
    runs.check_run_folder(out, resume or (own and not overwrite), overwrite)
    try:
        with RunLock(out):
            remove_temporaries(out)  # what a write killed halfway left; no other process writes here now
            yield
    except BaseException:
        if created:  # a fit refused or failed before writing anything leaves no empty folder behind
            runs.remove_if_empty(out)
        raise


# -- data ----------------------------------------------------------------------------------------------


def split_validation(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """(train, held out): a seeded random ``fraction`` of ``data`` held out."""
    n = len(data)
    held = max(1, int(round(n * fraction)))
    if held >= n:
        raise ValueError(f"validation={fraction} of {n} images leaves none to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 0, 1)))
    keep, hold = order[held:].sort().values, order[:held].sort().values
    if isinstance(data, ImageDataset):
        return data.subset(keep), data.subset(hold)
    if isinstance(data, torch.Tensor):
        return data[keep], data[hold]
    return torch.utils.data.Subset(data, keep.tolist()), torch.utils.data.Subset(data, hold.tolist())


def data_source_of(data: Any) -> dict[str, Any] | None:
    """Where named data came from, for the run folder (a user's tensor has no name to record)."""
    if isinstance(data, ImageDataset) and data.name and data.split in ("train", "test"):
        return {"dataset": data.name, "split": data.split, "images": len(data)}
    return None


# -- the job -------------------------------------------------------------------------------------------


@dataclass
class FitJob:
    """Everything one training process needs: the model, its batches, held-out data, options, run folder."""

    model: Model
    record: FitRecord  # the fit's record, filled epoch by epoch
    batches: TensorBatches | LoaderBatches
    objective: Any  # the Pyro objective, built once
    options: dict[str, Any]
    schedule: KLWeight
    test: torch.Tensor | None = None
    test_c: torch.Tensor | None = None
    validation: torch.Tensor | None = None
    validation_c: torch.Tensor | None = None
    out: Path | None = None
    state: dict[str, Any] | None = None  # the training state to resume from
    best: dict[str, Any] = field(default_factory=dict)  # best epoch, score and weights under validation
    data: dict[str, Any] | None = None  # the training data's fingerprint, kept in the checkpoint
    graph: bool = False  # capture the step in a CUDA graph (`ppvae.infer.graphed`)


class EpochEnd:
    """The loop's per-epoch hook on rank 0: scores, the epoch's line, best weights, the run folder."""

    def __init__(self, job: FitJob, steps_per_epoch: int):
        self.job = job
        self.steps_per_epoch = steps_per_epoch
        self.training_state: dict[str, Any] | None = job.state

    def scores(self, x: torch.Tensor, c: torch.Tensor | None) -> dict[str, float]:
        model = self.job.model
        return {
            k: v for k, v in model.evaluate(x, c=c, binarize=None, seed=self.job.options["seed"]).items() if k != "n"
        }

    def __call__(self, record: dict[str, Any], training_state: dict[str, Any]) -> bool:
        job, model, options, fit = self.job, self.job.model, self.job.options, self.job.record
        first_step = training_state["global_step"] - self.steps_per_epoch + 1
        fit.options["cuda_graph"] = training_state["graphed"]
        if options["elbo"] == "iwae":
            record["train_iwae"] = -record["train_loss"]
        elif model.beta == 1.0 and not job.schedule.annealed(first_step) and not any(job.schedule.arguments.values()):
            record["train_elbo"] = -record["train_loss"]  # the true ELBO only at weight 1 and with no other term
        if job.test is not None:
            record.update({f"test_{k}": v for k, v in self.scores(job.test, job.test_c).items()})
        stop = False
        if record["epoch"] in (options["snapshot_epochs"] or ()):
            c = None if job.test_c is None else job.test_c[:SNAPSHOT]
            fit.snapshots[record["epoch"]] = model.encode(job.test[:SNAPSHOT], c=c, binarize=None).cpu()  # prepared
        if job.validation is not None:
            record.update({f"val_{k}": v for k, v in self.scores(job.validation, job.validation_c).items()})
            score = record[f"val_{model.capabilities.selected_by}"]
            if not job.best or score > job.best["score"]:
                job.best.update(
                    epoch=record["epoch"],
                    score=score,
                    weights={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                )
            patience = options["early_stopping"]
            stop = patience is not None and record["epoch"] - job.best["epoch"] >= patience
        fit.history.append(record)
        self.training_state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": record["epoch"],
            "global_step": training_state["global_step"],
            "seed": options["seed"],
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(training_state["optimizer"]),
            "history": copy.deepcopy(fit.history),
            "best_epoch": job.best.get("epoch"),
            "best_score": job.best.get("score"),
            "snapshots": dict(fit.snapshots),
            "data": job.data,
        }
        if job.out is not None:
            runs.write_run(model, fit, job.out, weights=job.best.get("weights"), checkpoint=self.training_state)
            runs.remove_stale(job.out)  # an evaluation or a figure made from an earlier epoch's weights
        if options["progress"]:
            shown = (
                ", ".join(
                    f"{k} {v:.3f}" if k.endswith("accuracy") else f"{k} {v:.2f}"  # accuracies move by thousandths
                    for k, v in record.items()
                    if k.endswith(("elbo", "kl", "reconstruction", "accuracy"))
                )
                or f"train_loss {record['train_loss']:.2f}"
            )  # an objective that is no ELBO (walkback, alpha)
            best = f", best epoch {job.best['epoch']}" if job.best else ""
            tqdm.write(f"epoch {record['epoch']}: {shown} ({record['seconds']:.1f} s{best})")
        if stop and options["progress"]:
            watched = "ELBO" if model.capabilities.selected_by == "elbo" else model.capabilities.selected_by
            tqdm.write(f"early stopping: no better validation {watched} for {options['early_stopping']} epochs")
        return stop


def _unshare(model: torch.nn.Module) -> None:
    """Give this process its own copy of every weight (spawned processes receive shared memory)."""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = tensor.data.clone()


def run_job(fabric, job: FitJob) -> dict[str, Any]:
    """One training process: set up the loss and optimizer on Fabric, run the loop, report.

    The report is plain containers of tensors (it may travel from a spawned process): the model's
    state (from several processes), the record's ``history``, ``training_state``, ``best`` and how it ``stopped``.
    """
    model, options = job.model, job.options
    if fabric.world_size > 1:
        _unshare(model)
    model.to(fabric.device)
    loss, optimizer = fabric.setup(
        ObjectiveModule(model, model.model, model.guide, job.objective),
        make_adam([p for p in model.parameters() if p.requires_grad], options["lr"]),
    )
    if job.state is not None:  # resume: the optimizer and step where they were, up to ``epochs`` in all
        optimizer.load_state_dict(job.state["optimizer"])
        for group in optimizer.param_groups:  # the run's rate, or the one a resumed fit changed it to
            group["lr"] = options["lr"]
            group["capturable"] = False  # a CUDA graph's setting; the loop sets it again where it captures
        first_epoch, last_epoch, global_step = job.state["epoch"] + 1, options["epochs"], job.state["global_step"]
    else:  # a fresh fit, or ``epochs`` more for a fitted model (a fresh optimizer)
        first_epoch, global_step = len(job.record.history) + 1, 0
        last_epoch = first_epoch + options["epochs"] - 1
    batches = job.batches.for_rank(fabric.world_size, fabric.global_rank, fabric.device)
    hook = EpochEnd(job, len(batches))
    loop = TrainingLoop(
        fabric,
        loss,
        optimizer,
        batches,
        job.schedule,
        seed=options["seed"],
        clip_norm=options["clip_norm"],
        progress=options["progress"],
        on_epoch_end=hook,
        graph=job.graph,
        announce=(lambda line: tqdm.write(f"ppvae: {line}")) if options["progress"] else None,
    )
    result = loop.run(first_epoch, last_epoch, global_step)
    for logger in fabric.loggers:
        logger.finalize("success")
    spawned = fabric.world_size > 1
    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()} if spawned else {},
        "history": job.record.history,
        "training_state": hook.training_state,
        "best": job.best,
        "snapshots": job.record.snapshots,
        "stopped": result.stopped,
        "message": result.message,
        "graphed": result.graphed,
    }


# -- fit -------------------------------------------------------------------------------------------------


def _loggers(out: Path | None, history: list[dict[str, Any]]) -> list:
    """Fabric's CSV logger always (its file rewritten from the history, so a resumed run has one table),
    TensorBoard's where it is installed. None without a run folder."""
    if out is None:
        return []
    import importlib.util

    from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

    if writes_run_folder():  # rank 0 alone writes the run folder; other ranks only log through Fabric
        for folder in ("csv", "tensorboard"):  # a link planted in a received run folder redirects nothing
            inside(out, runs.LOGS, folder)
        note_written(out, runs.LOGS)  # the loggers' folder is ppvae's to replace
    (out / "logs" / "csv" / "metrics.csv").unlink(missing_ok=True)
    csv = CSVLogger(out, name="logs", version="csv", flush_logs_every_n_steps=1)
    for record in history:
        csv.log_metrics(
            {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"}, step=record["epoch"]
        )
    loggers = [csv]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(out, name="logs", version="tensorboard", default_hp_metric=False))
    return loggers


def _device(accelerator: str, devices: int) -> torch.device:
    """Where the data is prepared: one process prepares on its device; several each move the prepared data to
    their own."""
    if accelerator == "cuda" and devices == 1:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _checked_condition(model: Model, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
    """The training condition of a batch read from disk, its labels checked first (they were never all in memory)."""
    return model.condition(x, labels_for(model, None, y), train=True)


def _checked_batch(prepare: Any, model: Model, dynamic: bool, images: torch.Tensor) -> torch.Tensor:
    """A batch read from disk, prepared and checked as the first images were: the data was never all in memory
    to be checked at once, so a bad image far into a file is caught when it is read, not trained on."""
    x = prepare(images)  # refuses NaN and infinite pixels itself
    if dynamic and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"binarisation needs pixel values in [0, 1]; a batch read from disk holds values from "
            f"{x.min().item():g} to {x.max().item():g}"
        )
    if not dynamic:
        model.check_data(x)
    return x


@contextlib.contextmanager
def buffers_kept(module: torch.nn.Module):
    """Whatever runs inside leaves ``module``'s buffers (BatchNorm's running statistics and counts) as they were,
    so that a same-seed run, and a resumed one, end with the buffers of a straight run."""
    kept = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                buffer.copy_(kept[name])


def _training_batches(
    model: Model, data: Any, y: torch.Tensor | None, options: dict[str, Any], device: torch.device
) -> tuple[TensorBatches | LoaderBatches, torch.Tensor, str | None]:
    """The batch source for ``data``, checked against the likelihood; the first images (for data-dependent
    initialisation) and the binarisation it resolved."""
    seed, batch_size = options["seed"], options["batch_size"]
    with argument("data"):
        if in_memory(data):
            x = model.images(data)
            head = x[:INIT_EXAMPLES]
            labels = labels_for(model, data, y)
        else:
            if len(data) == 0:
                raise ValueError("no images (the dataset is empty)")
            loader_prepare = functools.partial(to_float_images, shape=model.x_shape)
            head = LoaderBatches(data, loader_prepare, device=device).head(INIT_EXAMPLES)[0]
    method = model.resolve_binarize(options["binarize"], head)
    dynamic = method in ("dynamic",) or (method == "threshold" and not in_memory(data))
    if dynamic and (head.min() < 0 or head.max() > 1):
        raise ValueError("binarisation needs pixel values in [0, 1]")
    transform = functools.partial(binarize_images, method=method, seed=None) if dynamic else None
    if in_memory(data):
        if not dynamic:
            x = binarize_images(x, method, seed=seed)
        model.check_data(torch.bernoulli(x[:batch_size]) if dynamic else x)
        conditioner = functools.partial(model.condition, train=True)
        return TensorBatches(x, labels, batch_size, seed, transform, conditioner), head, method
    if method == "static":
        raise ValueError(
            "binarize='static' draws one fixed sample of the whole set in memory; for data read "
            "from disk use 'dynamic' or 'threshold'"
        )
    model.check_data(transform(head) if transform else head)
    conditioner = functools.partial(_checked_condition, model)
    checked = functools.partial(_checked_batch, loader_prepare, model, dynamic)
    batches = LoaderBatches(data, checked, batch_size, seed, transform, conditioner, options["num_workers"])
    return batches, head, method


def _check_some_labelled(model: Model, data: Any) -> None:
    """Refuse a training set without one label for a model whose training arguments include a term that learns
    from labelled images (M2's classifier)."""
    terms = {k: v for k, v in model.training_arguments.items() if v}
    if terms and in_memory(data) and not bool((labels_for(model, data) >= 0).any()):
        named = ", ".join(f"{k}={v:g}" for k, v in terms.items())
        raise ValueError(
            f"no training image has a label, and {type(model).__name__}'s training term ({named}) learns from "
            f"labelled images: keep some (labelled=100), or set {next(iter(terms))}=0"
        )


def _keep_previews(record: FitRecord, model: Model, test: Any, x_test: torch.Tensor | None, snapshots: Any) -> None:
    """The test images (and labels) the run's figures and snapshots show, in ``record``."""
    if snapshots and x_test is None:
        raise ValueError("snapshot_epochs keeps the latent means of test images: pass test=")
    if x_test is None:
        return
    test_labels = getattr(test, "y", None)
    record.snapshot_labels = test_labels[:SNAPSHOT].clone() if snapshots and test_labels is not None else None
    record.preview = x_test[:PREVIEW].cpu().clone()
    preview_y = labels_for(model, test)
    record.preview_y = preview_y[:PREVIEW].cpu().clone() if preview_y is not None else None


def fit(
    model: Model, data: Any, test: Any, y: torch.Tensor | None, validation: Any, options: dict[str, Any]
) -> FitRecord:
    """Train ``model`` on ``data`` by SVI with ``options`` (the arguments of ``fit``; see its docstring);
    returns the record of the fit, which the model takes when the fit succeeds."""
    check_options(options, model)
    record = model.fit_record.copy()
    out = Path(options["out"]) if options["out"] is not None else None
    state = None
    with argument("data"):
        refuse_tuples_and_paths(data)
        if y is not None and not in_memory(data):
            raise ValueError(
                f"y= labels a tensor of images; a {type(data).__name__}, read from disk, brings its own labels "
                "(NpyImages(path, labels='labels.npy'), a folder of class folders, or (image, label) items)"
            )
        fingerprint = data_fingerprint(model, data, y)
    if options["resume"]:
        state, validation = restore(model, record, out, options, validation)
        check_same_data(state.get("data"), fingerprint, out)
        if state["epoch"] >= options["epochs"]:
            return record
    seed = options["seed"]
    fresh = state is None and not record.history
    accelerator, _ = check_engine(options["accelerator"], options["devices"], options["strategy"], options["precision"])
    local_batch_size(options["batch_size"], options["devices"])
    device = _device(accelerator, options["devices"])
    if fresh:
        model.reset_parameters(seed)
    model.to(device)

    if y is not None and in_memory(data):  # labels travel with their images from here on
        with argument("y"):
            if model.capabilities.condition == "labels":
                labels = labels_for(model, None, y, count=len(data))
            else:
                labels = torch.as_tensor(y)
            if labels.dim() != 1 or len(labels) != len(data):
                raise ValueError(f"{len(data)} images but {labels.numel()} labels")
        if isinstance(data, ImageDataset):
            data, y = dataclasses.replace(data, y=labels), None
        else:
            data, y = ImageDataset(model.images(data).cpu(), labels), None
    if isinstance(validation, float):
        data, validation = split_validation(data, validation, seed)
    options["labelled_share"] = labelled_share(options["labelled_share"], model.capabilities.latent_labels, data)
    if model.capabilities.latent_labels:  # after the split: held-out images keep their labels
        with argument("labelled"):
            data = keep_labels(data, options["labelled"], model.num_classes, seed)
        _check_some_labelled(model, data)
        data = repeat_labelled(data, options["labelled_share"])
    batches, head, method = _training_batches(model, data, y, options, device)
    fixed = fixed_binarization(method)
    with argument("test"):
        x_test, c_test = _held_out(model, test, fixed, seed)
    with argument("validation"):
        x_val, c_val = _held_out(model, validation, fixed, seed)
    _keep_previews(record, model, test, x_test, options["snapshot_epochs"])

    schedule = KLWeight(model.beta, options["kl_warmup"] * len(batches), model.training_arguments)
    first_x, first_c = next(iter(batches.for_rank(1, 0, device).batches(1)))
    if fresh:
        with PYRO_LOCK, seeded(derive_seed(seed, 0), device):
            model.initialize(head)
    objective = make_elbo(options["elbo"], options["num_particles"], enumerate=model.capabilities.latent_labels)
    with buffers_kept(model):  # a check, not a step: BatchNorm's running statistics must not move
        validate_programs(objective, model.model, model.guide, first_x, first_c, **schedule(1))
        objective, step, fallback = choose_step(model, objective, options, first_x, first_c, schedule(1))
    if fallback is not None and options["progress"]:
        tqdm.write(f"ppvae: the Pyro programs train this fit: {fallback}")
    graph, refusal = choose_graph(options, accelerator, step)
    if refusal is not None and options["progress"]:
        tqdm.write(f"ppvae: the step is not captured in a CUDA graph: {refusal}; it runs eagerly")

    record.options = {**{k: options[k] for k in RECORDED}, "binarize": method, "step": step}
    record.options["labelled"] = describe_labelled(options["labelled"])
    record.data_source = record.data_source or data_source_of(data)
    best = best_so_far(state, out)
    job = FitJob(model, record, batches, objective, options, schedule, x_test, c_test, x_val, c_val, out, state, best)
    job.data, job.graph = fingerprint, graph
    if out is not None and writes_run_folder():  # the data and options passed: what the old weights made goes
        runs.remove_stale(out, logs=options["overwrite"])  # a replaced run stays whole until the first epoch
    loggers = _loggers(out, record.history)
    fabric = make_fabric(accelerator, options["devices"], options["strategy"], options["precision"], loggers=loggers)
    return _finish(model, record, launch(fabric, run_job, job), fabric.world_size, out)


def _finish(model: Model, record: FitRecord, result: dict[str, Any], world_size: int, out: Path | None) -> FitRecord:
    """The training's result on the caller's model and record: rank 0's weights and history, the best epoch's
    weights under validation, the run's figures, or `TrainingDiverged`."""
    if world_size > 1:  # the processes trained copies; rank 0's come back
        model.load_state_dict(result["state_dict"])
        record.history = result["history"]
        record.snapshots = result["snapshots"]
    record.training_state = result["training_state"]
    record.options["cuda_graph"] = result["graphed"]  # also where training stopped before an epoch's end
    if out is not None:
        record.folder = out
    if result["best"].get("weights") is not None:
        model.load_state_dict(result["best"]["weights"])  # model selection: the best epoch on held-out data
    if result["stopped"] == "diverged":
        kept = f" {out} keeps the checkpoint of epoch {len(record.history)}." if out and record.history else ""
        raise TrainingDiverged(result["message"] + kept, record)
    if out is not None:
        run_figures(model, record, out)
    return record


def _held_out(model: Model, data: Any, binarize: str | None, seed: int) -> tuple[torch.Tensor | None, Any]:
    """Held-out images as they are scored every epoch, and their condition; (None, None) without data."""
    if data is None:
        return None, None
    x = model.prepare(data, binarize, seed)
    return x, model.condition(x, labels_for(model, data))
