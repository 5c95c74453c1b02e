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
from ppvae.infer.ais import anneal, sigmoid_schedule, start_chains
from ppvae.infer.graphed import WARMUP, EagerStep, GraphedStep, GraphedTransition, graph_refusal
from ppvae.infer.launch import unwrapped
from ppvae.infer.lowered import LoweredELBO
from ppvae.infer.lowered_joint import LoweredDensities

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


def test_one_device_at_full_precision_steps_through_what_fabric_wrapped_to_the_same_weights():
    model, eager = setup()
    assert unwrapped(eager.fabric, eager.loss, eager.optimizer) == (eager.loss.module, eager.optimizer.optimizer)
    direct_losses, expected = train(eager), weights(model)

    model, eager = setup()
    loss, optimizer, fabric = eager.loss, eager.optimizer, eager.fabric

    def through_fabric(x, c, arguments):  # the step as Fabric's documentation writes it
        value = loss(x, c, **arguments)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(value)
        optimizer.step()
        return value.detach()

    assert torch.equal(train(through_fabric), direct_losses)
    assert all(torch.equal(v, expected[k]) for k, v in weights(model).items())


@pytest.mark.parametrize("precision", ["bf16-mixed", "64-true"])
def test_wrappers_that_do_work_stay_in_the_step(precision):
    model = ppvae.VAE(**SMALL)
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    loss, optimizer = fabric.setup(
        ObjectiveModule(model, model.model, model.guide, LoweredELBO(model.lowered_elbo)),
        make_adam(list(model.parameters()), 1e-2),
    )
    assert unwrapped(fabric, loss, optimizer) is None
    assert unwrapped(Fabric(accelerator="cpu", devices=1), model, optimizer.optimizer) is None  # not set up


def test_a_callback_after_each_optimizer_step_keeps_the_wrappers():
    class AfterEachStep:
        def on_after_optimizer_step(self, strategy, optimizer):
            pass

    model = ppvae.VAE(**SMALL)
    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[AfterEachStep()])
    loss, optimizer = fabric.setup(
        ObjectiveModule(model, model.model, model.guide, LoweredELBO(model.lowered_elbo)),
        make_adam(list(model.parameters()), 1e-2),
    )
    assert unwrapped(fabric, loss, optimizer) is None


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


# -- AIS's step in a graph ------------------------------------------------------------------------------------


def chains_of(seed: int = 0, images: int = 6, chains: int = 3):
    """A small VAE's AIS path on ``images`` binary 8x8 images, its chains' start points and step sizes."""
    torch.manual_seed(seed)
    model = ppvae.VAE(**SMALL)
    x = torch.bernoulli(torch.full((images, 1, 8, 8), 0.3))
    densities = LoweredDensities(model.lowered_log_joint, model.lowered_log_guide)
    with torch.no_grad():
        return start_chains(model.model, model.guide, x, None, "guide", chains, densities)


def run_chains(transition=None, steps: int = 12):
    path, z, step_size = chains_of()
    torch.manual_seed(1)
    with torch.no_grad():
        return anneal(path, z, sigmoid_schedule(steps), step_size, 3, transition=transition)


def test_the_chains_replayed_step_by_step_are_the_eager_chains():
    expected, capture = run_chains(), Rerun()
    made = []
    results = run_chains(
        lambda step: made.append(GraphedTransition(step, torch.device("cpu"), capture=capture)) or made[0]
    )
    # 12 steps: 3 warm-up, 1 captured and checked, 8 replayed; the replays take the floats as 0-dim tensors
    assert made[0].captured and capture.replays == 1 + 8
    for value, eager in zip(results, expected):
        assert torch.allclose(value, eager, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("how", ["disagrees", "fails"])
def test_chains_whose_capture_fails_or_disagrees_are_the_eager_chains_and_say_why(how):
    expected, lines, made = run_chains(), [], []

    def wrap(step):
        def after():  # a replay that moves one chain's point: the check must see it
            made[0].buffers[0].add_(1.0)

        failure = RuntimeError("operation not permitted when stream is capturing")
        capture = Rerun(after=after) if how == "disagrees" else Rerun(fail=failure)
        made.append(GraphedTransition(step, torch.device("cpu"), announce=lines.append, capture=capture))
        return made[0]

    results = run_chains(wrap)
    assert not made[0].captured and len(lines) == 1 and lines[0].endswith("; it runs eagerly")
    said = "a replay left 1 of its 8 tensors unlike" if how == "disagrees" else "capturing it failed (RuntimeError"
    assert said in lines[0]
    assert all(torch.equal(value, eager) for value, eager in zip(results, expected))  # bit for bit


def test_ais_takes_a_cuda_graph_option_and_graphs_nothing_on_a_cpu():
    model = ppvae.VAE(**SMALL)
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))
    options = dict(method="ais", chains=2, steps=8, progress=False, diagnostics=True, seed=0)
    graphed = ppvae.log_evidence(model, x, **options)
    eager = ppvae.log_evidence(model, x, cuda_graph=False, **options)
    assert not graphed.graphed and not eager.graphed
    assert torch.equal(graphed.log_weights, eager.log_weights)
    with pytest.raises(ValueError, match="cuda_graph does not apply to method='is' .it is an option of method='ais'"):
        ppvae.log_evidence(model, x, method="is", cuda_graph=False, progress=False)
