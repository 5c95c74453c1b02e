"""Steps captured once in a CUDA graph and replayed: a small model's training step, or AIS's, at the GPU's speed.

On a GPU the step of a model this size is bound by the host: Python issues the same hundred-odd kernel
launches every step while the device waits. A CUDA graph records them once and replays them with one
call (``torch.cuda.CUDAGraph``). The step must then be static, and here it is:

    the batch is copied into fixed buffers; float arguments (a warm-up's KL weight) live in 0-dim
    device tensors filled before each replay, other arguments are constants of the graph; the loss has
    no host synchronisation (the lowered ELBO has none); Adam is capturable (its step count on the
    device); the learning rate stays fixed while the graph lives.

Random draws go through torch's default CUDA generator, which graphs support: a replay reads the
generator's seed and offset as they stand and advances the offset as the eager step does, so the
training's random streams (`ppvae.infer.random`) work unchanged and a replay draws the eager step's noise.

`GraphedStep` takes the first ``WARMUP`` full batches eagerly on a side stream (torch's rule: lazy state,
Adam's moments and the BLAS workspaces, must exist before a capture), captures the next, and checks the
capture once: that batch's step is taken eagerly and by a replay from the same weights, optimizer state
and noise, and the loss and every tensor of the state must agree to 1e-5 of their size. A capture that
fails or disagrees leaves the eager step's result in place and the eager step for the rest of the fit,
and ``announce`` says why in one line. A batch of another size (the last, partial one) or with other
constant arguments runs eagerly.

`GraphedTransition` does the same for a Markov chain's step, a function from tensors to tensors of the same
shapes: AIS's HMC move with all its leapfrog steps (`ppvae.infer.ais`), replayed once per temperature.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import nn

from ppvae.infer.launch import unwrapped
from ppvae.infer.lowered import far_apart

WARMUP = 3  # eager steps before the capture


def graph_refusal(device: torch.device, world_size: int, clip_norm: float | None, precision: str) -> str | None:
    """Why this training cannot capture its step in a CUDA graph, or None where it can be tried."""
    if torch.device(device).type != "cuda":
        return "CUDA graphs need a CUDA device"
    if world_size > 1:
        return "data-parallel training is not captured yet (the all-reduce of each step runs eagerly)"
    if clip_norm is not None:
        return "gradient clipping is not captured yet (clip_norm runs eagerly)"
    if precision not in ("32-true", "32"):
        return f"precision={precision!r} is not captured yet (32-true is)"
    return None


class EagerStep:
    """One training step as the loop takes it: the loss, backward (scaled by the number of processes: DDP
    averages and the ELBO is a sum), optional clipping, one optimizer step. Returns the detached loss.

    ``loss`` and ``optimizer`` are as ``fabric.setup`` returned them; where Fabric's wrappers add nothing
    (one device, full precision: `ppvae.infer.launch.unwrapped`) the step calls what they wrap.
    """

    captured = False  # no CUDA graph takes its steps

    def __init__(self, fabric: Any, loss: nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float | None):
        self.fabric, self.loss, self.optimizer, self.clip_norm = fabric, loss, optimizer, clip_norm
        direct = unwrapped(fabric, loss, optimizer)
        self._forward, self._optimizer = direct or (loss, optimizer)
        self._backward = torch.Tensor.backward if direct else fabric.backward

    def take(self, x: torch.Tensor, c: torch.Tensor | None, arguments: dict[str, Any]) -> torch.Tensor:
        """The step; returns the loss, still in the graph (a CUDA graph's capture keeps it as its output)."""
        world = self.fabric.world_size
        loss = self._forward(x, c, **arguments)
        self._optimizer.zero_grad(set_to_none=True)
        self._backward(loss * world if world > 1 else loss)
        if self.clip_norm is not None:
            self.fabric.clip_gradients(self.loss, self.optimizer, max_norm=self.clip_norm, error_if_nonfinite=False)
        self._optimizer.step()
        return loss

    def __call__(self, x: torch.Tensor, c: torch.Tensor | None, arguments: dict[str, Any]) -> torch.Tensor:
        return self.take(x, c, arguments).detach()


class Replay(Protocol):
    def replay(self) -> None: ...


def cuda_capture(body: Callable[[], None], device: torch.device) -> Replay:
    """Record ``body``'s kernels in a CUDA graph (not running them) and return the graph."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


@contextlib.contextmanager
def side_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a fresh CUDA stream that waits for, and is then waited for by, the current one."""
    if device.type != "cuda":
        yield
        return
    side, current = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        yield
    current.wait_stream(side)


def random_state(device: torch.device) -> tuple:
    """The random state a step draws from: torch's CPU generator and, on a GPU, the device's."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_random_state(state: tuple, device: torch.device) -> None:
    """Put back a state `random_state` took: the next draws, eager or replayed, are the ones it preceded."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def failure(error: Exception) -> str:
    """A capture's failure in a few words: the error's type and the first line of its message."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"capturing it failed ({type(error).__name__}: {first})"


class GraphedStep:
    """`EagerStep`'s step, captured in a CUDA graph after ``WARMUP`` eager steps and replayed from then on.

    ``capture(body, device)`` records ``body`` and returns what replays it (`cuda_capture`; a test may
    pass a stand-in). ``announce`` receives the one line that says why the step stays eager. ``captured``
    is True once a checked graph replays the steps.
    """

    def __init__(
        self,
        eager: EagerStep,
        device: torch.device,
        announce: Callable[[str], None] | None = None,
        capture: Callable[[Callable[[], None], torch.device], Replay] = cuda_capture,
    ):
        self.eager, self.device, self.announce, self.capture = eager, torch.device(device), announce, capture
        self.graph: Replay | None = None
        self.gave_up: str | None = None
        self.warmed = 0
        self.shape: tuple | None = None  # the shapes of x and c the graph was captured for
        self.constants: dict[str, Any] = {}
        self.static: dict[str, Any] = {}

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, x: torch.Tensor, c: torch.Tensor | None, arguments: dict[str, Any]) -> torch.Tensor:
        if self.gave_up is not None:
            return self.eager(x, c, arguments)
        floats = {k: v for k, v in arguments.items() if type(v) is float}
        constants = {k: v for k, v in arguments.items() if k not in floats}
        shape = (x.shape, None if c is None else c.shape, sorted(floats))
        if self.shape is None:
            self.shape, self.constants = shape, constants
        if shape != self.shape or constants != self.constants:
            return self._eager(x, c, arguments)
        if self.graph is None:
            if self.warmed < WARMUP:
                self.warmed += 1
                with side_stream(self.device):
                    return self._eager(x, c, arguments)
            return self._capture(x, c, floats)
        self._fill(x, c, floats)
        self.graph.replay()
        return self.static["loss"]  # overwritten by the next replay: the loop copies it at once

    # -- capture ----------------------------------------------------------------------------------------------

    def _eager(self, x: torch.Tensor, c: torch.Tensor | None, arguments: dict[str, Any]) -> torch.Tensor:
        with warnings.catch_warnings():  # a capturable Adam stepping eagerly warns of speed: that is known here
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            return self.eager(x, c, arguments)

    def _fill(self, x: torch.Tensor, c: torch.Tensor | None, floats: dict[str, float]) -> None:
        self.static["x"].copy_(x)
        if c is not None:
            self.static["c"].copy_(c)
        for name, value in floats.items():
            self.static["floats"][name].fill_(value)

    def _state(self) -> list[torch.Tensor]:
        """Every tensor a step changes in place: parameters, buffers (BatchNorm's statistics), optimizer state."""
        module, optimizer = self.eager.loss, self.eager.optimizer
        state = [t for t in (*module.parameters(), *module.buffers())]
        state += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        return state

    def _put_back(self, state: list[torch.Tensor], values: list[torch.Tensor], noise: tuple) -> None:
        with torch.no_grad():
            for t, value in zip(state, values):
                t.copy_(value)  # in place: a graph reads these very tensors
        set_random_state(noise, self.device)

    def _body(self) -> None:
        static = self.static  # zero_grad before backward: in a graph, backward writes gradients of its own
        static["loss"] = self.eager.take(static["x"], static["c"], {**self.constants, **static["floats"]}).detach()

    def _capture(self, x: torch.Tensor, c: torch.Tensor | None, floats: dict[str, float]) -> torch.Tensor:
        """Capture the step on this batch, check one replay against the eager step, keep whichever is sound."""
        arguments = {**self.constants, **floats}
        state = self._state()
        before, noise = [t.detach().clone() for t in state], random_state(self.device)
        expected_loss = self._eager(x, c, arguments).clone()
        expected, expected_noise = [t.detach().clone() for t in state], random_state(self.device)
        self._put_back(state, before, noise)  # the replay starts where the eager step started
        for group in self.eager.optimizer.param_groups:
            group["capturable"] = True
        self.static = {
            "x": x.clone(),
            "c": None if c is None else c.clone(),
            "floats": {k: torch.tensor(v, dtype=torch.float32, device=self.device) for k, v in floats.items()},
        }
        try:
            with side_stream(self.device):
                graph = self.capture(self._body, self.device)
            self._fill(x, c, floats)
            graph.replay()
            disagreement = self._disagreement(expected_loss, expected, state)
        except Exception as error:  # a step that cannot be captured (a host sync, an op graphs refuse)
            disagreement = failure(error)
        if disagreement is None:
            self.graph = graph
            return self.static["loss"]
        return self._give_up(disagreement, expected_loss, expected, expected_noise, state)

    def _disagreement(self, expected_loss: torch.Tensor, expected: list[torch.Tensor], state: list[torch.Tensor]):
        if far_apart(self.static["loss"], expected_loss):
            return (
                f"a replay's loss {float(self.static['loss']):.6g} differs from the eager step's "
                f"{float(expected_loss):.6g}"
            )
        far = sum(far_apart(t, e) for t, e in zip(state, expected))
        return f"a replay left {far} tensors of the weights or optimizer state unlike the eager step's" if far else None

    def _give_up(
        self,
        why: str,
        expected_loss: torch.Tensor,
        expected: list[torch.Tensor],
        expected_noise: tuple,
        state: list[torch.Tensor],
    ) -> torch.Tensor:
        self._put_back(state, expected, expected_noise)  # the eager step's result, as if no capture was tried
        for group in self.eager.optimizer.param_groups:
            group["capturable"] = False
        self.eager.optimizer.zero_grad(set_to_none=True)
        self.graph, self.gave_up, self.static = None, why, {}
        if self.announce is not None:
            self.announce(f"the step is not captured in a CUDA graph: {why}; it runs eagerly")
        return expected_loss


class GraphedTransition:
    """``function(tensors, **floats) -> tensors`` of the same shapes (a Markov chain's state, one step on),
    captured in a CUDA graph after ``WARMUP`` eager calls and replayed on fixed buffers from then on: AIS's
    step (`ppvae.infer.ais.ais_step`), whose leapfrog steps are otherwise thousands of small launches.

    The floats (the step's inverse temperature and its increment) go in as 0-dim float64 device tensors
    filled before each replay. The capture is checked once, as the training step's is: that call's step is
    taken eagerly and by a replay from the same tensors and noise, and every tensor must agree to 1e-5 of its
    size. Where the capture fails or disagrees, the eager result stands, the function runs eagerly from then
    on, and ``announce`` says why in one line. ``capture`` as for `GraphedStep`.
    """

    def __init__(
        self,
        function: Callable[..., list[torch.Tensor]],
        device: torch.device,
        announce: Callable[[str], None] | None = None,
        capture: Callable[[Callable[[], None], torch.device], Replay] = cuda_capture,
    ):
        self.function, self.device, self.announce, self.capture = function, torch.device(device), announce, capture
        self.graph: Replay | None = None
        self.gave_up: str | None = None
        self.warmed = 0
        self.buffers: list[torch.Tensor] = []
        self.floats: dict[str, torch.Tensor] = {}

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, tensors: list[torch.Tensor], **floats: float) -> list[torch.Tensor]:
        if self.gave_up is not None or (self.graph is not None and sorted(floats) != sorted(self.floats)):
            return self.function(tensors, **floats)
        if self.graph is None:
            if self.warmed < WARMUP:
                self.warmed += 1
                with side_stream(self.device):
                    return self.function(tensors, **floats)
            return self._capture(tensors, floats)
        for buffer, tensor in zip(self.buffers, tensors):
            if tensor is not buffer:
                buffer.copy_(tensor)
        self._fill(floats)
        self.graph.replay()
        return list(self.buffers)  # overwritten by the next replay, which reads them

    def _fill(self, floats: dict[str, float]) -> None:
        for name, value in floats.items():
            self.floats[name].fill_(value)

    def _body(self) -> None:
        outputs = self.function(self.buffers, **self.floats)
        for buffer, output in zip(self.buffers, outputs):
            buffer.copy_(output)

    def _capture(self, tensors: list[torch.Tensor], floats: dict[str, float]) -> list[torch.Tensor]:
        noise = random_state(self.device)
        expected = [t.clone() for t in self.function(tensors, **floats)]
        expected_noise = random_state(self.device)
        set_random_state(noise, self.device)  # the replay draws what the eager step drew
        self.buffers = [t.clone() for t in tensors]
        self.floats = {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in floats.items()}
        try:
            with side_stream(self.device):
                graph = self.capture(self._body, self.device)
            self._fill(floats)
            graph.replay()
            far = sum(far_apart(b, e) for b, e in zip(self.buffers, expected))
            disagreement = (
                f"a replay left {far} of its {len(expected)} tensors unlike the eager step's" if far else None
            )
        except Exception as error:  # a step that cannot be captured (a host sync, an op graphs refuse)
            disagreement = failure(error)
        if disagreement is None:
            self.graph = graph
            return list(self.buffers)
        set_random_state(expected_noise, self.device)  # as if no capture was tried
        self.gave_up, self.buffers, self.floats = disagreement, [], {}
        if self.announce is not None:
            self.announce(f"the chains' step is not captured in a CUDA graph: {disagreement}; it runs eagerly")
        return expected
