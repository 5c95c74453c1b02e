"""Factor analysis: the VAE's program with a linear decoder and a learned per-pixel noise scale.

    z ~ N(0, I),   x ~ N(W z + mu, diag(psi))

Its evidence is Gaussian, x ~ N(mu, W W^T + diag(psi)), and so is its posterior,
which makes factor analysis the ground truth for every estimator in ppvae.
All closed forms use the low-rank identities (with M = I + W^T psi^-1 W, k x k)

    log|C| = log|M| + sum(log psi)
    C^-1 = psi^-1 - psi^-1 W M^-1 W^T psi^-1

so nothing d x d is ever inverted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch

from ppvae.data import Data
from ppvae.estimator import Capabilities, FitRecord, runs
from ppvae.estimator.fitting import argument
from ppvae.infer.launch import resolve_accelerator
from ppvae.models.vae import VAE

GUIDES = ("exact", "mean_field", "amortised")
METHODS = ("em", "svi")
EM_OPTIONS = ("test", "out", "resume", "overwrite", "accelerator", "devices", "seed", "progress")
"""The options of ``fit`` that closed-form EM uses; the others belong to SVI."""


class FactorAnalysis(VAE):
    """Factor analysis as a Pyro program, fitted by closed-form EM (default) or by SVI.

    ``guide="exact"`` makes the guide the true posterior N(M^-1 W^T psi^-1 (x - mu), M^-1);
    ``guide="mean_field"`` the best diagonal normal for it, N(the same mean, diag(1 / diag(M))), whose
    KL to the posterior, 0.5 (sum log diag M - log |M|), is known: a good but imperfect proposal
    for testing estimators; ``guide="amortised"`` a linear encoder with a diagonal normal, as a
    linear VAE would have, trained by SVI.

    ``method="em"`` fits by closed-form EM to convergence (``tol`` nats per example, at most
    ``max_iter`` iterations); ``method="svi"`` by the shared SVI loop, with every option of ``fit``.
    """

    capabilities = Capabilities(exact_evidence=True)
    aliases = ("fa",)  # a name for the CLI and spec files, beside factor-analysis

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 20,
        guide: str = "exact",
        method: str = "em",
        max_iter: int = 1000,
        tol: float = 1e-4,
    ):
        if not isinstance(z_dim, int) or isinstance(z_dim, bool):
            raise ValueError(f"factor analysis has one latent layer: z_dim must be a positive integer, got {z_dim!r}")
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}")
        if method not in METHODS:
            raise ValueError(f"method must be 'em' or 'svi', got {method!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1 or not tol > 0:
            raise ValueError(f"max_iter must be a positive integer and tol positive, got {max_iter!r} and {tol!r}")
        super().__init__(
            x_shape,
            z_dim,
            prior="normal",
            likelihood={"name": "normal", "scale": "per_pixel", "min_scale": 1e-5},
            guide="normal",
            network="linear",
        )
        self.posterior_kind = guide
        self.method, self.max_iter, self.tol = method, max_iter, float(tol)
        if guide != "amortised":  # the posterior is a function of the model's own parameters
            self._pyro_parts["guide"] = self._pyro_parts["model"]

    def config(self) -> dict[str, Any]:
        return {
            "x_shape": list(self.x_shape),
            "z_dim": self.z_dim,
            "guide": self.posterior_kind,
            "method": self.method,
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    # -- parameters ---------------------------------------------------------------------------------

    @property
    def _linear(self) -> torch.nn.Linear:
        return self.networks.decoder_net[0]

    @property
    def loadings(self) -> torch.Tensor:
        """W, shape (x_dim, z_dim)."""
        return self._linear.weight.detach()

    @property
    def mean(self) -> torch.Tensor:
        """mu, shape (x_dim,)."""
        return self._linear.bias.detach()

    @property
    def noise_variance(self) -> torch.Tensor:
        """psi, the per-dimension noise variances, shape (x_dim,)."""
        return self.likelihood.scale().detach().expand(self.x_dim) ** 2

    @property
    def explained_variance(self) -> torch.Tensor:
        """Variance along each factor direction (eigenvalues of W^T W), largest first."""
        return torch.linalg.eigvalsh(self.loadings.T @ self.loadings).flip(0)

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        """``explained_variance`` as fractions of the model's total variance, trace(W W^T + psi)."""
        total = self.loadings.pow(2).sum() + self.noise_variance.sum()
        return self.explained_variance / total

    def _set_parameters(self, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor) -> None:
        with torch.no_grad():
            self._linear.weight.copy_(W)
            self._linear.bias.copy_(mu)
            std = psi.clamp_min((2 * self.likelihood.min_scale) ** 2).sqrt()
            self.likelihood.log_scale.copy_(torch.log(std - self.likelihood.min_scale))

    def _float64_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.loadings.double(), self.mean.double(), self.noise_variance.double()

    # -- closed forms -------------------------------------------------------------------------------

    @staticmethod
    def _precision_factor(W: torch.Tensor, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(psi^-1 W, cholesky(M)) with M = I + W^T psi^-1 W."""
        W_psi = W / psi[:, None]
        M = torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ W_psi
        return W_psi, torch.linalg.cholesky(M)

    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (N, k) and Cholesky factor (k, k) of the exact p(z | x) for flat images x (N, d)."""
        W, mu, psi = self.loadings, self.mean, self.noise_variance
        W_psi, L = self._precision_factor(W, psi)
        covariance = torch.cholesky_inverse(L)
        return (x - mu) @ W_psi @ covariance, torch.linalg.cholesky(covariance)

    @torch.no_grad()
    def exact_log_evidence(self, data: Data) -> torch.Tensor:
        """Exact log p(x) per example in nats, float64, shape (N,), through the low-rank identities."""
        x = self.images(data).reshape(-1, self.x_dim).double()
        W, mu, psi = self._float64_parameters()
        W_psi, L = self._precision_factor(W, psi)
        r = x - mu
        a = r @ W_psi  # W^T psi^-1 r, (N, k)
        quadratic = (r.pow(2) / psi).sum(-1) - (a * torch.cholesky_solve(a.T, L).T).sum(-1)
        log_det = 2 * torch.log(torch.diagonal(L)).sum() + torch.log(psi).sum()
        return -0.5 * (self.x_dim * math.log(2 * math.pi) + log_det + quadratic)

    # -- the guide ------------------------------------------------------------------------------------

    def _closed_form_posterior(self, x: torch.Tensor) -> dist.Distribution:
        loc, scale_tril = self.exact_posterior(x.reshape(x.shape[0], self.x_dim))
        if self.posterior_kind == "exact":
            return dist.MultivariateNormal(loc, scale_tril=scale_tril)
        precision = torch.cholesky_inverse(scale_tril)  # M
        return dist.Normal(loc, torch.diagonal(precision).rsqrt().expand_as(loc)).to_event(1)

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
    ):
        """The exact posterior p(z | x), its mean-field fit, or with ``guide="amortised"`` the VAE's linear encoder."""
        if self.posterior_kind == "amortised":
            return super().guide(x, c, kl_weight, size)
        self._register("guide")
        posterior = self._closed_form_posterior(x)
        with pyro.plate("data", x.shape[0]), self._latent_scale(kl_weight):
            return pyro.sample("z", posterior)

    def mean_field_gap(self) -> float:
        """KL(mean-field q || p(z | x)) in nats, the same for every x: 0.5 (sum log diag M - log |M|)."""
        W, _, psi = self._float64_parameters()
        _, L = self._precision_factor(W, psi)
        M = L @ L.T
        return 0.5 * (torch.log(torch.diagonal(M)).sum() - 2 * torch.log(torch.diagonal(L)).sum()).item()

    # -- fitting --------------------------------------------------------------------------------------

    def _fit(
        self, data: Data, test: Data | None, y: torch.Tensor | None, validation: Any, options: dict[str, Any]
    ) -> FitRecord:
        """SVI through the shared loop, or closed-form EM, which takes only the options in ``EM_OPTIONS``."""
        if self.method == "svi":
            return super()._fit(data, test, y, validation, options)
        defaults = self.fit_defaults()
        changed = sorted(k for k, v in options.items() if k not in EM_OPTIONS and v != defaults.get(k))
        if changed:
            raise ValueError(
                f"options {changed} apply to SVI; FactorAnalysis(method='em') fits by closed-form EM "
                f"(its options: max_iter, tol), or build FactorAnalysis(method='svi')"
            )
        if options["devices"] != 1:
            raise ValueError("closed-form EM runs in one process; use devices=1")
        out = options["out"]
        if options["resume"] and out is not None and (Path(out) / runs.WEIGHTS).exists():
            fitted = runs.load(out)  # EM ran to convergence: there is nothing left to continue
            self.load_state_dict(fitted.state_dict())
            print(f"{out}: EM ran to convergence, so there is nothing to resume; the run is as it was")
            return fitted.fit_record
        self.to("cuda" if resolve_accelerator(options["accelerator"]) == "cuda" else "cpu")
        record = self._fit_em(data, self.max_iter, self.tol, test)
        if out is not None:
            record.folder = Path(out)
            runs.remove_stale(out, logs=options["overwrite"])
            runs.save_run(self, record, Path(out), figures=True)  # and an old checkpoint goes: EM leaves none
        return record

    @torch.no_grad()
    def _fit_em(self, data: Data, max_iter: int, tol: float, test: Data | None) -> FitRecord:
        started = time.perf_counter()
        with argument("data"):
            x = self.images(data).reshape(-1, self.x_dim).double()
            self.check_data(x)
        with argument("test"):
            x_test = self.images(test) if test is not None else None
        n, d, k = x.shape[0], self.x_dim, self.z_dim
        mu = x.mean(0)
        centred = x - mu
        S = centred.T @ centred / n  # sample covariance: the only statistic EM needs
        variance = torch.diagonal(S).clamp_min(1e-12)
        # start from principal components, as probabilistic PCA would
        eigenvalues, eigenvectors = torch.linalg.eigh(S)
        top, vectors = eigenvalues.flip(0)[:k], eigenvectors.flip(1)[:, :k]
        noise = eigenvalues[: d - k].mean().clamp_min(1e-6) if d > k else torch.tensor(1e-3, dtype=x.dtype)
        W = vectors * (top - noise).clamp_min(1e-6).sqrt()
        psi = (variance - W.pow(2).sum(1)).clamp_min(1e-6)
        floor = (2 * self.likelihood.min_scale) ** 2
        previous = -math.inf
        for iteration in range(1, max_iter + 1):  # noqa: B007 (the count is recorded after the loop)
            W_psi, L = self._precision_factor(W, psi)
            M_inv = torch.cholesky_inverse(L)
            SW = S @ W_psi  # (d, k)
            log_likelihood = (
                -0.5
                * (
                    d * math.log(2 * math.pi)
                    + 2 * torch.log(torch.diagonal(L)).sum()
                    + torch.log(psi).sum()
                    + (variance / psi).sum()
                    - torch.trace(M_inv @ (W_psi.T @ SW))
                ).item()
            )
            if log_likelihood - previous < tol:
                break
            previous = log_likelihood
            B = SW @ M_inv  # E[(x - mu) z^T], averaged
            second_moment = M_inv + M_inv @ (W_psi.T @ SW) @ M_inv  # E[z z^T], averaged
            W = torch.linalg.solve(second_moment, B.T).T
            psi = (variance - (W * B).sum(1)).clamp_min(floor)
        self._set_parameters(W, mu, psi)
        fit = self.fit_record.copy()
        fit.options = {"method": "em", "iterations": iteration, "binarize": None}
        epoch: dict[str, Any] = {
            "epoch": len(fit.history) + 1,
            "train_log_likelihood": log_likelihood,
            "iterations": iteration,
            "seconds": time.perf_counter() - started,
        }
        if test is not None:
            epoch["test_log_likelihood"] = self.exact_log_evidence(x_test).mean().item()
        fit.history.append(epoch)
        return fit
