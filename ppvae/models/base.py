"""`LatentVariableModel`: the estimator API every ppvae model shares.

A subclass supplies the two Pyro programs, ``model(x, y)`` and ``guide(x, y)``,
and the parts they are built from; this class gives it scikit-learn's habits:
``fit``, ``encode``, ``decode``, ``reconstruct``, ``sample``, ``evaluate``,
``save``. Each instance registers its networks with Pyro under a name of its
own, so two models in one process never share weights through Pyro's global
parameter store.
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
import uuid
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from ppvae.data import ImageDataset, as_images, binarize as binarize_images, check_binarize, fixed_binarization
from ppvae.infer import elbo_terms

_instance_ids = itertools.count()


@contextmanager
def seeded(seed: int | None, device: torch.device):
    """Draw from torch's generator seeded with ``seed``, then restore its state, so that evaluating
    or sampling mid-training never resets the training's random stream. ``None``: no change."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield

Data = ImageDataset | torch.Tensor


class LatentVariableModel(nn.Module):
    """Base class of VAE, CVAE and FactorAnalysis. Subclasses define ``model``, ``guide`` and ``config``."""

    conditional = False  # True if the programs take labels y
    num_classes = 0  # label classes of a conditional model
    has_exact_evidence = False  # True if exact_log_evidence has a closed form

    def __init__(self, x_shape: tuple[int, ...], z_dim: int):
        super().__init__()
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) == 1:
            x_shape = (1, 1, x_shape[0])
        if len(x_shape) != 3 or min(x_shape) < 1:
            raise ValueError(f"x_shape must be (C, H, W) (or (D,) for flat data), got {x_shape}")
        if int(z_dim) < 1:
            raise ValueError(f"z_dim must be a positive integer, got {z_dim}")
        self.x_shape = x_shape
        self.x_dim = math.prod(x_shape)
        self.z_dim = int(z_dim)
        # A name of its own in Pyro's parameter store (see the module docstring).
        self.pyro_name = f"{type(self).__name__.lower()}_{next(_instance_ids)}_{uuid.uuid4().hex[:6]}"
        self.history: list[dict[str, Any]] = []
        self.fit_config: dict[str, Any] = {}

    # -- what a subclass provides ---------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (JSON-serialisable)."""
        raise NotImplementedError

    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, size: int | None = None):
        raise NotImplementedError

    def guide(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, size: int | None = None):
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z | x) for images x on the model's device."""
        raise NotImplementedError

    def likelihood_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] as images (..., C, H, W)."""
        raise NotImplementedError

    def prior_sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    @property
    def binary_likelihood(self) -> bool:
        return False

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ValueError if ``x`` lies outside the likelihood's support."""

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of parameters, once, before a fresh model's first step."""

    # -- data handling --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def _images(self, data: Data) -> torch.Tensor:
        return as_images(data, self.x_shape).to(self.device)

    def _labels(self, data: Data, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None and isinstance(data, ImageDataset):
            y = data.y
        if y is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass labels y (or a dataset that has them)")
        return self.condition(torch.as_tensor(y).to(self.device))

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as the tensor the networks take (one-hot for a CVAE)."""
        return y

    def resolve_binarize(self, binarize: str | None, x: torch.Tensor) -> str | None:
        """``"auto"``: dynamic binarisation when the likelihood is binary and the data is not; else none."""
        if binarize == "auto":
            is_binary = bool(((x == 0) | (x == 1)).all())
            return "dynamic" if self.binary_likelihood and not is_binary else None
        return check_binarize(binarize)

    def prepare(self, data: Data, binarize: str | None = "auto", seed: int = 0) -> torch.Tensor:
        """Images as the model scores them: a fixed binarisation (seeded) if the fit used one.

        ``"auto"`` follows the fit: static where it trained with dynamic or static binarisation,
        threshold where it used threshold, none where it used none.
        """
        x = self._images(data)
        if binarize == "auto":
            binarize = self.fit_config["binarize"] if "binarize" in self.fit_config else self.resolve_binarize("auto", x)
        x = binarize_images(x, fixed_binarization(check_binarize(binarize)), seed=seed)
        self.check_data(x)
        return x

    # -- training ---------------------------------------------------------------------------------

    def fit(
        self,
        data: Data,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        binarize: str | None = "auto",
        test: Data | None = None,
        elbo: str = "trace",
        num_particles: int = 1,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
        y: torch.Tensor | None = None,
        kl_warmup: int = 0,
    ) -> list[dict[str, Any]]:
        """Maximise the ELBO by SVI; returns (and keeps in ``history``) one record per epoch.

        ``data`` and ``test`` are ppvae datasets or image tensors, (N, C, H, W) or (N, D).
        ``binarize``: "dynamic", "static", "threshold", None, or "auto" (dynamic for a
        Bernoulli likelihood on grey-level data). ``elbo``: "trace", "meanfield" or "iwae" (the
        importance-weighted bound with K = ``num_particles``).
        ``kl_warmup=N`` raises the KL weight linearly from about 0 to beta over the first N epochs.
        With ``checkpoint_dir`` the run folder is written after every epoch. Test scores are
        always the true ELBO (weight 1), whatever weight training used.
        """
        from ppvae.models.fitting import fit_svi

        return fit_svi(
            self, data, epochs=epochs, batch_size=batch_size, lr=lr, binarize=binarize, test=test, elbo=elbo,
            num_particles=num_particles, seed=seed, device=device, progress=progress,
            checkpoint_dir=checkpoint_dir, y=y, kl_warmup=kl_warmup,
        )  # fmt: skip

    # -- inference and generation ---------------------------------------------------------------

    @torch.no_grad()
    def encode(self, data: Data, y: torch.Tensor | None = None, return_scale: bool = False):
        """Posterior means of z for each image (and the posterior scales with ``return_scale``)."""
        self.eval()
        loc, scale = self.posterior(self._images(data), self._labels(data, y))
        return (loc, scale) if return_scale else loc

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] as images (N, C, H, W): pixel probabilities for Bernoulli, means otherwise."""
        self.eval()
        c = None if y is None else self.condition(torch.as_tensor(y).to(self.device))
        return self.likelihood_mean(torch.as_tensor(z, dtype=torch.float32).to(self.device), c)

    @torch.no_grad()
    def reconstruct(self, data: Data, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean of each image: E[x | z = E_q[z | x]]."""
        self.eval()
        c = self._labels(data, y)
        loc, _ = self.posterior(self._images(data), c)
        return self.likelihood_mean(loc, c)

    @torch.no_grad()
    def sample(self, n: int = 64, y: torch.Tensor | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` images E[x | z] with z drawn from the prior (labels ``y`` for a conditional model)."""
        self.eval()
        c = None
        if self.conditional:
            if y is None:
                y = torch.arange(n) % self.num_classes
            c = self.condition(torch.as_tensor(y).to(self.device))
        with seeded(seed, self.device):
            return self.likelihood_mean(self.prior_sample(n), c)

    # -- evaluation -----------------------------------------------------------------------------

    @torch.no_grad()
    def elbo_terms(
        self, data: Data, y: torch.Tensor | None = None, batch_size: int = 1000, binarize: str | None = "auto", seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """Per-example ELBO, reconstruction log-likelihood and KL in nats, each a tensor (N,).

        Always the true ELBO (beta = 1) with analytic KL where the prior/guide pair has one.
        """
        self.eval()
        x = self.prepare(data, binarize, seed)
        c = self._labels(data, y)
        parts: dict[str, list[torch.Tensor]] = {}
        with pyro.validation_enabled(False), seeded(seed, x.device):
            for i in range(0, x.shape[0], batch_size):
                cb = None if c is None else c[i : i + batch_size]
                for key, value in elbo_terms(self.model, self.guide, x[i : i + batch_size], cb).items():
                    parts.setdefault(key, []).append(value.double().cpu())
        return {key: torch.cat(values) for key, values in parts.items()}

    def log_evidence(self, data: Data, num_samples: int = 1000, y: torch.Tensor | None = None, **options: Any):
        """Importance-sampled log p(x) per example in nats; see :func:`ppvae.log_evidence` for the options."""
        from ppvae.models.evidence import log_evidence

        return log_evidence(self, data, num_samples=num_samples, y=y, **options)

    def exact_log_evidence(self, data: Data) -> torch.Tensor | None:
        """The closed-form log p(x) per example where the model has one (factor analysis), else None."""
        return None

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
        guide), the ``gap`` log p(x) - ELBO, ``bits_per_dim`` and the seconds it took; a model
        with a closed-form evidence adds ``log_px_exact``.
        """
        from ppvae.models.evidence import bits_per_dim

        terms = self.elbo_terms(data, y, batch_size=batch_size, binarize=binarize, seed=seed)
        if num_samples:
            estimate = self.log_evidence(data, num_samples, y, binarize=binarize, seed=seed, progress=progress,
                                         diagnostics=True, pareto_k=False)  # fmt: skip
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
                out[key.replace("log_px", "bits_per_dim")] = bits_per_dim(out[key], self.x_dim, levels)
        if num_samples:
            out.update(num_samples=num_samples, evidence_seconds=estimate.seconds)
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- runs -----------------------------------------------------------------------------------

    def save(self, directory: str | Path, figures: bool = True) -> Path:
        """Write the run folder: spec.json, weights.pt, metrics.jsonl and (with ``figures``) PNGs."""
        from ppvae.models.runs import save_run

        return save_run(self, directory, figures=figures)
