"""Annealed importance sampling (Neal, 2001) of log p(x) per example, with Hamiltonian Monte Carlo moves.

Chains start from a normalised distribution p0 (the prior, or the guide's q(z | x)) and
move through the tempered densities

    f_t(z) = p0(z)^(1 - b_t) p(x, z)^(b_t),       0 = b_0 < b_1 < ... < b_T = 1,

collecting log w = sum_t (b_t - b_(t-1)) [log p(x, z_(t-1)) - log p0(z_(t-1))]. The mean
of w over chains is unbiased for p(x), so its log is a stochastic lower bound that tightens
as T grows; unlike importance sampling it does not need a proposal that covers the posterior,
because the chains walk there. Each move is HMC (identity mass, ``leapfrog_steps`` steps)
leaving f_t invariant; the step size is one per image, nudged after every move toward an
acceptance rate of 0.65 as Wu et al. (2017) do for decoder-based models. Everything is
vectorised over images and chains: one model evaluation per leapfrog step per batch, through
the model's lowered log-joint where it has one (`ppvae.infer.lowered_joint`: the same densities
without Pyro's tracing, checked against the programs on the first batch), and on a GPU
from a CUDA graph of the whole step (`ais_step`, `ppvae.infer.graphed.GraphedTransition`). A model
with several latent sites is annealed over all of them at once, z being their values laid end
to end (`ppvae.infer.traces.LatentSpace`); starting from the guide needs a guide that
can score any point, log q(z | x) at z it did not draw.

Run backwards from an exact posterior sample (which data simulated from the model provide:
x ~ p(x | z), z ~ p(z)), the same procedure gives an unbiased estimate of 1 / p(x), hence a
stochastic upper bound; the two bounds sandwich the truth (bidirectional Monte Carlo,
Grosse et al., 2015).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyro.poutine as poutine
import torch

from ppvae.infer.batches import slices
from ppvae.infer.graphed import GraphedTransition
from ppvae.infer.lowered_joint import LoweredDensities, LoweredSpace, check_lowered_space
from ppvae.infer.traces import LatentSpace

STARTS = ("prior", "guide")
TARGET_ACCEPTANCE = 0.65
STEP_SIZE_RANGE = (1e-4, 2.0)


def sigmoid_schedule(steps: int, sharpness: float = 4.0) -> torch.Tensor:
    """Inverse temperatures b_0 = 0 < ... < b_steps = 1, dense at both ends (Grosse et al., 2015)."""
    if steps < 1:
        raise ValueError(f"AIS needs at least 1 step, got {steps}")
    s = torch.sigmoid(sharpness * torch.linspace(-1, 1, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISEstimate:
    """Per-example results, float64 on the CPU, shape (N,) unless noted.

    ``standard_error`` is the delta-method standard error of log p(x) from the spread of the chains'
    weights; ``upper`` (from reverse chains, where the data were simulated) a stochastic upper bound.
    """

    log_evidence: torch.Tensor
    standard_error: torch.Tensor
    log_weights: torch.Tensor  # (chains, N)
    acceptance: torch.Tensor  # mean HMC acceptance rate over moves and chains
    step_size: torch.Tensor  # each image's final step size
    chains: int
    steps: int
    leapfrog_steps: int
    start: str
    seconds: float = 0.0
    upper: torch.Tensor | None = None
    evaluation: str = "pyro"  # "lowered" where the chains ran the model's lowered log-joint
    graphed: bool = False  # True where a CUDA graph replayed the chains' steps


def log_mean_exp(log_weights: torch.Tensor) -> torch.Tensor:
    """log of the mean of exp over dim 0, (K, N) -> (N,)."""
    return torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])


def log_standard_error(log_weights: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log mean(w): std(w) / (sqrt(K) mean(w)), from log weights (K, N)."""
    w = (log_weights - log_weights.max(0).values).exp()
    k = log_weights.shape[0]
    if k < 2:
        return torch.full((log_weights.shape[1],), float("nan"), dtype=log_weights.dtype)
    return w.std(0) / (math.sqrt(k) * w.mean(0))


class TemperedPosterior:
    """The densities along the path for one batch: log p0, log p(x, z) and their gradients in z (chains, N, D)."""

    def __init__(self, space: LatentSpace, start: str):
        self.space, self.start = space, start

    def evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p0(z), log p(x, z) (chains, N) and their gradients (chains, N, D) at ``z``."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_prior, log_likelihood = self.space.log_joint(z)
            log_joint = log_prior + log_likelihood
            log_start = log_prior if self.start == "prior" else self.space.log_guide(z)
            grad_start = torch.autograd.grad(log_start.sum(), z, retain_graph=True)[0]
            grad_joint = torch.autograd.grad(log_joint.sum(), z)[0]
        return log_start.detach(), log_joint.detach(), grad_start, grad_joint


def _combine(beta: float, start: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
    return (1 - beta) * start + beta * joint


def _hmc_move(path: TemperedPosterior, z, state, beta: float, step_size: torch.Tensor, leapfrog_steps: int):
    """One HMC move leaving f_beta invariant; returns the new z, its state and which chains accepted."""
    log_start, log_joint, grad_start, grad_joint = state
    eps = step_size[None, :, None]  # one step size per image, shared by its chains
    momentum = torch.randn_like(z)
    energy = -_combine(beta, log_start, log_joint) + 0.5 * momentum.square().sum(-1)
    z_new, p = z, momentum + 0.5 * eps * _combine(beta, grad_start, grad_joint)
    for step in range(leapfrog_steps):
        z_new = z_new + eps * p
        new_state = path.evaluate(z_new)
        grad = _combine(beta, new_state[2], new_state[3])
        p = p + (eps if step < leapfrog_steps - 1 else 0.5 * eps) * grad
    new_energy = -_combine(beta, new_state[0], new_state[1]) + 0.5 * p.square().sum(-1)
    log_accept = torch.nan_to_num(energy - new_energy, nan=-math.inf)
    accepted = torch.rand_like(log_accept).log() < log_accept  # (chains, N)
    keep = accepted[..., None]
    z = torch.where(keep, z_new, z)
    state = tuple(torch.where(keep if new.dim() == 3 else accepted, new, old) for new, old in zip(new_state, state))
    return z, state, accepted


Chains = list[torch.Tensor]
"""One batch's chains between AIS steps, in this order: z (chains, N, D); log p0 and log p(x, z) (chains, N) and
their gradients (chains, N, D); each image's step size (N,); the log weights (chains, N) and the sum of the
acceptance rates so far (N,), both float64. A list of tensors, so that a step can be captured."""


class Transition(Protocol):
    """One AIS step of the chains: ``(chains, delta=b_t - b_(t-1), beta=b_t) -> chains``."""

    def __call__(self, chains: Chains, *, delta: float, beta: float) -> Chains: ...


def ais_step(path: TemperedPosterior, chains: Chains, leapfrog_steps: int, *, delta, beta) -> Chains:
    """One step along the path: the weights take f_t / f_(t-1) at the chains' points, an HMC move leaves f_t
    invariant, and each image's step size moves toward the target acceptance rate. ``delta`` and ``beta`` are
    floats, or 0-dim tensors where the step is captured in a CUDA graph (`ppvae.infer.graphed`)."""
    z, log_start, log_joint, grad_start, grad_joint, step_size, log_weights, acceptance = chains
    log_weights = log_weights + delta * (log_joint - log_start).double()
    state = (log_start, log_joint, grad_start, grad_joint)
    z, state, accepted = _hmc_move(path, z, state, beta, step_size, leapfrog_steps)
    rate = accepted.double().mean(0)
    step_size = (step_size * torch.where(rate > TARGET_ACCEPTANCE, 1.02, 0.98)).clamp(*STEP_SIZE_RANGE)
    return [z, *state, step_size, log_weights, acceptance + rate]


def anneal(
    path: TemperedPosterior,
    z: torch.Tensor,
    betas: torch.Tensor,
    step_size: torch.Tensor,
    leapfrog_steps: int,
    progress: Callable[[int], None] | None = None,
    transition: Callable[[Transition], Transition] | None = None,
):
    """Run the chains ``z`` (chains, N, d) along ``betas``; log weights (chains, N) in float64, the mean
    acceptance rate per image, and the adapted step sizes. Reversed ``betas`` give the reverse chain.
    ``transition`` wraps the eager step (`ais_step`) in another way of taking it: a CUDA graph's."""
    weights = torch.zeros(z.shape[:2], dtype=torch.float64, device=z.device)
    chains = [z, *path.evaluate(z), step_size, weights, torch.zeros_like(weights[0])]
    step: Transition = functools.partial(ais_step, path, leapfrog_steps=leapfrog_steps)
    if transition is not None:
        step = transition(step)
    for t in range(1, betas.shape[0]):
        chains = step(chains, delta=float(betas[t] - betas[t - 1]), beta=float(betas[t]))
        if progress is not None:
            progress(1)
    *_, step_size, log_weights, acceptance = chains
    return log_weights, acceptance / (betas.shape[0] - 1), step_size


class Graphs:
    """Each batch's step captured in its own CUDA graph (``wrap``, `anneal`'s ``transition``), until one
    capture fails or disagrees: ``announce`` hears why, once, and ``gave_up`` is then True."""

    def __init__(self, device: torch.device, announce: Callable[[str], None] | None):
        self.device, self.announce = device, announce
        self.made: list[GraphedTransition] = []

    def wrap(self, step: Transition) -> Transition:
        self.made.append(GraphedTransition(step, self.device, self.announce))
        return self.made[-1]

    @property
    def gave_up(self) -> bool:
        return any(t.gave_up is not None for t in self.made)

    @property
    def captured(self) -> bool:
        return any(t.captured for t in self.made)


def latent_space(
    model: Callable, guide: Callable, x: torch.Tensor, c: torch.Tensor | None, densities: LoweredDensities | None
) -> LatentSpace:
    """The batch's latent space, evaluated through ``densities`` where given, else through traces."""
    space = LatentSpace(model, guide, x, c) if densities is None else LoweredSpace(model, guide, x, c, densities)
    return space.require("AIS")


def start_chains(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    c: torch.Tensor | None,
    start: str,
    chains: int,
    densities: LoweredDensities | None = None,
) -> tuple[TemperedPosterior, torch.Tensor, torch.Tensor]:
    """The path for one batch, ``chains`` starting points per image (chains, N, D) drawn from ``start``, and
    each image's initial HMC step size (N,): half the start distribution's mean standard deviation, the scale
    the first moves see; the adaptation then follows the tempered posterior as it narrows."""
    if start not in STARTS:
        raise ValueError(f"AIS starts from one of {STARTS}, got {start!r}")
    space = latent_space(model, guide, x, c, densities)
    z, fns = space.sample(start, chains)
    if len(space.names) == 1:  # the start distribution itself, on the batch; several sites: as each chain drew them
        fns = {
            name: site["fn"] for name, site in (space.prior_sites if start == "prior" else space.guide_sites).items()
        }
    std = space.flat_spread(fns, non_finite=1.0)[1].reshape(-1, x.shape[0], space.dim)
    step_size = (0.5 * std.mean(-1).mean(0)).clamp(*STEP_SIZE_RANGE)
    return TemperedPosterior(space, start), z.detach(), step_size.to(x.device)


@torch.no_grad()
def ais_log_evidence(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    chains: int = 16,
    steps: int = 500,
    leapfrog_steps: int = 10,
    start: str = "prior",
    step_size: float | None = None,
    batch_size: int = 100,
    progress: Callable[[int], None] | None = None,
    densities: LoweredDensities | None = None,
    fallback: Callable[[str], None] | None = None,
    graph: bool = False,
    announce: Callable[[str], None] | None = None,
) -> AISEstimate:
    """log p(x_i) for each row of ``x`` (condition ``c``) by AIS with ``chains`` chains per image and ``steps``
    intermediate distributions; ``progress`` is called with 1 after each step of each batch. The HMC step
    size starts at ``step_size`` or, left unset, at half the start distribution's scale, then adapts.

    ``densities``, the model's lowered log-joint, evaluates the chains without tracing once it has given the
    programs' densities and gradients at the first batch's start points; where it does not, ``fallback`` is
    called with what differs and the programs evaluate every batch. Either way the chains draw the same noise.
    With ``graph`` and the lowered log-joint on a GPU, each batch's step is captured in a CUDA graph
    (`ppvae.infer.graphed.GraphedTransition`); where a capture fails or disagrees with the eager step,
    ``announce`` hears why in one line and the rest runs eagerly.
    """
    if chains < 1 or leapfrog_steps < 1 or batch_size < 1:
        raise ValueError(
            f"chains, leapfrog_steps and batch_size must be >= 1, got {chains}, {leapfrog_steps}, {batch_size}"
        )
    started = time.perf_counter()
    betas = sigmoid_schedule(steps)
    results = []
    graphs = Graphs(x.device, announce)
    for xb, cb in slices(batch_size, x, c):
        path, z, eps = start_chains(model, guide, xb, cb, start, chains, densities)
        if densities is not None and not results:  # once, before the first batch's chains move
            disagreement = check_lowered_space(path.space, z, guide=start == "guide")
            if disagreement is not None:  # the programs evaluate from here on (no new trace: no new draws)
                densities = path.space.densities = None
                if fallback is not None:
                    fallback(disagreement)
        if step_size is not None:
            eps = torch.full((xb.shape[0],), step_size, device=xb.device)
        transition = graphs.wrap if graph and densities is not None and xb.is_cuda else None
        results.append(anneal(path, z, betas, eps, leapfrog_steps, progress, transition))
        graph = graph and not graphs.gave_up
    log_weights = torch.cat([r[0] for r in results], 1).cpu()
    return AISEstimate(
        log_evidence=log_mean_exp(log_weights),
        standard_error=log_standard_error(log_weights),
        log_weights=log_weights,
        acceptance=torch.cat([r[1] for r in results]).cpu(),
        step_size=torch.cat([r[2] for r in results]).double().cpu(),
        chains=chains,
        steps=steps,
        leapfrog_steps=leapfrog_steps,
        start=start,
        seconds=time.perf_counter() - started,
        evaluation="pyro" if densities is None else "lowered",
        graphed=graphs.captured,
    )


def simulate(model: Callable, guide: Callable, x_like: torch.Tensor, c: torch.Tensor | None = None):
    """Draw (z, x) from the model's joint, as many as rows of ``x_like`` (whose values are ignored): each z (every
    latent site, laid end to end, (N, D)) is an exact sample of p(z | x) for its x, the start of a reverse chain."""
    space = LatentSpace(model, guide, x_like, c).require("simulation")
    if len(space.observed) != 1:
        raise ValueError(f"simulating data needs one observed site, the model has {space.observed}")
    trace = poutine.trace(poutine.uncondition(model)).get_trace(x_like, c)
    x = trace.nodes[space.observed[0]]["value"].reshape(x_like.shape).to(x_like.dtype)
    return space.join({name: trace.nodes[name]["value"] for name in space.names}, batch_dims=1), x


@torch.no_grad()
def bidirectional(
    model: Callable, guide: Callable, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None, **options
) -> AISEstimate:
    """Forward AIS (a stochastic lower bound) and reverse AIS from the exact posterior samples ``z`` (an upper
    bound, in ``upper``) of log p(x) for data ``x`` simulated with them (see `simulate`). ``options`` are
    `ais_log_evidence`'s; the reverse chains take the forward chains' settings, final step sizes and evaluation
    (in CUDA graphs where the forward chains' steps were)."""
    forward = ais_log_evidence(model, guide, x, c, **options)
    densities = options.get("densities") if forward.evaluation == "lowered" else None
    chains, batch_size = forward.chains, options.get("batch_size", 100)
    betas = sigmoid_schedule(forward.steps).flip(0)
    reverse, graphs = [], Graphs(x.device, options.get("announce"))
    for xb, zb, cb, eps in slices(batch_size, x, z, c, forward.step_size):
        path = TemperedPosterior(latent_space(model, guide, xb, cb, densities), forward.start)
        zb = zb.expand(chains, *zb.shape).clone()  # every chain starts at the image's exact posterior sample
        eps = eps.float().to(xb.device)
        transition = graphs.wrap if forward.graphed and not graphs.gave_up else None
        reverse.append(anneal(path, zb, betas, eps, forward.leapfrog_steps, options.get("progress"), transition)[0])
    forward.upper = -log_mean_exp(torch.cat(reverse, 1).cpu())  # reverse weights estimate 1 / p(x)
    return forward
