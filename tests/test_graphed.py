"""The CUDA-graph step's bookkeeping, on the CPU: a stand-in for the capture replays the recorded step by
running it, so that warm-up, static buffers, float arguments, partial batches, the one check against the
eager step and every way back to the eager step are tested here. The graphs themselves run in test_gpu.py."""

import pytest
import torch
from conftest import SMALL, small_data
from lightning_fabric import Fabric

import ppvae
from ppvae.estimator.step import choose_graph
from ppvae.infer import ObjectiveModule, make_adam
from ppvae.infer.graphed import WARMUP, EagerStep, GraphedStep, graph_refusal
from ppvae.infer.lowered import LoweredELBO

pytestmark = pytest.mark.usefixtures("one_thread")


class Rerun:
    """A stand-in for a CUDA graph: recording keeps the step, each replay runs it (then ``after``, if any)."""

    def __init__(self, after=None, fail: Exception | None = None):
        self.after, self.fail, self.replays = after, fail, 0

    def __call__(self, body, device):
        if self.fail is not None:
            raise self.fail
        outer = self

        class Graph:
            def replay(self):
                outer.replays += 1
                body()
                if outer.after is not None:
                    outer.after()

        return Graph()


def setup(seed: int = 0, device: str = "cpu", sync: bool = False):
    """A small VAE's eager step on ``device``; ``sync``: its ELBO reads a value back (which no graph can hold)."""
    torch.manual_seed(seed)
    model = ppvae.VAE(**SMALL).to(device)
    model.initialize(small_data(32).to(device))
    fabric = Fabric(accelerator=device, devices=1)

    def elbo(x, c, kl_weight=1.0, analytic_kl=False, layers=1):  # ``layers``: an int argument, a graph's constant
        value = model.lowered_elbo(x, c, kl_weight=kl_weight, analytic_kl=analytic_kl)
        return value.clamp(max=float(value.detach()) + 1.0) if sync else value

    objective = LoweredELBO(elbo)
    loss, optimizer = fabric.setup(
        ObjectiveModule(model, model.model, model.guide, objective), make_adam(list(model.parameters()), 1e-2)
    )
    return model, EagerStep(fabric, loss, optimizer, clip_norm=None)


def batches(sizes=(32,) * 8 + (7,) + (32,) * 3, device: str = "cpu"):
    data = small_data(sum(sizes)).to(device)
    return list(data.split(list(sizes)))


def train(step, schedule=lambda i: {"kl_weight": min(1.0, 0.1 * (i + 1))}, device: str = "cpu"):
    torch.manual_seed(1)
    return torch.stack([step(x, None, schedule(i)).clone() for i, x in enumerate(batches(device=device))])


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_replays_train_as_the_eager_steps_do_with_warm_up_partial_batches_and_a_changing_kl_weight():
    model, eager = setup()
    eager_losses, expected = train(eager), weights(model)
    model, eager = setup()
    capture = Rerun()
    graphed = GraphedStep(eager, torch.device("cpu"), capture=capture)
    losses = train(graphed)
    assert graphed.captured
    # 12 batches: 3 warm-up, 1 captured and checked, the partial one eager, the other 7 replayed
    assert capture.replays == 1 + 7 and WARMUP == 3
    assert torch.equal(losses, eager_losses)
    assert all(torch.equal(v, expected[k]) for k, v in weights(model).items())


def test_other_constant_arguments_run_eagerly():
    model, eager = setup()
    capture = Rerun()
    graphed = GraphedStep(eager, torch.device("cpu"), capture=capture)
    train(graphed, schedule=lambda i: {"kl_weight": 1.0, "layers": 2 if i == 10 else 1})  # an int: a constant
    assert graphed.captured and capture.replays == 1 + 6


def disturb(model):
    def after():
        with torch.no_grad():
            next(model.parameters()).add_(1.0)

    return after


@pytest.mark.parametrize(
    "capture, said",
    [
        ("disagrees", "a replay left 1 tensors of the weights or optimizer state unlike the eager step's"),
        (Rerun(fail=RuntimeError("operation not permitted when stream is capturing\nmore")), "capturing it failed"),
    ],
)
def test_a_capture_that_fails_or_disagrees_leaves_the_eager_run_and_says_why(capture, said):
    model, eager = setup()
    eager_losses, expected = train(eager), weights(model)
    model, eager = setup()
    lines = []
    capture = Rerun(after=disturb(model)) if capture == "disagrees" else capture
    graphed = GraphedStep(eager, torch.device("cpu"), announce=lines.append, capture=capture)
    losses = train(graphed)
    assert not graphed.captured and len(lines) == 1 and said in lines[0] and lines[0].endswith("it runs eagerly")
    if "failed" in said:
        assert "(RuntimeError: operation not permitted when stream is capturing)" in lines[0]
    assert torch.equal(losses, eager_losses)  # the run is the eager run, as if no capture had been tried
    assert all(torch.equal(v, expected[k]) for k, v in weights(model).items())
    assert all(not group["capturable"] for group in eager.optimizer.param_groups)


def test_a_graph_is_tried_only_on_a_gpu_for_a_lowered_step_and_refusals_say_why():
    options = {"compile": "auto", "devices": 1, "clip_norm": None, "precision": "32-true"}
    assert choose_graph(options, "cuda", "lowered") == (True, None)
    assert choose_graph(options, "cuda", "compiled") == (True, None)
    assert choose_graph(options, "cpu", "lowered") == (False, None)
    assert choose_graph(options, "cuda", "pyro") == (False, None)  # the programs: said by the step's own line
    assert choose_graph({**options, "compile": False}, "cuda", "pyro") == (False, None)
    for changed, said in (
        ({"devices": 2}, "data-parallel training is not captured yet"),
        ({"clip_norm": 10.0}, "gradient clipping is not captured yet"),
        ({"precision": "bf16-mixed"}, "precision='bf16-mixed' is not captured yet (32-true is)"),
    ):
        graph, why = choose_graph({**options, **changed}, "cuda", "lowered")
        assert not graph and said in why
    assert graph_refusal(torch.device("cpu"), 1, None, "32-true") == "CUDA graphs need a CUDA device"


def test_a_cpu_fit_records_that_no_graph_replayed_it():
    model = ppvae.VAE(**SMALL).fit(small_data(64), epochs=1, batch_size=32, progress=False)
    assert model.fit_record.options["step"] == "lowered" and model.fit_record.options["cuda_graph"] is False
