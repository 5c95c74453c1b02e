"""The training step's objectives: the sync-free ELBOs and the lowered ELBO give Pyro's loss and gradients on
identical noise across the parts grid; the sync-free ones read nothing back; fit takes the lowered step where it
can, falls back saying why, and trains the same run either way."""

import contextlib
import itertools
import re
import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import GUIDES_GRID, LIKELIHOODS_GRID, NETWORKS_GRID, PRIORS_GRID, SMALL, name_of, small_data

import ppvae
from ppvae.cli import build_parser
from ppvae.infer import make_elbo
from ppvae.infer.lowered import LoweredELBO, check_lowered
from ppvae.infer.sync_free import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
from ppvae.parts import GUIDES, LIKELIHOODS, NETWORKS, PRIORS

PAIRS = {"trace": (pyro.infer.Trace_ELBO, SyncFreeTrace_ELBO)}
PAIRS["meanfield"] = (pyro.infer.TraceMeanField_ELBO, SyncFreeTraceMeanField_ELBO)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def test_the_grid_covers_every_registered_part():
    for registry, grid in ((PRIORS, PRIORS_GRID + ["conditional"]), (LIKELIHOODS, LIKELIHOODS_GRID)):
        assert set(registry.names()) == {name_of(s) for s in grid}
    assert set(GUIDES.names()) == {name_of(s) for s in GUIDES_GRID}
    assert set(NETWORKS.names()) == {name_of(s) for s in NETWORKS_GRID}


def _loss_and_grads(objective, model, x, c=None, seed=0):
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        loss = objective.differentiable_loss(model.model, model.guide, x, c, kl_weight=0.7)
    parameters = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads)]


def _assert_same_as_pyro(model, x, c=None, elbos=("trace", "meanfield"), num_particles=1):
    for elbo in elbos:
        pyro_class, ours_class = PAIRS[elbo]
        kwargs = dict(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)
        expected, expected_grads = _loss_and_grads(pyro_class(**kwargs), model, x, c)
        loss, grads = _loss_and_grads(ours_class(**kwargs), model, x, c)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4, msg=f"{elbo}: loss")
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=f"{elbo}: a gradient")
        if num_particles == 1:
            lowered = LoweredELBO(model.lowered_elbo, analytic_kl=elbo == "meanfield")
            pyro.set_rng_seed(3)
            with pyro.validation_enabled(False):
                disagreement = check_lowered(
                    lowered, pyro_class(**kwargs), model, model.model, model.guide, x, c, kl_weight=0.7
                )
            assert disagreement is None, f"{elbo}, lowered: {disagreement}"


def _data(model, n=6):
    x = torch.rand(n, *model.x_shape)
    return torch.bernoulli(x) if model.capabilities.binary else x


def test_every_prior_likelihood_and_guide_gives_pyros_loss_and_gradients_sync_free_and_lowered():
    for prior, likelihood, guide in itertools.product(PRIORS_GRID, LIKELIHOODS_GRID, GUIDES_GRID):
        if name_of(prior) == "vamp" and name_of(guide) in ("delta", "flow"):
            continue  # refused: the VampPrior averages q(z | u_k), which these cannot give
        vae = ppvae.VAE((1, 4, 4), 2, prior, likelihood, guide, {"name": "mlp", "hidden": [8]}, beta=1.0)
        x = _data(vae)
        vae.initialize(x)
        try:
            _assert_same_as_pyro(vae, x)
        except AssertionError as error:
            raise AssertionError(f"{name_of(prior)} x {name_of(likelihood)} x {name_of(guide)}: {error}") from None


@pytest.mark.parametrize("network", NETWORKS_GRID, ids=name_of)
def test_every_network_conditional_models_and_hierarchies_give_pyros_loss_and_gradients(network):
    y = torch.arange(6) % 3
    for model in (
        ppvae.VAE((1, 8, 8), 3, network=network),
        ppvae.VAE((1, 8, 8), [3, 2], network=network, likelihood={"name": "normal", "scale": "learned"}),
        ppvae.CVAE((1, 8, 8), 3, 2, network=network),
        ppvae.CVAE((1, 8, 8), 3, [3, 2], prior="mixture", network=network),
        ppvae.CompletionVAE((1, 8, 8), 3, network=network),
    ):
        x = _data(model)
        kind = model.capabilities.condition
        c = None if kind == "none" else model.condition(x, y if kind == "labels" else None)
        model.initialize(x)
        _assert_same_as_pyro(model, x, c)


@pytest.mark.parametrize("analytic_kl", [False, True], ids=["trace", "meanfield"])
def test_the_default_parts_lower_to_closed_forms_with_the_distributions_gradients_to_the_last_bit(
    analytic_kl, monkeypatch
):
    """A normal q, the standard normal prior and a Bernoulli likelihood: the lowered ELBO is written on
    tensors, with no distribution built; it must draw the same z and give the same gradients bit for bit."""
    y = torch.arange(6) % 3
    closed = [ppvae.VAE((1, 8, 8), 3, beta=2.0), ppvae.CVAE((1, 8, 8), 3, 2, prior="normal")]
    for model in closed:
        x = _data(model)
        c = model.condition(x, y) if model.capabilities.condition == "labels" else None
        runs = []
        for has_closed_forms in (True, False):
            monkeypatch.setattr(type(model), "_has_closed_forms", lambda self, value=has_closed_forms: value)
            torch.manual_seed(0)
            elbo = model.lowered_elbo(x, c, kl_weight=0.7, analytic_kl=analytic_kl)
            runs.append((elbo, torch.autograd.grad(elbo, list(model.parameters()), allow_unused=True)))
            monkeypatch.undo()
        (elbo, grads), (expected, expected_grads) = runs
        torch.testing.assert_close(elbo, expected, rtol=1e-6, atol=1e-4)
        for g, e in zip(grads, expected_grads):
            assert (g is None and e is None) or torch.equal(g, e)
    assert all(model._has_closed_forms() for model in closed)
    for other in (
        ppvae.VAE((1, 8, 8), [3, 2]),
        ppvae.VAE((1, 8, 8), 3, prior="laplace"),
        ppvae.VAE((1, 8, 8), 3, guide="laplace"),
        ppvae.VAE((1, 8, 8), 3, likelihood="continuous_bernoulli"),
        ppvae.CVAE((1, 8, 8), 3, 2),  # its conditional prior
        ppvae.CompletionVAE((1, 8, 8), 3),  # scores only the hidden pixels
    ):
        assert not other._has_closed_forms(), other


def test_vectorised_particles_give_pyros_loss_and_gradients():
    vae = ppvae.VAE((1, 4, 4), 2, network={"name": "mlp", "hidden": [8]})
    x = _data(vae)
    vae.initialize(x)
    _assert_same_as_pyro(vae, x, num_particles=3)


def _discrete_latent_program():
    """A program with a site that cannot be reparameterised (a Bernoulli switch), in two plates."""
    loc = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    logit = torch.nn.Parameter(torch.tensor(0.1))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Bernoulli(0.4))
            z = pyro.sample("z", dist.Normal(s * 2.0 - 1.0, 1.0))
            with pyro.plate("pixels", x.shape[1], dim=-2):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x.T)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.Bernoulli(logits=logit + x.mean(-1)))
            pyro.sample("z", dist.Normal(loc[0] + x.mean(-1), loc[1].exp()))

    return model, guide, [loc, logit]


def test_score_function_terms_equal_pyros():
    model, guide, parameters = _discrete_latent_program()
    x = torch.randn(5, 3)
    results = []
    for objective in (pyro.infer.Trace_ELBO(max_plate_nesting=2), SyncFreeTrace_ELBO(max_plate_nesting=2)):
        pyro.set_rng_seed(1)
        loss = objective.differentiable_loss(model, guide, x)
        results.append((loss.detach(), torch.autograd.grad(loss, parameters)))
    (loss, grads), (expected, expected_grads) = results[1], results[0]
    torch.testing.assert_close(loss, expected)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)


@contextlib.contextmanager
def no_host_reads():
    """Any read of a tensor's value into Python (what waits for a GPU) raises inside."""

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read on the host")

    names = ("item", "tolist", "__bool__", "__float__", "__int__")
    saved = {name: getattr(torch.Tensor, name) for name in names}
    for name in names:
        setattr(torch.Tensor, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_the_default_objectives_read_nothing_back_from_the_device(elbo):
    vae = ppvae.VAE((1, 8, 8), 3, network={"name": "mlp", "hidden": [16]})
    x = _data(vae)
    vae.initialize(x)
    objective = make_elbo(elbo)
    assert isinstance(objective, PAIRS[elbo][1])
    with pytest.raises(AssertionError, match="read on the host"), no_host_reads():  # the check can fail
        PAIRS[elbo][0]().differentiable_loss(vae.model, vae.guide, x, None).backward()
    with no_host_reads(), pyro.validation_enabled(False):
        objective.differentiable_loss(vae.model, vae.guide, x, None).backward()


# -- the step a fit takes ------------------------------------------------------------------------------


def _fit(model_class=ppvae.VAE, **options):
    options = {"epochs": 2, "batch_size": 32, "seed": 3, "progress": False, **options}
    return model_class(**SMALL).fit(small_data(128), **options)


def _assert_same_run(a, b):
    for ra, rb in zip(a.history, b.history, strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(wa, wb, rtol=1e-4, atol=1e-5, msg=name)


def test_fit_takes_the_lowered_step_by_default_and_trains_the_programs_run():
    lowered, programs = _fit(), _fit(compile=False)
    assert lowered.fit_record.options["step"] == "lowered" and lowered.fit_record.options["compile"] == "auto"
    assert programs.fit_record.options["step"] == "pyro"
    _assert_same_run(lowered, programs)


def test_a_resumed_lowered_run_equals_the_straight_run(tmp_path):
    straight = _fit(epochs=3, elbo="meanfield")
    resumed = _fit(epochs=2, elbo="meanfield", out=tmp_path / "run")
    resumed.fit(small_data(128), epochs=3, batch_size=32, seed=3, progress=False, out=tmp_path / "run", resume=True)
    assert resumed.fit_record.options["step"] == "lowered"
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.fixture
def own_classes(monkeypatch):
    """Model classes defined by a test stay out of the registry the other tests see."""
    from ppvae.estimator import registry

    monkeypatch.setattr(registry, "MODEL_CLASSES", dict(registry.MODEL_CLASSES))


def test_a_subclass_with_its_own_guide_trains_through_its_programs_and_says_so(own_classes, capsys):
    class OwnGuide(ppvae.VAE):
        def guide(self, x=None, c=None, kl_weight=1.0, size=None):
            return super().guide(x, c, kl_weight, size)

    model = _fit(OwnGuide, epochs=1, progress=True)
    assert model.fit_record.options["step"] == "pyro"
    assert "the Pyro programs train this fit: OwnGuide has its own guide" in capsys.readouterr().out


def test_a_lowered_elbo_that_disagrees_with_the_programs_is_not_taken(own_classes, capsys):
    class TwiceTheKL(ppvae.VAE):
        def lowered_elbo(self, x, c=None, kl_weight=1.0, analytic_kl=False):
            return super().lowered_elbo(x, c, 2 * kl_weight, analytic_kl)

    model = _fit(TwiceTheKL, epochs=1, progress=True)
    assert model.fit_record.options["step"] == "pyro"
    assert re.search(r"checked on the first batch and its loss [\d.]+ differs", capsys.readouterr().out)


def test_models_without_a_lowered_form_keep_their_programs_quietly_unless_asked(capsys):
    m2 = ppvae.SemiSupervisedVAE((1, 8, 8), 2, 2, network={"name": "mlp", "hidden": [8]})
    m2.fit(small_data(64), y=torch.arange(64) % 2, labelled=8, epochs=1, batch_size=32, progress=True)
    assert m2.fit_record.options["step"] == "pyro" and "Pyro programs train" not in capsys.readouterr().out
    iwae = _fit(elbo="iwae", num_particles=3, epochs=1, compile=True, progress=True)
    assert iwae.fit_record.options["step"] == "pyro"
    assert "elbo='iwae' with num_particles=3 has no lowered form" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on a CPU needs a C compiler")
def test_a_compiled_step_trains_the_programs_run():
    compiled = _fit(compile=True)  # seconds of compiling
    assert compiled.fit_record.options["step"] == "compiled"
    _assert_same_run(compiled, _fit(compile=False))


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on a CPU needs a C compiler")
def test_a_compiled_step_is_one_graph_runs_the_partial_batch_eagerly_and_resumes_exactly(tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    data = small_data(100)  # three batches of 32 and one of 4
    options = {"batch_size": 32, "seed": 3, "progress": False, "elbo": "meanfield", "compile": True}
    straight = ppvae.VAE(**SMALL).fit(data, epochs=3, **options)
    assert straight.fit_record.options["step"] == "compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])  # torch's KL lookup resolved before the trace
    assert counters["stats"]["unique_graphs"] == 1  # the batch of 4 did not compile a second graph
    resumed = ppvae.VAE(**SMALL).fit(data, epochs=2, out=tmp_path / "run", **options)
    resumed.fit(data, epochs=3, out=tmp_path / "run", resume=True, **options)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    _assert_same_run(straight, ppvae.VAE(**SMALL).fit(data, epochs=3, **{**options, "compile": False}))


def test_compile_takes_auto_true_or_false():
    with pytest.raises(ValueError, match="compile must be 'auto', True or False, got 'yes'"):
        _fit(compile="yes")
    args = build_parser().parse_args(["train", "--out", "run", "--compile", "false"])
    assert args.compile is False
