"""Exact log p(x) for a model with one latent site of 1 or 2 dimensions, by dense quadrature.

    log p(x_i) = log  sum_g  p(x_i, z_g) h^d      (z_g on a regular grid of spacing h)

For a smooth integrand that has decayed to nothing at the edges of the box, this
plain sum converges faster than any power of h, so a fine enough grid is exact to
the digits that matter. The box covers the prior's bulk (mean +- ``prior_width``
standard deviations) and every image's posterior (mean +- ``posterior_width``
scales, read off the guide), so a mode that q(z | x) misses is still inside. The
spacing is a fraction of the smallest posterior scale. The error is estimated by
refinement: the grid of every other point (spacing 2h) is summed from the same
evaluations, and the difference is reported per image.

It reads the programs through Pyro traces (the latent site is conditioned on the
grid points inside a vectorised plate), so it applies to any model and guide whose
sites sit in a ``"data"`` plate; the cost is one model evaluation per grid point
and image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ppvae.infer.batches import slices
from ppvae.infer.traces import LatentSpace

MAX_DIM = 2


@dataclass
class QuadratureEstimate:
    """Per-example log p(x) (float64, CPU), the refinement's error estimate, the grid used and the seconds."""

    log_evidence: torch.Tensor
    error: torch.Tensor  # |log p(x) on the grid - log p(x) on the grid of every other point|
    points: int  # grid points per dimension
    spacing: float
    bounds: list[tuple[float, float]]
    seconds: float = 0.0


MOMENT_DRAWS = 2000  # draws per image that estimate the moments of a model with several latent sites


def moments(space: LatentSpace) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Mean and standard deviation per latent dimension of the prior and of each image's posterior, each
    (rows, D): read off the distributions for one site (a wide guess where the variance is infinite), and
    from draws (the prior's ancestrally) for several, whose later sites depend on the earlier ones."""
    if len(space.names) == 1:
        name = space.names[0]
        prior = space.flat_spread({name: space.prior_sites[name]["fn"]}, non_finite=10.0)
        posterior = space.flat_spread({name: space.guide_sites[name]["fn"]}, non_finite=10.0)
    else:
        prior = _draw_moments(space.sample("prior", MOMENT_DRAWS)[0])
        posterior = _draw_moments(space.sample("guide", MOMENT_DRAWS)[0])
    return tuple(t.reshape(-1, space.dim) for t in prior), tuple(t.reshape(-1, space.dim) for t in posterior)


def _draw_moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.mean(0), z.std(0)


def grid_for(
    prior: tuple[torch.Tensor, torch.Tensor],
    posterior: tuple[torch.Tensor, torch.Tensor],
    prior_width: float,
    posterior_width: float,
    points_per_scale: float,
    max_points: int,
) -> tuple[list[torch.Tensor], float]:
    """The grid per dimension and its spacing: a box over the prior's bulk and every posterior (means and standard
    deviations, (rows, D)), spaced at ``points_per_scale`` points per smallest posterior scale, at most
    ``max_points`` per dimension (odd, so the coarse grid of every other point shares its ends)."""
    (prior_mean, prior_std), (q_mean, q_std) = prior, posterior
    low = torch.minimum(
        (prior_mean - prior_width * prior_std).min(0).values, (q_mean - posterior_width * q_std).min(0).values
    )
    high = torch.maximum(
        (prior_mean + prior_width * prior_std).max(0).values, (q_mean + posterior_width * q_std).max(0).values
    )
    spacing = float(q_std.min()) / points_per_scale
    points = int(math.ceil(float((high - low).max()) / spacing)) + 1
    points = min(max(points, 33), max_points)
    points += 1 - points % 2  # odd
    spacing = float((high - low).max()) / (points - 1)
    centre = (low + high) / 2
    half = spacing * (points - 1) / 2
    axes = [
        torch.linspace(float(centre[d]) - half, float(centre[d]) + half, points, dtype=torch.float64)
        for d in range(low.numel())
    ]
    return axes, spacing


@torch.no_grad()
def quadrature_log_evidence(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    batch_size: int = 20,
    chunk_size: int | None = None,
    prior_width: float = 6.0,
    posterior_width: float = 10.0,
    points_per_scale: float = 4.0,
    max_points: int = 801,
    progress: Callable[[int], None] | None = None,
) -> QuadratureEstimate:
    """log p(x_i) for each row of ``x`` (condition ``c``) by quadrature over the latent sites (D <= 2 in all).

    ``batch_size`` images share a grid; ``chunk_size`` grid points go through the model at once
    (by default as many as keep about 4 million decoded pixel values in flight).
    """
    started = time.perf_counter()
    images_per_row = 1 if c is None else min(batch_size, x.shape[0])  # decoder rows per grid point (see below)
    chunk_size = chunk_size or max(16, 4_000_000 // (images_per_row * x[0].numel()))
    estimates, errors, used = [], [], []
    for xb, cb in slices(batch_size, x, c):
        space = LatentSpace(model, guide, xb, cb).require("quadrature", max_dim=MAX_DIM)
        prior, posterior = moments(space)
        axes, spacing = grid_for(prior, posterior, prior_width, posterior_width, points_per_scale, max_points)
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))  # (G, d)
        coarse = (
            torch.stack(torch.meshgrid(*[torch.arange(a.numel()) % 2 == 0 for a in axes], indexing="ij"), -1)
            .all(-1)
            .reshape(-1)
        )  # every other point in each dimension
        fine_total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=xb.device)
        coarse_total = fine_total.clone()
        for begin in range(0, grid.shape[0], chunk_size):
            points = grid[begin : begin + chunk_size].to(xb.device, torch.float32)
            # Without a condition, p(x | z) depends on the image only through x: one decoder pass per grid point,
            # broadcast over the images. A condition c makes the decoder's input differ per image.
            z = (
                points[:, None, :]
                if cb is None
                else points[:, None, :].expand(points.shape[0], xb.shape[0], points.shape[1])
            )
            log_joint = sum(space.log_joint(z)).double()
            fine_total = torch.logaddexp(fine_total, torch.logsumexp(log_joint, 0))
            keep = coarse[begin : begin + chunk_size].to(xb.device)
            if keep.any():
                coarse_total = torch.logaddexp(coarse_total, torch.logsumexp(log_joint[keep], 0))
        d = len(axes)
        fine = fine_total + d * math.log(spacing)
        estimates.append(fine.cpu())
        errors.append((fine - (coarse_total + d * math.log(2 * spacing))).abs().cpu())
        used.append((axes, spacing))
        if progress is not None:
            progress(xb.shape[0])
    axes, spacing = used[-1]
    return QuadratureEstimate(
        torch.cat(estimates),
        torch.cat(errors),
        axes[0].numel(),
        spacing,
        [(float(a[0]), float(a[-1])) for a in axes],
        time.perf_counter() - started,
    )
