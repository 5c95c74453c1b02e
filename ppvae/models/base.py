"""`LatentVariableModel`: the estimator API every ppvae model shares.

A subclass supplies the two Pyro programs, ``model(x, y)`` and ``guide(x, y)``,
and the parts they are built from; this class gives it scikit-learn's habits:
``fit``, ``encode``, ``decode``, ``reconstruct``, ``sample``, ``evaluate``,
``save``. Each instance registers its networks with Pyro under a name of its
own, so two models in one process never share weights through Pyro's global
parameter store, and its entries leave the store when the model is garbage
collected. Threads may share models: fitting, scoring and sampling take turns
(see :mod:`ppvae.infer.threads`).
"""

from __future__ import annotations

import inspect
import itertools
import math
import uuid
import weakref
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from ppvae.data import Data, as_images, check_binarize, fixed_binarization
from ppvae.data import binarize as binarize_images
from ppvae.infer import PYRO_LOCK, elbo_terms, seeded, serialised
from ppvae.models import evidence, runs, training
from ppvae.models.registry import register_model

_instance_ids = itertools.count()


def forget_parameters(pyro_name: str) -> None:
    """Remove a model's entries from Pyro's global parameter store (its networks registered under ``pyro_name``)."""
    store = pyro.get_param_store()
    with PYRO_LOCK:
        for name in [name for name in store.keys() if name.startswith(pyro_name + ".")]:
            del store[name]


class LatentVariableModel(nn.Module):
    """Base class of VAE, CVAE and FactorAnalysis. Subclasses define ``model``, ``guide`` and ``config``.

    ``beta`` weighs the KL term in training: ``fit`` hands ``kl_weight`` = beta (times a warm-up
    factor) to the programs at every step. Called without it, the programs are the plain model.
    """

    conditional = False  # True if the programs take a condition c
    num_classes = 0  # label classes of a conditional model
    has_exact_evidence = False  # True if exact_log_evidence has a closed form
    has_latent = True  # False for a network with no z (the completion baseline)
    samples_from_prior = True  # False if a sample needs an input (a completion needs the visible pixels)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_model(cls)

    def __init__(self, x_shape: tuple[int, ...], z_dim: int, beta: float = 1.0):
        super().__init__()
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) == 1:
            x_shape = (1, 1, x_shape[0])
        if len(x_shape) != 3 or min(x_shape) < 1:
            raise ValueError(f"x_shape must be (C, H, W) (or (D,) for flat data), got {x_shape}")
        if isinstance(z_dim, bool) or int(z_dim) != z_dim or int(z_dim) < int(self.has_latent):
            raise ValueError(f"z_dim must be a positive integer, got {z_dim}")
        if not beta > 0:
            raise ValueError(f"beta must be positive (Pyro cannot scale a site by {beta})")
        self.x_shape = x_shape
        self.x_dim = math.prod(x_shape)
        self.z_dim = int(z_dim)
        self.beta = float(beta)
        # A name of its own in Pyro's parameter store (see the module docstring).
        self.pyro_name = f"{type(self).__name__.lower()}_{next(_instance_ids)}_{uuid.uuid4().hex[:6]}"
        weakref.finalize(self, forget_parameters, self.pyro_name).atexit = False  # the store would keep them forever
        self.history: list[dict[str, Any]] = []  # one record per epoch
        self.fit_config: dict[str, Any] = {}  # the options of the fit, as the run folder records them
        self.data_source: dict[str, Any] | None = None  # where the training data came from, when known
        self.preview: torch.Tensor | None = None  # a few test images for the reconstruction figure
        self.preview_y: torch.Tensor | None = None  # and their labels, for a conditional model
        self.training_state: dict[str, Any] | None = None  # optimizer, epoch and step, for resume=True
        self.snapshots: dict[int, torch.Tensor] = {}  # epoch: latent means of the first test images (snapshot_epochs)
        self.snapshot_labels: torch.Tensor | None = None  # and those images' labels
        self.run_folder: Path | None = None  # the run folder it was fitted into, loaded from or saved to

    # -- what a subclass provides ---------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (JSON-serialisable)."""
        raise NotImplementedError

    def model(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """p(z | c) p(x | z, c), observed where ``x`` is given; ``size`` images are generated otherwise."""
        raise NotImplementedError

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """q(z | x, c)."""
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z | x) for images x on the model's device."""
        raise NotImplementedError

    def likelihood_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] as images (..., C, H, W)."""
        raise NotImplementedError

    def prior_sample(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws of z from p(z | c)."""
        raise NotImplementedError

    @property
    def binary_likelihood(self) -> bool:
        return False

    @property
    def point_mass_guide(self) -> bool:
        """True if q(z | x) is a point mass (an autoencoder): it cannot serve as an importance-sampling proposal."""
        return False

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ValueError if ``x`` lies outside the likelihood's support."""

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of parameters, once, before a fresh model's first step."""

    # -- data handling --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def images(self, data: Data) -> torch.Tensor:
        """``data`` as float images (N, C, H, W) on the model's device, as given (not binarised)."""
        return as_images(data, self.x_shape).to(self.device)

    def conditions(
        self, data: Data | None, y: torch.Tensor | None = None, images: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What the programs take as ``c`` for ``data`` (labels ``y``, or the dataset's): None for an unconditional model.

        ``images`` are ``data`` as prepared for scoring (binarised), for a model whose condition is
        built from the images themselves (completion); a label-conditional model ignores them.
        """
        if not self.conditional:
            return None
        if y is None:
            y = getattr(data, "y", None)
        if y is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass labels y (or a dataset that has them)")
        return self.condition(torch.as_tensor(y).to(self.device))

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as the tensor the networks take (one-hot for a CVAE)."""
        return y

    def batch_conditioner(self):
        """``(x, c) -> c`` for each training batch, after binarisation, or None to train on ``c`` as given.

        A completion model draws there which pixels of each image are visible.
        """
        return None

    def resolve_binarize(self, binarize: str | None, x: torch.Tensor) -> str | None:
        """``"auto"``: dynamic binarisation when the likelihood is binary and the data is not; else none."""
        if binarize == "auto":
            is_binary = bool(((x == 0) | (x == 1)).all())
            return "dynamic" if self.binary_likelihood and not is_binary else None
        return check_binarize(binarize)

    def prepare(self, data: Data, binarize: str | None = "auto", seed: int = 0) -> torch.Tensor:
        """Images as the model scores them: a fixed binarisation (seeded) if the fit used one.

        The one rule for every method that takes images (``encode``, ``reconstruct``, ``evaluate``,
        ``log_evidence``): a Bernoulli model trained on binarised images sees grey images through one
        seeded binarisation, so the KL read by hand from ``encode`` is the one ``evaluate`` reports.

        ``"auto"`` follows the fit: static where it trained with dynamic or static binarisation,
        threshold where it used threshold, none where it used none.
        """
        x = self.images(data)
        if binarize == "auto":
            binarize = (
                self.fit_config["binarize"] if "binarize" in self.fit_config else self.resolve_binarize("auto", x)
            )
        x = binarize_images(x, fixed_binarization(check_binarize(binarize)), seed=seed)
        self.check_data(x)
        return x

    # -- training ---------------------------------------------------------------------------------

    @serialised
    def reset_parameters(self, seed: int) -> None:
        """Draw every parameter afresh from ``seed``: the weights a model built under that seed would have."""
        with seeded(seed, self.device):
            fresh = type(self)(**self.config())
        self.load_state_dict(fresh.state_dict())

    def fit(
        self,
        data: Data,
        *,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        binarize: str | None = "auto",
        elbo: str = "trace",
        num_particles: int = 1,
        kl_warmup: int = 0,
        clip_norm: float | None = None,
        seed: int = 0,
        test: Data | None = None,
        validation: float | Data | None = None,
        early_stopping: int | None = None,
        out: str | Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
        accelerator: str = "auto",
        devices: int = 1,
        strategy: str = "auto",
        precision: str = "32-true",
        num_workers: int = 0,
        progress: bool = True,
        snapshot_epochs: list[int] | None = None,
        y: torch.Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """Maximise the ELBO by SVI; returns (and keeps in ``history``) one record per epoch.

        ``data``: a ppvae dataset or image tensor (held in memory, the fast path), or any torch
        ``Dataset`` of images, read a batch at a time (``ppvae.data.load(path, lazy=True)``).
        ``binarize``: "dynamic", "static", "threshold", None, or "auto" (dynamic for a Bernoulli
        likelihood on grey levels). ``elbo``: "trace", "meanfield" or "iwae" (K = ``num_particles``).
        ``kl_warmup=N`` raises the KL weight from about 0 to beta over the first N epochs;
        ``clip_norm`` clips the gradient norm. A fresh model's weights are drawn from ``seed``,
        and every epoch's data order and noise from (seed, epoch), so a seed fixes the run.

        ``test`` is scored (true ELBO) after each epoch. ``validation`` (a fraction of ``data``
        held out, or a dataset) is scored too and chooses the weights the model ends with;
        ``early_stopping=P`` stops after P epochs without a better validation ELBO.
        ``out`` writes the run folder after every epoch, atomically; ``resume=True`` continues
        its last checkpoint (or this model's last fit) exactly, up to ``epochs`` in all. A folder that
        holds anything is refused unless it is this model's own run (fitted into, loaded from or saved
        to), or ``resume``, or ``overwrite=True`` (which first removes the old run's files); a fit holds
        the folder's lock, so a second training into it is refused.
        A fit that fails leaves the model as it was.
        A non-finite loss stops training with :class:`TrainingDiverged`, the last finite weights kept.
        ``snapshot_epochs=[1, 5, 10]`` keeps the latent means of the first 2,000 test images after
        those epochs in ``snapshots`` (the "latent over training" figure, ``ppvae.plot(model, "training")``).

        ``accelerator`` ("auto", "cpu", "cuda"), ``devices`` (processes, data-parallel: the global
        ``batch_size`` is split among them), ``strategy`` and ``precision`` go to Lightning Fabric.
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "data", "test", "y", "validation")}
        options["validation"] = validation if isinstance(validation, float) or validation is None else "dataset"
        with training.run_folder(self, out, resume, overwrite), training.unchanged_on_error(self):
            return self._fit(data, test, y, validation, options)

    def _fit(
        self,
        data: Data,
        test: Data | None,
        y: torch.Tensor | None,
        validation: float | Data | None,
        options: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """How this model fits; SVI through the shared loop unless a subclass has a closed form."""
        return training.fit_model(self, data, test, y, validation, options)

    @classmethod
    def fit_defaults(cls) -> dict[str, Any]:
        """The default of every option of ``fit``: one source for the CLI, the demo and the docs."""
        parameters = list(inspect.signature(cls.fit).parameters.values())[2:]
        return {p.name: p.default for p in parameters}

    # -- inference and generation ---------------------------------------------------------------

    @torch.no_grad()
    def encode(
        self,
        data: Data,
        y: torch.Tensor | None = None,
        return_scale: bool = False,
        binarize: str | None = "auto",
        seed: int = 0,
    ):
        """Posterior means of z for each image (and the posterior scales with ``return_scale``).

        Like every method that takes images, it sees them as ``evaluate`` scores them (see ``prepare``):
        a model trained on binarised images encodes a fixed binarisation of grey ones.
        """
        self.eval()
        x = self.prepare(data, binarize, seed)
        loc, scale = self.posterior(x, self.conditions(data, y, x))
        return (loc, scale) if return_scale else loc

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] as images (N, C, H, W): pixel probabilities for Bernoulli, means otherwise."""
        self.eval()
        c = None if y is None else self.condition(torch.as_tensor(y).to(self.device))
        return self.likelihood_mean(torch.as_tensor(z, dtype=torch.float32).to(self.device), c)

    @torch.no_grad()
    def reconstruct(
        self, data: Data, y: torch.Tensor | None = None, binarize: str | None = "auto", seed: int = 0
    ) -> torch.Tensor:
        """Decode the posterior mean of each image: E[x | z = E_q[z | x]], the images seen as ``prepare`` sees them."""
        self.eval()
        x = self.prepare(data, binarize, seed)
        c = self.conditions(data, y, x)
        loc, _ = self.posterior(x, c)
        return self.likelihood_mean(loc, c)

    @serialised
    @torch.no_grad()
    def sample(self, n: int = 64, y: Any = None, seed: int | None = None) -> torch.Tensor:
        """``n`` images E[x | z] with z drawn from the prior (labels ``y`` for a conditional model)."""
        self.eval()
        if not self.conditional and y is not None:
            raise ValueError(f"{type(self).__name__} is not conditional: sample takes no labels")
        c = self.condition(self.sample_labels(n, y).to(self.device)) if self.conditional else None
        with seeded(seed, self.device):
            return self.likelihood_mean(self.prior_sample(n, c), c)

    def sample_labels(self, n: int, y: Any = None) -> torch.Tensor:
        """The ``n`` labels a conditional model samples with; by default the classes in turn."""
        return torch.arange(n) % self.num_classes if y is None else torch.as_tensor(y).expand(n)

    # -- evaluation -----------------------------------------------------------------------------

    @serialised
    @torch.no_grad()
    def elbo_terms(
        self,
        data: Data,
        y: torch.Tensor | None = None,
        batch_size: int = 1000,
        binarize: str | None = "auto",
        seed: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Per-example ELBO, reconstruction log-likelihood and KL in nats, each a tensor (N,).

        Always the true ELBO (beta = 1) with analytic KL where the prior/guide pair has one.
        """
        self.eval()
        x = self.prepare(data, binarize, seed)
        c = self.conditions(data, y, x)
        parts: dict[str, list[torch.Tensor]] = {}
        with pyro.validation_enabled(False), seeded(seed, x.device):
            for i in range(0, x.shape[0], batch_size):
                cb = None if c is None else c[i : i + batch_size]
                for key, value in elbo_terms(self.model, self.guide, x[i : i + batch_size], cb).items():
                    parts.setdefault(key, []).append(value.double().cpu())
        return {key: torch.cat(values) for key, values in parts.items()}

    def log_evidence(self, data: Data, num_samples: int = 1000, y: torch.Tensor | None = None, **options: Any):
        """Importance-sampled log p(x) per example in nats; see :func:`ppvae.log_evidence` for the options."""
        return evidence.log_evidence(self, data, num_samples=num_samples, y=y, **options)

    def exact_log_evidence(self, data: Data) -> torch.Tensor | None:
        """The closed-form log p(x) per example where the model has one (factor analysis), else None."""
        return None

    @serialised
    def evaluate(
        self,
        data: Data,
        y: torch.Tensor | None = None,
        batch_size: int = 1000,
        binarize: str | None = "auto",
        seed: int = 0,
        num_samples: int | None = None,
        progress: bool = False,
    ) -> dict[str, float]:
        """Mean ELBO, reconstruction and KL per example (nats) with standard errors.

        With ``num_samples`` K it adds the importance-sampled ``log_px`` (K samples from the
        guide), the ``gap`` log p(x) - ELBO, ``bits_per_dim``, the seconds it took and the
        Pareto k-hat diagnostic: its median and ``khat_unreliable``, the share of images above
        0.7, where the estimate is not to be trusted. A model with a closed-form evidence adds
        ``log_px_exact``.
        """
        broken = [
            name
            for name, value in self.state_dict().items()
            if value.is_floating_point() and not value.isfinite().all()
        ]
        if broken:
            raise ValueError(
                f"the model's weights hold NaN or infinite values ({broken[0]}{' and others' if len(broken) > 1 else ''}): "
                "there is nothing to evaluate; a diverged run keeps its last good weights in weights.pt"
            )
        terms = self.elbo_terms(data, y, batch_size=batch_size, binarize=binarize, seed=seed)
        if num_samples:
            estimate = self.log_evidence(
                data, num_samples, y, binarize=binarize, seed=seed, progress=progress, diagnostics=True
            )
            terms["log_px"] = estimate.log_evidence
            terms["gap"] = estimate.log_evidence - terms["elbo"]
            terms["effective_sample_size"] = estimate.effective_sample_size
        if self.has_exact_evidence:
            terms["log_px_exact"] = self.exact_log_evidence(self.prepare(data, binarize, seed)).cpu()
        n = next(iter(terms.values())).numel()
        out: dict[str, float] = {"n": n}
        for key, value in terms.items():
            out[key] = value.mean().item()
            out[f"{key}_se"] = (value.std() / math.sqrt(n)).item() if n > 1 else float("nan")
        levels = None if self.binary_likelihood else 256
        for key in ("log_px", "log_px_exact"):
            if key in out:
                out[key.replace("log_px", "bits_per_dim")] = evidence.bits_per_dim(out[key], self.x_dim, levels)
        if num_samples:
            out.update(num_samples=num_samples, evidence_seconds=estimate.seconds)
            k_hat = estimate.pareto_k[torch.isfinite(estimate.pareto_k)]
            if k_hat.numel():  # NaN where K is too small for a tail fit
                out["khat_median"] = k_hat.median().item()
                out["khat_unreliable"] = (k_hat > evidence.KHAT_UNRELIABLE).double().mean().item()
        return out

    def draw_figures(self, directory: Path) -> list[Path]:
        """Figures of this kind of model beyond the run's own (loss, samples, reconstructions); none by default."""
        return []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- runs -----------------------------------------------------------------------------------

    def save(self, directory: str | Path, figures: bool = True) -> Path:
        """Write the run folder: spec.json, weights.pt, metrics.jsonl, the training state and (with ``figures``) PNGs."""
        self.run_folder = runs.save_run(self, directory, figures=figures)
        return self.run_folder
