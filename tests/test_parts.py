"""The parts: each builds from a name or a dict and returns the distribution it promises."""

import math

import pyro
import pytest
import torch
from torch.distributions import kl_divergence

import ppvae
from ppvae.infer import ObjectiveModule, make_elbo, validate_programs
from ppvae.parts import GUIDES, NETWORKS, PRIORS

PRIOR_SPECS = [
    "normal",
    "laplace",
    {"name": "student_t", "df": 4.0},
    {"name": "mixture", "components": 3},
    {"name": "vamp", "components": 4},
]
LIKELIHOOD_SPECS = [
    "bernoulli",
    "continuous_bernoulli",
    {"name": "normal", "scale": "learned"},
    {"name": "normal", "scale": "per_pixel"},
    {"name": "normal", "scale": 0.1},
    {"name": "laplace", "scale": "decoder"},
]
GUIDE_SPECS = ["normal", "laplace", "student_t", "logistic"]


def _id(spec):
    return spec if isinstance(spec, str) else "-".join(str(v) for v in spec.values())


def svi_step(vae, x, elbo="meanfield", lr=1e-2, validate=True):
    """One SVI step as the training loop takes it: the objective module's loss, backward, Adam."""
    objective = make_elbo(elbo)
    if validate:
        validate_programs(objective, vae.model, vae.guide, x)  # Pyro's checks: shapes, supports, model and guide agree
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    loss = ObjectiveModule(vae, vae.model, vae.guide, objective)(x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("guide", GUIDE_SPECS, ids=_id)
@pytest.mark.parametrize("likelihood", LIKELIHOOD_SPECS, ids=_id)
@pytest.mark.parametrize("prior", PRIOR_SPECS, ids=_id)
def test_every_combination_builds_steps_and_scores(prior, likelihood, guide):
    vae = ppvae.VAE(
        x_shape=(1, 8, 8),
        z_dim=3,
        prior=prior,
        likelihood=likelihood,
        guide=guide,
        network={"name": "mlp", "hidden": [16]},
    )
    x = torch.rand(16, 1, 8, 8)
    if vae.capabilities.binary:
        x = torch.bernoulli(x)
    vae.initialize(x)
    before = [p.detach().clone() for p in vae.parameters()]
    loss = svi_step(vae, x)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))
    scores = vae.evaluate(x, binarize=None, num_samples=4)
    assert all(math.isfinite(scores[k]) for k in ("elbo", "kl", "reconstruction", "log_px"))
    assert vae.sample(2).shape == vae.reconstruct(x[:2]).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("network", ["mlp", "conv", {"name": "conv", "channels": [4, 8], "hidden": 16}], ids=_id)
@pytest.mark.parametrize("likelihood", ["bernoulli", {"name": "normal", "scale": "decoder"}], ids=_id)
def test_networks_fit_every_likelihood_width(network, likelihood):
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=4, network=network, likelihood=likelihood)
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    loss = svi_step(vae, x, "trace", lr=1e-3, validate=False)
    assert torch.isfinite(loss)
    assert ppvae.log_evidence(vae, x, num_samples=3, progress=False, binarize=None).shape == (8,)  # (K, N) decoding


def test_save_load_rebuilds_every_part_exactly(tmp_path):
    vae = ppvae.VAE(
        x_shape=(1, 8, 8),
        z_dim=3,
        prior={"name": "vamp", "components": 5},
        guide="student_t",
        likelihood={"name": "laplace", "scale": "per_pixel"},
        network={"name": "conv", "channels": [4, 4], "hidden": 8},
        beta=2.0,
    )
    x = torch.rand(40, 1, 8, 8)
    vae.fit(x, epochs=1, batch_size=20, progress=False)
    vae.save(tmp_path / "run")
    same = ppvae.load(tmp_path / "run")
    assert repr(same) == repr(vae)
    pyro.set_rng_seed(0)
    a = same.elbo_terms(x, seed=1)["elbo"]
    b = vae.eval().elbo_terms(x, seed=1)["elbo"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("prior", ["normal", "laplace"])
@pytest.mark.parametrize("guide", ["normal", "laplace"])
def test_analytic_kl_agrees_with_monte_carlo(prior, guide):
    q = GUIDES.build(guide, z_dim=3)(torch.tensor([[0.5, -1.0, 0.2, -0.5, 0.3, 0.0]]))
    p = PRIORS.build(prior, z_dim=3)()
    try:
        exact = kl_divergence(q, p)
    except NotImplementedError:
        pytest.skip(f"torch has no analytic KL({guide} || {prior}); the meanfield ELBO uses Monte Carlo")
    z = q.rsample((200_000,))
    terms = q.log_prob(z) - p.log_prob(z)
    assert abs(terms.mean() - exact).item() < 4 * terms.std().item() / math.sqrt(terms.shape[0])


@pytest.mark.parametrize(
    "likelihood, data, message",
    [
        ("bernoulli", torch.full((4, 1, 2, 2), 0.5), "binarize="),
        ("continuous_bernoulli", torch.full((4, 1, 2, 2), 255.0), r"pixels in \[0, 1\]"),
        ({"name": "normal", "scale": "learned"}, torch.full((4, 1, 2, 2), float("nan")), "finite"),
        ("laplace", torch.full((4, 1, 2, 2), float("inf")), "finite"),
    ],
    ids=["bernoulli", "continuous_bernoulli", "normal", "laplace"],
)
def test_each_likelihood_rejects_data_outside_its_support(likelihood, data, message):
    vae = ppvae.VAE(x_shape=(1, 2, 2), z_dim=2, likelihood=likelihood, network={"name": "mlp", "hidden": [4]})
    with pytest.raises(ValueError, match=message):
        vae.fit(data, epochs=1, binarize=None, progress=False)


def test_unknown_parts_and_options_list_what_exists():
    with pytest.raises(
        ValueError, match="unknown prior 'gaussian'; available: normal, laplace, student_t, mixture, vamp"
    ):
        ppvae.VAE(prior="gaussian")
    with pytest.raises(ValueError, match="prior 'mixture' has no option 'k'; its options: components=10"):
        ppvae.VAE(prior={"name": "mixture", "k": 3})
    with pytest.raises(ValueError, match=r"unknown prior 'laplce' \(did you mean 'laplace'\?\); available"):
        ppvae.VAE(prior="laplce")  # a near miss is named; 'gaussian' above is near nothing
    with pytest.raises(ValueError, match=r"no option 'component' \(did you mean 'components'\?\)"):
        ppvae.VAE(prior={"name": "mixture", "component": 3})
    with pytest.raises(ValueError, match="divisible by 4"):
        ppvae.VAE(x_shape=(1, 10, 10), network="conv")
    with pytest.raises(ValueError, match="df must be a positive number, got 0"):
        ppvae.VAE(guide={"name": "student_t", "df": 0})
    assert set(NETWORKS.names()) == {"mlp", "linear", "conv"}


@pytest.mark.parametrize(
    "guide, why",
    [
        ("delta", "a point mass has no density"),
        ({"name": "flow", "transform": "affine_coupling"}, "a flow.s transforms read"),
    ],
    ids=["delta", "flow"],
)
def test_the_vamp_prior_refuses_a_guide_it_cannot_average(guide, why):
    with pytest.raises(ValueError, match=f"vamp prior is the mean of q.* guide cannot give \\({why}"):
        ppvae.VAE(x_shape=(1, 4, 4), z_dim=2, prior="vamp", guide=guide)


def test_bernoulli_log_prob_and_gradient_equal_pyros():
    logits = (torch.randn(3, 50, 16) * 8).requires_grad_()
    x = torch.bernoulli(torch.full((50, 1, 4, 4), 0.3))
    ours = ppvae.parts.LIKELIHOODS.build("bernoulli", x_shape=(1, 4, 4))(logits)
    theirs = pyro.distributions.Bernoulli(logits=logits.reshape(3, 50, 1, 4, 4)).to_event(3)
    assert ours.batch_shape == theirs.batch_shape == (3, 50) and ours.event_shape == (1, 4, 4)
    assert type(ours.expand((2, 3, 50))) is type(ours)  # Pyro's plates broadcast it without losing the class
    ours_value, theirs_value = ours.log_prob(x), theirs.log_prob(x)
    assert torch.allclose(ours_value, theirs_value, atol=1e-4)  # per-image sums of 16 pixels, float32
    (ours_grad,) = torch.autograd.grad(ours_value.sum(), logits)
    (theirs_grad,) = torch.autograd.grad(theirs_value.sum(), logits)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-6)  # x - sigmoid(logits), in [-1, 1]
    with torch.no_grad():  # the formula used without gradients gives the same values
        assert torch.allclose(ours.log_prob(x), theirs_value, atol=1e-4)


def test_the_bernoulli_total_log_prob_is_the_summed_log_prob_with_the_same_gradient():
    logits = (torch.randn(50, 16) * 8).requires_grad_()
    x = torch.bernoulli(torch.full((50, 1, 4, 4), 0.3))
    likelihood = ppvae.parts.LIKELIHOODS.build("bernoulli", x_shape=(1, 4, 4))
    total = likelihood(logits).total_log_prob(x)
    summed = likelihood(logits).log_prob(x).sum()
    assert torch.allclose(total, summed, rtol=1e-6)  # one reduction against per-image sums, float32
    assert torch.equal(*(torch.autograd.grad(v, logits)[0] for v in (total, summed)))  # x - sigmoid(logits)
    with torch.no_grad():
        assert torch.allclose(likelihood(logits).total_log_prob(x), summed, rtol=1e-6)


def test_the_standard_normal_prior_scores_and_takes_kl_as_torchs_normal_to_the_last_bit():
    """`UnitNormal` leaves out the prior's zeros and ones: the numbers and gradients must not move."""
    from ppvae.parts.unit_normal import UnitNormal

    ours = PRIORS.build("normal", z_dim=5)().expand((7,))
    theirs = pyro.distributions.Normal(torch.zeros(5), torch.ones(5)).to_event(1).expand((7,))
    assert isinstance(ours.base_dist, UnitNormal)  # Pyro's plates expand it without losing the class
    h = torch.randn(7, 10, requires_grad=True)
    q = GUIDES.build("normal", z_dim=5)(h)
    z = q.rsample()
    for score in (lambda p: p.log_prob(z), lambda p: kl_divergence(q, p)):
        value, expected = score(ours), score(theirs)
        assert value.shape == expected.shape == (7,) and torch.equal(value, expected)
        assert torch.equal(*(torch.autograd.grad(v.sum(), h, retain_graph=True)[0] for v in (value, expected)))
    wider = UnitNormal(torch.zeros(3, 7, 5), torch.ones(3, 7, 5))  # more batch dims than q, as torch broadcasts
    assert kl_divergence(q.base_dist, wider).shape == (3, 7, 5)


def test_the_normal_mixture_scores_as_a_float64_mixture_same_family_with_the_same_gradients():
    """`NormalMixture` expands the square into matrix products: the numbers must be the mixture's, also for
    points far from a narrow component, where the expansion subtracts large terms."""
    from ppvae.parts.normal_mixture import NormalMixture

    dist = pyro.distributions
    torch.manual_seed(0)
    for batch in ((), (4,)):  # one set of components (mixture, VampPrior), or one per example (conditioned)
        logits = torch.randn(*batch, 3, requires_grad=True)
        loc = (torch.randn(*batch, 3, 5) + torch.tensor([0.0, 0.0, 30.0])[:, None]).requires_grad_()
        scale = (torch.rand(*batch, 3, 5) * 2 + 0.01).requires_grad_()  # as narrow as 0.01
        near = loc.detach()[..., 2, :] + 0.01 * torch.randn(4, 5)  # by a component far from 0: cancellation
        z = torch.stack([torch.randn(4, 5), 30 * torch.randn(4, 5), near.expand(4, 5)]).requires_grad_()
        ours = NormalMixture(logits, loc, scale).expand((4,))
        assert isinstance(ours, NormalMixture) and ours.batch_shape == (4,) and ours.event_shape == (5,)
        truth = dist.MixtureSameFamily(
            dist.Categorical(logits=logits.double()), dist.Normal(loc.double(), scale.double()).to_event(1)
        ).expand((4,))
        value, expected = ours.log_prob(z), truth.log_prob(z.double())
        assert value.dtype == torch.float32 and value.shape == expected.shape == (3, 4)
        assert torch.allclose(value.double(), expected, rtol=1e-6)
        for mine, true in zip(
            torch.autograd.grad(value.sum(), (logits, loc, scale, z)),
            torch.autograd.grad(expected.sum(), (logits, loc, scale, z)),
        ):
            assert torch.allclose(mine, true, rtol=1e-4, atol=1e-4)  # both float32: the leaves are
        assert ours.sample((2,)).shape == (2, 4, 5)
        assert torch.allclose(ours.mean, truth.mean.float(), atol=1e-6)
    laplace = dist.Laplace(torch.zeros(3, 5), torch.ones(3, 5)).to_event(1)
    assert type(NormalMixture.of(torch.zeros(3), laplace)) is dist.MixtureSameFamily  # other families: as before


@pytest.mark.parametrize("guide, kind", [("normal", "NormalMixture"), ("laplace", "MixtureSameFamily")])
def test_mixture_priors_score_diagonal_normal_components_by_the_normal_mixture(guide, kind):
    vamp = ppvae.VAE(x_shape=(1, 4, 4), z_dim=2, prior={"name": "vamp", "components": 3}, guide=guide)
    assert type(vamp.prior()).__name__ == kind
    assert type(PRIORS.build({"name": "mixture", "components": 3}, z_dim=2)()).__name__ == "NormalMixture"


@pytest.mark.parametrize("name", ["normal", "laplace"])
def test_a_sigmoid_mean_keeps_location_scale_likelihoods_in_the_unit_interval(name):
    from ppvae.parts import LIKELIHOODS

    bounded = LIKELIHOODS.build({"name": name, "scale": 0.1, "mean": "sigmoid"}, x_shape=(1, 2, 2))
    plain = LIKELIHOODS.build({"name": name, "scale": 0.1}, x_shape=(1, 2, 2))
    h = torch.tensor([[-8.0, -1.0, 0.0, 9.0]])
    assert torch.allclose(bounded(h).mean.flatten(), torch.sigmoid(h).flatten())
    assert torch.equal(plain(h).mean.flatten(), h.flatten())
    with pytest.raises(ValueError, match="mean must be one of"):
        LIKELIHOODS.build({"name": name, "mean": "tanh"}, x_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="min_scale must be positive"):
        LIKELIHOODS.build({"name": name, "min_scale": 0}, x_shape=(1, 2, 2))
