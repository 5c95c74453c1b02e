"""AIS's inner loop through the model's lowered log-joint: the traced densities and their gradients in z across
the parts grid, the programs' chains to the last bit, a fallback that says why, and the programs kept where a
model has its own."""

import itertools

import pytest
import torch
from conftest import GUIDES_GRID, LIKELIHOODS_GRID, NETWORKS_GRID, PRIORS_GRID, name_of

import ppvae
import ppvae.estimator.evidence as evidence
from ppvae.estimator.evidence import lowered_densities
from ppvae.infer.lowered_joint import LoweredSpace, check_lowered_space

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _data(model, n=5):
    x = torch.rand(n, *model.x_shape)
    return torch.bernoulli(x) if model.capabilities.binary else x


def _condition(model, x):
    kind = model.capabilities.condition
    return None if kind == "none" else model.condition(x, torch.arange(x.shape[0]) % 3 if kind == "labels" else None)


def _assert_lowered_agrees(model):
    x = _data(model)
    model.initialize(x)
    c = _condition(model, x)
    space = LoweredSpace(model.model, model.guide, x, c, lowered_densities(model)).require("AIS")
    scores = model.capabilities.proposal and model.capabilities.scores_any_point
    for start in ("prior", "guide") if scores else ("prior",):
        z, _ = space.sample(start, 3)
        assert check_lowered_space(space, z, guide=scores) is None, start


def test_every_prior_likelihood_and_guide_gives_the_traced_densities_and_gradients():
    for prior, likelihood, guide in itertools.product(PRIORS_GRID, LIKELIHOODS_GRID, GUIDES_GRID):
        if name_of(prior) == "vamp" and name_of(guide) in ("delta", "flow"):
            continue  # refused: the VampPrior averages q(z | u_k), which these cannot give
        vae = ppvae.VAE((1, 4, 4), 2, prior, likelihood, guide, {"name": "mlp", "hidden": [8]})
        try:
            _assert_lowered_agrees(vae)
        except AssertionError as error:
            raise AssertionError(f"{name_of(prior)} x {name_of(likelihood)} x {name_of(guide)}: {error}") from None


@pytest.mark.parametrize("network", NETWORKS_GRID, ids=name_of)
def test_every_network_conditional_models_and_hierarchies_give_the_traced_densities(network):
    for model in (
        ppvae.VAE((1, 8, 8), [3, 2], network=network, guide="laplace"),
        ppvae.CVAE((1, 8, 8), 3, 2, network=network, prior="conditional"),
        ppvae.CVAE((1, 8, 8), 3, [3, 2], prior="mixture", network=network),
        ppvae.CompletionVAE((1, 8, 8), 3, network=network),
    ):
        _assert_lowered_agrees(model)


def _both_ways(monkeypatch, estimate):
    """``estimate()`` through the lowered log-joint, then through the programs."""
    lowered = estimate()
    with monkeypatch.context() as patch:
        patch.setattr(evidence, "lowered_densities", lambda model: None)
        traced = estimate()
    return lowered, traced


@pytest.mark.parametrize(
    "model",
    [
        ppvae.VAE((1, 8, 8), [3, 2], network={"name": "mlp", "hidden": [8]}),
        ppvae.CVAE((1, 8, 8), 3, 2, prior={"name": "vamp", "components": 3}, network={"name": "mlp", "hidden": [8]}),
    ],
    ids=["two layers", "cvae with a vampprior"],
)
def test_ais_and_bdmc_through_the_lowered_log_joint_are_the_programs_chains(monkeypatch, model):
    x = _data(model, 6)
    y = torch.arange(6) % 3 if model.capabilities.condition == "labels" else None
    options = dict(method="ais", chains=3, steps=15, progress=False, diagnostics=True)
    for start in ("prior", "guide"):
        lowered, traced = _both_ways(
            monkeypatch, lambda start=start: ppvae.log_evidence(model, x, y=y, proposal=start, **options)
        )
        assert (lowered.evaluation, traced.evaluation) == ("lowered", "pyro")
        assert torch.equal(lowered.log_weights, traced.log_weights), start  # the same sums in the same order
    lowered, traced = _both_ways(monkeypatch, lambda: ppvae.bdmc(model, 4, chains=2, steps=10, progress=False)[1])
    assert lowered.evaluation == "lowered" and torch.equal(lowered.upper, traced.upper)


class _WrongJoint(ppvae.VAE):
    """A lowered log-joint that counts the likelihood twice: the first batch's check must catch it."""

    def lowered_log_joint(self, x, c, values):
        log_prior, log_likelihood = super().lowered_log_joint(x, c, values)
        return log_prior, 2 * log_likelihood


class _OwnModel(ppvae.VAE):
    """A subclass with its own model program, which the lowered log-joint it inherits does not know."""

    def model(self, x=None, c=None, kl_weight=1.0, size=None):
        return super().model(x, c, kl_weight, size)


def test_a_lowered_log_joint_that_disagrees_falls_back_saying_why_and_own_programs_are_traced(capsys, monkeypatch):
    x = torch.bernoulli(torch.rand(6, 1, 8, 8))
    options = dict(method="ais", chains=2, steps=10, diagnostics=True)
    wrong = _WrongJoint((1, 8, 8), 2, network={"name": "mlp", "hidden": [8]})
    estimate = ppvae.log_evidence(wrong, x, **options)
    said = capsys.readouterr().out
    assert (
        "AIS evaluates the Pyro programs: the lowered log-joint of _WrongJoint was checked on the first batch" in said
    )
    assert "its log p(x | z) differs from the programs'" in said and estimate.evaluation == "pyro"
    with monkeypatch.context() as patch:
        patch.setattr(evidence, "lowered_densities", lambda model: None)
        assert torch.equal(ppvae.log_evidence(wrong, x, **options).log_weights, estimate.log_weights)
    assert ppvae.log_evidence(_OwnModel((1, 8, 8), 2), x, **options).evaluation == "pyro"
    m2 = ppvae.SemiSupervisedVAE((1, 8, 8), 3, 2, network={"name": "mlp", "hidden": [8]})
    assert ppvae.log_evidence(m2, x, y=torch.arange(6) % 3, **options).evaluation == "pyro"
    assert "lowered" not in capsys.readouterr().out  # nothing to say where no lowering was there to take
