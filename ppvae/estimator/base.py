"""`LatentVariableModel`: the estimator API every ppvae model shares.

A subclass supplies its two Pyro programs, ``model(x, c, kl_weight)`` and
``guide(x, c, kl_weight)``, its `Capabilities` line and the parts the programs
are built from (`ppvae.estimator.contract` says what the machinery may use);
this class gives it scikit-learn's habits: ``fit`` (returns the model), ``encode``,
``decode``, ``reconstruct``, ``sample``, ``evaluate``, ``log_evidence``, ``save``.
Public methods take labels as ``y=`` and a ready condition as ``c=``; every program
and hook names the condition ``c``. Each instance registers its networks with Pyro
under a name of its own, so two models in one process never share weights through
Pyro's global parameter store, and its entries leave the store when the model is
garbage collected. Threads may share models: fitting, scoring and sampling take
turns (see `ppvae.infer.threads`).
"""

from __future__ import annotations

import inspect
import itertools
import math
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from ppvae.data import Data, as_images, check_binarize, fixed_binarization
from ppvae.data import binarize as binarize_images
from ppvae.estimator import evidence, fitting, runs
from ppvae.estimator.contract import Capabilities, FitRecord, check_labels, labels_for
from ppvae.estimator.registry import register_model
from ppvae.infer import PYRO_LOCK, elbo_terms, seeded, serialised
from ppvae.infer.batches import slices
from ppvae.infer.traces import posterior_summary
from ppvae.parts.layers import check_layer_sizes

_instance_ids = itertools.count()


def forget_parameters(pyro_name: str) -> None:
    """Remove a model's entries from Pyro's global parameter store (its networks registered under ``pyro_name``)."""
    store = pyro.get_param_store()
    with PYRO_LOCK:
        for name in [name for name in store.keys() if name.startswith(pyro_name + ".")]:
            del store[name]


class LatentVariableModel(nn.Module):
    """Base class of every ppvae model. Subclasses define ``model``, ``guide``, ``config`` and ``capabilities``.

    ``beta`` weighs the KL term in training: ``fit`` hands ``kl_weight`` = beta (times a warm-up
    factor) to the programs at every step. Called without it, the programs are the plain model.
    """

    capabilities = Capabilities()  # a subclass's one line; an instance refines it where a part decides
    num_classes = 0  # label classes of a model conditioned on labels
    classes: list[str] | None = None  # their names, where known: labels may be given by name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_model(cls)
        if "__init__" in vars(cls):  # building draws the initial weights from torch's global stream: never
            cls.__init__ = serialised(cls.__init__)  # inside another thread's training step (see ppvae.infer.threads)

    def __init__(self, x_shape: tuple[int, ...], z_dim: int | Sequence[int], beta: float = 1.0):
        super().__init__()
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) == 1:
            x_shape = (1, 1, x_shape[0])
        if len(x_shape) != 3 or min(x_shape) < 1:
            raise ValueError(f"x_shape must be (C, H, W) (or (D,) for flat data), got {x_shape}")
        if self.capabilities.latent:
            self.layer_sizes = check_layer_sizes(z_dim)  # one size per stochastic layer, z1 (next to x) first
        elif z_dim != 0:
            raise ValueError(f"{type(self).__name__} has no latent variables: z_dim must be 0, got {z_dim!r}")
        else:
            self.layer_sizes = ()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
            raise ValueError(f"beta must be a positive finite number (the KL term's weight), got {beta!r}")
        self.x_shape = x_shape
        self.x_dim = math.prod(x_shape)
        self.z_dim = self.layer_sizes[0] if self.layer_sizes else 0  # the layer encode reads and decode takes
        self.beta = float(beta)
        # A name of its own in Pyro's parameter store (see the module docstring).
        self.pyro_name = f"{type(self).__name__.lower()}_{next(_instance_ids)}_{uuid.uuid4().hex[:6]}"
        weakref.finalize(self, forget_parameters, self.pyro_name).atexit = False  # the store would keep them forever
        self.fit_record = FitRecord()

    @property
    def training_arguments(self) -> dict[str, Any]:
        """Keyword arguments the programs take in training only, beside ``kl_weight``, handed at every step:
        none here; M2's classifier weight. Called without them, the programs are the plain model."""
        return {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch of training (the fit record's history)."""
        return self.fit_record.history

    # -- what a subclass provides ---------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (JSON-serialisable)."""
        raise NotImplementedError

    def model(self, x: torch.Tensor | None = None, c: torch.Tensor | None = None, kl_weight: float = 1.0):
        """p(z | c) p(x | z, c), observed where ``x`` is given."""
        raise NotImplementedError

    def guide(self, x: torch.Tensor | None = None, c: torch.Tensor | None = None, kl_weight: float = 1.0):
        """q(z | x, c)."""
        raise NotImplementedError

    def condition(self, x: torch.Tensor | None, y: torch.Tensor | None, train: bool = False) -> torch.Tensor | None:
        """The condition hook: the ``c`` the programs take for images ``x`` (as scored) and labels ``y``
        (checked by `labels_for`). None here: a model without a condition."""
        return None

    def likelihood_mean(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, c] as images (..., C, H, W), for codes z of the site ``encode`` returns."""
        raise NotImplementedError

    def prior_sample(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws of z from p(z | c)."""
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ValueError if ``x`` lies outside the likelihood's support."""

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of parameters, once, before a fresh model's first step."""

    def draw_figures(self, directory: Path, record: FitRecord) -> list[Path]:
        """Figures of this kind of model beyond the run's own (loss, samples, reconstructions); none by default."""
        return []

    # -- data handling --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def images(self, data: Data) -> torch.Tensor:
        """``data`` as float images (N, C, H, W) on the model's device, as given (not binarised)."""
        return as_images(data, self.x_shape).to(self.device)

    def condition_for(
        self,
        data: Data | None,
        x: torch.Tensor | None,
        y: Any = None,
        c: torch.Tensor | None = None,
        count: int | None = None,
    ) -> torch.Tensor | None:
        """The condition for ``data`` (prepared as ``x``), or for ``count`` codes: ``c`` as given, else the hook's,
        from labels ``y`` (or the dataset's, but for a model whose label is latent: see `labels_for`)."""
        if c is not None:
            return torch.as_tensor(c).to(self.device)
        count = len(x) if x is not None else count
        labels = labels_for(self, data if data is not None else x, y, scoring=True, count=count)
        return self.condition(x, None if labels is None else labels.to(self.device))

    def resolve_binarize(self, binarize: str | None, x: torch.Tensor) -> str | None:
        """``"auto"``: dynamic binarisation when the likelihood is binary and the data is not; else none."""
        if binarize == "auto":
            is_binary = bool(((x == 0) | (x == 1)).all())
            return "dynamic" if self.capabilities.binary and not is_binary else None
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
            options = self.fit_record.options
            binarize = options["binarize"] if "binarize" in options else self.resolve_binarize("auto", x)
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
        labelled: int | Sequence[int] | torch.Tensor | None = None,
        labelled_share: float | str | None = "auto",
        compile: str | bool = "auto",
    ) -> LatentVariableModel:
        """Maximise the ELBO by SVI; returns the model, with one record per epoch in ``history``.

        ``data``: a ppvae dataset or image tensor (held in memory, the fast path), or any torch
        ``Dataset`` of images, read a batch at a time (``ppvae.data.load(path, lazy=True)``); ``y``:
        labels for a tensor of images (a dataset brings its own).
        ``binarize``: "dynamic", "static", "threshold", None, or "auto" (dynamic for a Bernoulli
        likelihood on grey levels). ``elbo``: "trace", "meanfield" or "iwae" (K = ``num_particles``).
        ``kl_warmup=N`` raises the KL weight from about 0 to beta over the first N epochs;
        ``clip_norm`` clips the gradient norm. A fresh model's weights are drawn from ``seed``,
        and every epoch's data order and noise from (seed, epoch), so a seed fixes the run.

        ``test`` is scored (true ELBO) after each epoch. ``validation`` (a fraction of ``data``
        held out, or a dataset) is scored too and chooses the weights the model ends with;
        ``early_stopping=P`` stops after P epochs without a better validation ELBO.
        ``out`` writes the run folder after every epoch, atomically; ``resume=True`` continues
        its last checkpoint (or this model's last fit) exactly, up to ``epochs`` in all, with the run's own
        options: one given with another value is refused, naming both, but ``lr`` and ``clip_norm`` may
        change (and are recorded); an option left at its default takes the run's value. A folder that
        holds anything is refused unless it is this model's own run (fitted into, loaded from or saved
        to), or ``resume``, or ``overwrite=True`` (which first removes the old run's files); a fit holds
        the folder's lock, so a second training into it is refused.
        A fit that fails leaves the model as it was: its weights, device and ``fit_record``.
        A non-finite loss stops training with `TrainingDiverged`, the last finite weights kept.
        ``snapshot_epochs=[1, 5, 10]`` keeps the latent means of the first 2,000 test images after
        those epochs in ``fit_record.snapshots`` (the "latent over training" figure,
        ``ppvae.plot(model, "training")``).

        ``labelled``, for a model whose label is latent (M2): the training labels it may read, the others hidden
        and summed out: a count (balanced over the classes, drawn with ``seed``), indices or a boolean mask
        (see `ppvae.estimator.labels`); None reads the labels as given, -1 marking an unknown one. Held-out
        data (``test``, ``validation``) keeps its labels. ``labelled_share=0.1`` repeats the labelled images until
        they make up a tenth of each epoch, so that every batch has some (Kingma et al.'s practice; see
        `ppvae.estimator.labels.repeat_labelled`); 0 shows each image once; "auto" is 0.5 for such a model.

        ``compile``: how each step runs. "auto" trains a model built from parts (the VAE family, ``elbo="trace"``
        or ``"meanfield"``, one particle) through its ELBO lowered to plain torch, checked on the first batch
        against the Pyro programs (same noise, same loss and gradients); ``True`` also compiles that with
        ``torch.compile`` (seconds of compiling first); ``False`` runs the Pyro programs. On a GPU a lowered step
        is then captured in a CUDA graph and replayed, checked once against the eager step (one process, no
        clipping, 32-bit). See `ppvae.estimator.step`; ``fit_record.options["step"]`` says which step ran and
        ``fit_record.options["cuda_graph"]`` whether a graph replayed it.

        ``accelerator`` ("auto", "cpu", "cuda"), ``devices`` (processes, data-parallel: the global
        ``batch_size`` is split among them), ``strategy`` and ``precision`` go to Lightning Fabric.
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "data", "test", "y", "validation")}
        options["validation"] = validation if isinstance(validation, float) or validation is None else "dataset"
        weights = {k: v.detach().clone() for k, v in self.state_dict().items()}
        device = self.device
        try:
            with fitting.claimed(self.fit_record, out, resume, overwrite):
                self.fit_record = self._fit(data, test, y, validation, options)
        except fitting.TrainingDiverged as diverged:  # not a failure: the last finite weights and epochs stay
            if diverged.record is not None:
                self.fit_record = diverged.record
            raise
        except Exception:
            self.load_state_dict(weights)
            self.to(device)
            raise
        return self

    def _fit(
        self,
        data: Data,
        test: Data | None,
        y: torch.Tensor | None,
        validation: float | Data | None,
        options: dict[str, Any],
    ) -> FitRecord:
        """How this model fits (the record of the fit); SVI through the shared loop unless a subclass has a "
        "closed form."""
        return fitting.fit(self, data, test, y, validation, options)

    @classmethod
    def fit_defaults(cls) -> dict[str, Any]:
        """The default of every option of ``fit``: one source for the CLI, the demo and the docs."""
        parameters = list(inspect.signature(cls.fit).parameters.values())[2:]
        return {p.name: p.default for p in parameters}

    # -- inference and generation ---------------------------------------------------------------

    def _posterior(self, x: torch.Tensor, c: torch.Tensor | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Location and scale of q for every latent site, its parents held at their locations."""
        if not self.capabilities.latent:
            raise ValueError(f"{type(self).__name__} has no latent variables to encode")
        return posterior_summary(self.guide, x, c)

    @torch.no_grad()
    def encode(
        self,
        data: Data,
        y: Any = None,
        c: torch.Tensor | None = None,
        return_scale: bool = False,
        binarize: str | None = "auto",
        seed: int = 0,
        site: str | None = None,
    ):
        """Posterior locations of z for each image (and the posterior scales with ``return_scale``).

        The location and scale are the guide's own parameters for a location-scale family (normal,
        Laplace, Student-t, logistic), else its mean and standard deviation. With several latent sites,
        each is read with the sites it depends on held at their locations; ``site=None`` returns the
        model's only site or, with several, the first the guide samples (in a hierarchy, the layer
        next to x), ``site="z1"`` that one, ``site="all"`` a dict of every site, in the guide's order.
        Like every method that takes images, it sees them as ``evaluate`` scores them (see ``prepare``):
        a model trained on binarised images encodes a fixed binarisation of grey ones.
        """
        self.eval()
        x = self.prepare(data, binarize, seed)
        summary = self._posterior(x, self.condition_for(data, x, y, c))
        if site == "all":
            return {name: (loc, scale) if return_scale else loc for name, (loc, scale) in summary.items()}
        name = self.code_site(summary, site)
        loc, scale = summary[name]
        return (loc, scale) if return_scale else loc

    def code_site(self, summary: dict[str, Any], site: str | None = None) -> str:
        """The latent site ``encode`` reads: ``site``, or the first continuous one the guide samples (a label the
        guide infers is no code)."""
        if site is None:
            return next(name for name, (loc, _) in summary.items() if loc.is_floating_point())
        if site not in summary:
            raise ValueError(f"{type(self).__name__} has no latent site {site!r}; its sites: {', '.join(summary)}")
        return site

    @torch.no_grad()
    def decode(
        self, z: torch.Tensor, y: Any = None, c: torch.Tensor | None = None, site: str | None = None
    ) -> torch.Tensor:
        """E[x | z] as images (N, C, H, W): pixel probabilities for Bernoulli, means otherwise.

        ``site`` names the latent layer z belongs to (default: the one next to x); codes of a higher
        layer of a hierarchy reach x through the locations of the layers below (see ``descend``)."""
        self.eval()
        z = torch.as_tensor(z, dtype=torch.float32).to(self.device)
        width = self.latent_sizes.get(self.latent_site(site)) if self.latent_sizes else None
        if width is not None and (z.dim() != 2 or z.shape[-1] != width):
            raise ValueError(
                f"z of shape {tuple(z.shape)} does not fit: {type(self).__name__} decodes codes of shape (N, {width})"
                + (f" at site {site!r}" if site else "")
            )
        kind = self.capabilities.condition
        if y is None and c is None and kind == "labels":
            raise ValueError(f"{type(self).__name__} decodes with a condition: pass labels y")
        given = y is not None or c is not None or kind == "images"  # the hook says how to build c from images
        c = self.condition_for(None, None, y, c, count=len(z)) if given else None
        return self.likelihood_mean(self.descend(z, site, c), c)

    def descend(
        self, z: torch.Tensor, site: str | None, c: torch.Tensor | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Codes of ``site`` as codes of the layer ``likelihood_mean`` takes; a model of one latent layer
        has nothing to descend."""
        self.latent_site(site)
        return z

    def latent_site(self, site: str | None) -> str:
        """``site``, checked against ``latent_sizes`` (None: the layer next to x)."""
        if site is None:
            return next(iter(self.latent_sizes))
        if site not in self.latent_sizes:
            raise ValueError(
                f"{type(self).__name__} has no latent site {site!r}; its sites: {', '.join(self.latent_sizes)}"
            )
        return site

    @property
    def latent_sizes(self) -> dict[str, int]:
        """Each latent site's size, the one next to x first."""
        return {"z": self.z_dim} if self.z_dim else {}

    @torch.no_grad()
    def reconstruct(
        self, data: Data, y: Any = None, c: torch.Tensor | None = None, binarize: str | None = "auto", seed: int = 0
    ) -> torch.Tensor:
        """Decode the posterior location of each image: E[x | z = loc of q(z | x)], the images seen as
        ``prepare`` sees them."""
        self.eval()
        x = self.prepare(data, binarize, seed)
        c = self.condition_for(data, x, y, c)
        summary = self._posterior(x, c)
        return self.likelihood_mean(summary[self.code_site(summary)][0], c)

    @serialised
    @torch.no_grad()
    def sample(self, n: int = 64, y: Any = None, seed: int | None = None) -> torch.Tensor:
        """``n`` images E[x | z] with z drawn from the prior (labels ``y`` for a model conditioned on labels)."""
        self.eval()
        takes_labels = self.capabilities.condition == "labels"
        if not takes_labels and y is not None:
            raise ValueError(f"{type(self).__name__} is not conditional: sample takes no labels")
        c = self.condition(None, self.sample_labels(n, y).to(self.device)) if takes_labels else None
        with seeded(seed, self.device):
            return self.likelihood_mean(self.prior_sample(n, c), c)

    def sample_labels(self, n: int, y: Any = None) -> torch.Tensor:
        """The ``n`` labels a conditional model samples with: ``y`` (one label for all, or ``n`` of them, indices or
        class names), by default the classes in turn."""
        if y is None:
            return torch.arange(n) % self.num_classes
        return check_labels(y, self.num_classes, classes=self.classes, count=n)

    # -- evaluation -----------------------------------------------------------------------------

    @serialised
    @torch.no_grad()
    def elbo_terms(
        self,
        data: Data,
        y: Any = None,
        c: torch.Tensor | None = None,
        batch_size: int = 1000,
        binarize: str | None = "auto",
        seed: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Per-example ELBO, reconstruction log-likelihood and KL in nats, each a tensor (N,).

        Always the true ELBO (beta = 1) with analytic KL where the prior/guide pair has one.
        """
        self.eval()
        x = self.prepare(data, binarize, seed)
        c = self.condition_for(data, x, y, c)
        parts: dict[str, list[torch.Tensor]] = {}
        with pyro.validation_enabled(False), seeded(seed, x.device):
            for xb, cb in slices(batch_size, x, c):
                for key, value in elbo_terms(self.model, self.guide, xb, cb).items():
                    parts.setdefault(key, []).append(value.double().cpu())
        return {key: torch.cat(values) for key, values in parts.items()}

    def log_evidence(self, data: Data, num_samples: int | None = None, **options: Any):
        """log p(x) per example in nats, by one method with only its options: see `ppvae.log_evidence`."""
        return evidence.log_evidence(self, data, num_samples, **options)

    def exact_log_evidence(self, data: Data) -> torch.Tensor | None:
        """The closed-form log p(x) per example where the model has one (factor analysis), else None."""
        return None

    @serialised
    def evaluate(
        self,
        data: Data,
        y: Any = None,
        c: torch.Tensor | None = None,
        batch_size: int = 1000,
        binarize: str | None = "auto",
        seed: int = 0,
        num_samples: int | None = None,
        method: str | None = None,
        progress: bool = False,
        **evidence_options: Any,
    ) -> dict[str, Any]:
        """Mean ELBO, reconstruction and KL per example (nats) with standard errors.

        With ``num_samples`` K (or ``method="is"``, K = 1000 unless given) it adds the importance-sampled
        ``log_px`` (K samples from the guide), the ``gap`` log p(x) - ELBO, ``bits_per_dim``, the seconds
        it took and the Pareto k-hat diagnostic: its median and ``khat_unreliable``, the share of images
        above 0.7, where the estimate is not to be trusted. ``method="ais"`` or ``"quadrature"`` gives
        ``log_px`` by that estimator instead (``evidence_options`` are its options), and ``"method"``
        names the estimator used. A model with a closed-form evidence adds ``log_px_exact``.
        """
        self._check_weights()
        method = method or ("is" if num_samples else None)
        if method == "exact" and not self.capabilities.exact_evidence:
            evidence.check_method(self, method)
        estimated = method not in (None, "exact")
        terms = self.elbo_terms(data, y, c, batch_size=batch_size, binarize=binarize, seed=seed)
        if estimated:
            if method == "is":
                evidence_options["num_samples"] = 1000 if num_samples is None else num_samples  # 0: refused there
            elif num_samples:
                evidence.refuse_option("num_samples", method)
            estimate = evidence.log_evidence(
                self,
                data,
                method=method,
                y=y,
                c=c,
                binarize=binarize,
                seed=seed,
                progress=progress,
                diagnostics=True,
                **evidence_options,
            )
            terms["log_px"] = estimate.log_evidence
            terms["gap"] = estimate.log_evidence - terms["elbo"]
            if method == "is":
                terms["effective_sample_size"] = estimate.effective_sample_size
        if self.capabilities.exact_evidence:
            terms["log_px_exact"] = self.exact_log_evidence(self.prepare(data, binarize, seed)).cpu()
        out: dict[str, Any] = evidence.means_with_errors(terms)
        levels = None if self.capabilities.binary else 256
        for key in ("log_px", "log_px_exact"):
            if key in out:
                out[key.replace("log_px", "bits_per_dim")] = evidence.bits_per_dim(out[key], self.x_dim, levels)
        if estimated:
            out.update(evidence.describe(estimate, method))
        return out

    def _check_weights(self) -> None:
        """Refuse to score weights that hold NaN or infinite values (a diverged run's)."""
        broken = [k for k, v in self.state_dict().items() if v.is_floating_point() and not v.isfinite().all()]
        if broken:
            others = " and others" if len(broken) > 1 else ""
            raise ValueError(
                f"the model's weights hold NaN or infinite values ({broken[0]}{others}): there is nothing "
                "to evaluate; a diverged run keeps its last good weights in weights.pt"
            )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- runs -----------------------------------------------------------------------------------

    def save(self, directory: str | Path, figures: bool = True, overwrite: bool = False) -> Path:
        """Write the run folder: spec.json, weights.pt, metrics.jsonl, the training state and, with
        ``figures``, PNGs.

        The rules of ``fit(out=...)``: a folder that holds anything is refused unless it is this model's own
        run (fitted into, loaded from or saved to) or ``overwrite=True``, and a folder a training holds is
        refused. Only files ppvae wrote are replaced or removed."""
        with fitting.claimed(self.fit_record, directory, resume=False, overwrite=overwrite):
            self.fit_record.folder = runs.save_run(self, self.fit_record, directory, figures=figures)
        return self.fit_record.folder
