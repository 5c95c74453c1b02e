"""Importance-sampled log p(x) checked against factor analysis's closed-form evidence, and the IWAE objective."""

import math

import pyro
import pytest
import torch
from conftest import bars, fa_data
from pyro.infer import RenyiELBO

import ppvae
from ppvae.infer import IWAE, elbo_terms, log_importance_weights
from ppvae.report import evaluation_table


def mean_field_fa(train, widen=1.0):
    """FA fitted by EM, with its amortised encoder set to the mean-field fit of the exact posterior.

    q(z|x) = N(exact posterior mean, diag(1 / diag(M))) * ``widen``: a good but imperfect proposal
    whose KL to the posterior is known in closed form.
    """
    fa = ppvae.FactorAnalysis(x_shape=(train.shape[1],), z_dim=3, guide="amortised")
    fa.fit(train)
    W_psi, L = fa._precision_factor(fa.loadings, fa.noise_variance)
    covariance = torch.cholesky_inverse(L)
    precision = torch.linalg.inv(covariance)
    encoder = fa.networks.encoder_net[0]
    variance = widen**2 / torch.diagonal(precision)
    with torch.no_grad():
        encoder.weight[:3] = (W_psi @ covariance).T
        encoder.bias[:3] = -(fa.mean @ W_psi @ covariance)
        encoder.weight[3:] = 0
        encoder.bias[3:] = variance.log()
    # KL(q || p(z|x)), the same for every x
    kl = 0.5 * ((precision.diagonal() * variance).sum() - 3 - variance.log().sum() + torch.logdet(covariance))
    return fa, kl.item()


@pytest.fixture(scope="module")
def fa_problem():
    torch.manual_seed(0)
    train, test = fa_data(3000, test_size=400)
    return train, test


def test_exact_guide_gives_the_exact_evidence_at_any_k(fa_problem):
    train, test = fa_problem
    fa = ppvae.FactorAnalysis(x_shape=(15,), z_dim=3)  # guide = the exact posterior
    fa.fit(train)
    exact = fa.log_evidence(test)
    for k in (1, 7):
        estimate = ppvae.log_evidence(fa, test, num_samples=k, progress=False, diagnostics=True)
        assert torch.allclose(estimate.log_evidence, exact, atol=1e-3)
        assert torch.allclose(estimate.effective_sample_size, torch.full_like(exact, float(k)), rtol=1e-3)


@pytest.mark.parametrize("widen", [1.5, 3.0])
def test_estimate_converges_to_the_exact_evidence(fa_problem, widen):
    train, test = fa_problem
    fa, kl = mean_field_fa(train, widen)
    exact = fa.log_evidence(test)
    gaps = {}
    for k in (1, 10, 1000):
        estimate = ppvae.log_evidence(fa, test, num_samples=k, progress=False, seed=k)
        gaps[k] = (estimate - exact).mean().item()
        assert estimate.dtype == torch.float64 and estimate.shape == (400,)
        # a lower bound in expectation: never above the truth by more than noise
        noise = 4 * (estimate - exact).std().item() / math.sqrt(400)
        assert gaps[k] < noise
    assert kl > 0.5  # the proposal is imperfect: there is a gap to close
    assert gaps[1] < gaps[10] < gaps[1000]
    assert abs(gaps[1000]) < 0.05


def test_k1_is_the_elbo(fa_problem):
    train, test = fa_problem
    fa, kl = mean_field_fa(train, widen=1.5)
    x = test[:200]
    # on the same draw, K = 1 is exactly the single-sample ELBO
    pyro.set_rng_seed(3)
    elbo = elbo_terms(fa.model, fa.guide, x, None, analytic_kl=False)["elbo"]
    pyro.set_rng_seed(3)
    with torch.no_grad():
        one = log_importance_weights(fa.model, fa.guide, x, None, num_samples=1)[0]
    assert torch.allclose(one, elbo, atol=1e-4)
    # and in expectation it is log p(x) - KL(q || p(z|x))
    draws = torch.stack([ppvae.log_evidence(fa, x, num_samples=1, progress=False, seed=s) for s in range(30)])
    error = (draws - fa.log_evidence(x)).mean(0)  # per example, averaged over 30 draws
    assert abs(error.mean().item() + kl) < 4 * error.std().item() / math.sqrt(200)


def test_prior_proposal_is_the_worse_estimator(fa_problem):
    train, test = fa_problem
    fa, _ = mean_field_fa(train)
    exact = fa.log_evidence(test)
    by_guide = ppvae.log_evidence(fa, test, num_samples=300, progress=False, diagnostics=True)
    by_prior = ppvae.log_evidence(fa, test, num_samples=300, proposal="prior", progress=False, diagnostics=True)
    assert (exact - by_prior.log_evidence).mean() > 10 * (exact - by_guide.log_evidence).mean().abs()
    assert by_prior.effective_sample_size.mean() < 0.1 * by_guide.effective_sample_size.mean()
    assert by_guide.pareto_k.nanmedian() < 0.5 < by_prior.pareto_k.nanmedian()
    assert by_prior.proposal == "prior" and by_guide.seconds > 0


def test_chunking_does_not_change_the_estimate(fa_problem):
    train, test = fa_problem
    fa, _ = mean_field_fa(train)
    x = test[:50]
    whole = ppvae.log_evidence(fa, x, num_samples=64, chunk_size=64, batch_size=50, progress=False)
    pieces = ppvae.log_evidence(fa, x, num_samples=64, chunk_size=64, batch_size=7, progress=False)
    chunked = ppvae.log_evidence(fa, x, num_samples=64, chunk_size=5, batch_size=50, progress=False)
    budget = ppvae.log_evidence(fa, x, num_samples=64, memory_mb=0.01, progress=False)  # a few rows at a time
    for other in (pieces, chunked, budget):  # other draws, the same answer within Monte-Carlo error
        assert (other - whole).abs().max() < 0.1 and (other - whole).mean().abs() < 0.01


def test_pyro_renyi_elbo_at_alpha_0_is_the_per_example_iwae_bound(binary_images):
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=5)
    x = binary_images[:9]
    iwae = IWAE(num_particles=20)
    renyi = RenyiELBO(alpha=0, num_particles=20, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(1)
    ours = iwae.differentiable_loss(vae.model, vae.guide, x)
    ours.backward()
    our_grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(1)
    theirs = renyi.loss_and_grads(vae.model, vae.guide, x)
    assert ours.item() == pytest.approx(theirs, rel=1e-5)
    for ours_grad, p in zip(our_grads, vae.parameters()):
        assert torch.allclose(ours_grad, p.grad, rtol=1e-3, atol=1e-4)
    # per example: the batch bound is the sum of each image's own bound, not one bound on the batch
    pyro.set_rng_seed(1)
    per_example = iwae.bound(vae.model, vae.guide, x)
    assert per_example.shape == (9,) and per_example.sum().item() == pytest.approx(-ours.item(), rel=1e-6)


def test_iwae_training_tightens_the_bound(binary_images):
    x = torch.bernoulli(torch.rand(1, 1, 28, 28).expand(256, 1, 28, 28).clone())
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=4)
    before = ppvae.log_evidence(vae, x[:64], num_samples=50, progress=False).mean()
    history = vae.fit(x, epochs=3, batch_size=64, elbo="iwae", num_particles=5, progress=False).history
    assert "train_iwae" in history[-1] and "train_elbo" not in history[-1]
    assert ppvae.log_evidence(vae, x[:64], num_samples=50, progress=False).mean() > before + 50
    with pytest.raises(ValueError, match="no beta"):
        ppvae.VAE(x_shape=(1, 28, 28), z_dim=4, beta=2.0).fit(x, epochs=1, elbo="iwae", progress=False)


def test_evaluate_reports_evidence_and_bits_per_dim(binary_images):
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=4)
    scores = vae.evaluate(binary_images, num_samples=20)
    assert scores["log_px"] >= scores["elbo"] - 3 * scores["elbo_se"]
    assert scores["gap"] == pytest.approx(scores["log_px"] - scores["elbo"], abs=1e-6)
    assert scores["bits_per_dim"] == pytest.approx(-scores["log_px"] / (784 * math.log(2)))
    assert scores["num_samples"] == 20 and scores["evidence_seconds"] > 0
    fa = ppvae.FactorAnalysis(x_shape=(15,), z_dim=3)
    train, test = fa_data(500, test_size=100)
    fa.fit(train)
    scores = fa.evaluate(test)
    assert scores["log_px_exact"] == pytest.approx(fa.log_evidence(test).mean().item())
    assert "bits_per_dim_exact" in scores


def test_bad_requests_are_explained(binary_images):
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=4)
    with pytest.raises(ValueError, match="proposal must be one of"):
        ppvae.log_evidence(vae, binary_images, proposal="posterior")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        ppvae.log_evidence(vae, binary_images, num_samples=0)

    def global_model(x, y=None):
        scale = pyro.sample("scale", pyro.distributions.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pyro.distributions.Normal(0.0, scale), obs=x)

    with pytest.raises(ValueError, match=r"\['scale'\] is not"):
        log_importance_weights(global_model, None, torch.zeros(4), None, num_samples=3)


def test_mean_field_guide_has_the_gap_it_promises(fa_problem):
    train, test = fa_problem
    fa = ppvae.FactorAnalysis(x_shape=(15,), z_dim=3, guide="mean_field")
    fa.fit(train)
    exact = fa.log_evidence(test)
    gap = fa.mean_field_gap()
    _, kl = mean_field_fa(train)  # the same guide, built by hand from the posterior
    assert gap == pytest.approx(kl, rel=1e-4) and gap > 0
    elbo = fa.elbo_terms(test)["elbo"]  # analytic KL to the prior, one sampled reconstruction
    assert abs((exact - elbo).mean().item() - gap) < 4 * (exact - elbo).std().item() / math.sqrt(len(test))
    estimate = ppvae.log_evidence(fa, test, num_samples=1000, progress=False)
    assert abs((estimate - exact).mean().item()) < 0.05


# -- quadrature: the exact answer for one- and two-dimensional latent spaces --------------------------------


@pytest.mark.parametrize("z_dim", [1, 2])
def test_quadrature_equals_factor_analysis_closed_form(z_dim):
    train, test = fa_data(600, d=6, k=z_dim, test_size=12)
    fa = ppvae.FactorAnalysis(x_shape=(6,), z_dim=z_dim)
    fa.fit(train, progress=False)
    estimate = ppvae.log_evidence(fa, test, method="quadrature", diagnostics=True, progress=False)
    exact = fa.exact_log_evidence(fa.prepare(test)).double()
    assert torch.allclose(estimate.log_evidence, exact, atol=1e-4)
    assert estimate.error.max() < 1e-4  # the refinement agrees


def test_quadrature_is_the_ceiling_importance_sampling_climbs_toward():
    x = bars(300).x
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]})
    model.fit(x, epochs=5, batch_size=50, lr=3e-3, progress=False)
    exact = ppvae.log_evidence(model, x[:20], method="quadrature", diagnostics=True, progress=False)
    assert exact.error.max() < 1e-2  # conservative: the grid of spacing 2h against the grid of spacing h
    elbo = torch.stack([model.elbo_terms(x[:20], seed=s)["elbo"] for s in range(20)]).mean(0)
    many = ppvae.log_evidence(model, x[:20], num_samples=5000, progress=False)
    assert elbo.mean() < many.mean() < exact.log_evidence.mean() + 0.01  # IS: a stochastic lower bound above the ELBO
    assert (exact.log_evidence - many).abs().mean() < 0.2  # an easy posterior: IS gets close with K = 5000


def test_quadrature_refuses_what_it_cannot_integrate():
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=3)
    with pytest.raises(ValueError, match="at most 2 latent dimensions"):
        ppvae.log_evidence(model, torch.zeros(2, 1, 8, 8), method="quadrature", progress=False)
    with pytest.raises(ValueError, match="no closed-form evidence"):
        ppvae.log_evidence(model, torch.zeros(2, 1, 8, 8), method="exact", progress=False)
    cvae = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2, network={"name": "mlp", "hidden": [8]})
    data = ppvae.data.ImageDataset(torch.bernoulli(torch.full((4, 1, 8, 8), 0.5)), torch.arange(4) % 3)
    assert ppvae.log_evidence(cvae, data, method="quadrature", progress=False).shape == (4,)  # log p(x | y)


def test_the_khat_warning_marks_the_images_whose_estimate_is_off():
    x = bars(300).x
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]})
    model.fit(x, epochs=3, batch_size=50, lr=3e-3, progress=False)
    estimate = ppvae.log_evidence(model, x[:60], num_samples=200, diagnostics=True, progress=False)
    error = (estimate.log_evidence - ppvae.log_evidence(model, x[:60], method="quadrature", progress=False)).abs()
    flagged = estimate.pareto_k > 0.7
    assert 0 < flagged.sum() < 60
    assert error[flagged].mean() > 5 * error[~flagged].mean()  # k-hat > 0.7 exactly where IS is off
    scores = model.evaluate(x[:60], num_samples=200)
    assert scores["khat_unreliable"] == pytest.approx(flagged.double().mean().item())
    table = evaluation_table({**scores, "khat_unreliable": 0.5}, model.x_dim)
    assert "warning: Pareto k-hat > 0.7 on 50% of the images" in table
    assert "warning" not in evaluation_table({**scores, "khat_unreliable": 0.05}, model.x_dim)


def test_the_defensive_proposal_estimates_the_same_evidence():
    train, test = fa_data(600, d=6, k=2, test_size=20)
    fa = ppvae.FactorAnalysis(x_shape=(6,), z_dim=2)
    fa.fit(train, progress=False)
    exact = fa.exact_log_evidence(fa.prepare(test)).double()
    defensive = ppvae.log_evidence(fa, test, num_samples=2000, proposal="defensive", diagnostics=True, progress=False)
    assert torch.allclose(defensive.log_evidence, exact, atol=0.05)
    assert (defensive.effective_sample_size > 0.5 * 2000).all()
    x = bars(300).x
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]})
    model.fit(x, epochs=3, batch_size=50, lr=3e-3, progress=False)
    truth = ppvae.log_evidence(model, x[:30], method="quadrature", progress=False)
    estimate = ppvae.log_evidence(model, x[:30], num_samples=2000, proposal="defensive", progress=False)
    assert (estimate - truth).abs().mean() < 0.1


# -- annealed importance sampling and bidirectional Monte Carlo ------------------------------------------------


def test_ais_from_the_prior_anneals_to_factor_analysis_closed_form():
    train, test = fa_data(600, d=6, k=2, test_size=20)
    fa = ppvae.FactorAnalysis(x_shape=(6,), z_dim=2)
    fa.fit(train, progress=False)
    exact = fa.exact_log_evidence(fa.prepare(test)).double()
    estimate = ppvae.log_evidence(
        fa, test, method="ais", proposal="prior", chains=64, steps=300, diagnostics=True, progress=False
    )
    error = estimate.log_evidence - exact
    assert abs(error.mean()) < 0.05 and error.abs().mean() < 0.1
    assert (error.abs() < 4 * estimate.standard_error + 0.02).all()  # its own error bar covers the truth
    assert 0.5 < estimate.acceptance.mean() < 0.95  # the step size adapted toward 0.65
    one_step = ppvae.log_evidence(
        fa, test, method="ais", proposal="prior", chains=16, steps=1, leapfrog_steps=1, progress=False
    )
    assert (one_step - exact).abs().mean() > 5 * error.abs().mean()  # one step is importance sampling from the prior


@pytest.mark.slow
def test_ais_closes_the_gap_importance_sampling_leaves_on_a_multimodal_posterior(fashion):
    train, test = fashion
    model = ppvae.VAE(x_shape=train.shape, z_dim=2)
    model.fit(train.subset(6000), epochs=2, progress=False)
    images = test.subset(20)
    exact = ppvae.log_evidence(model, images, method="quadrature", progress=False)
    importance = ppvae.log_evidence(model, images, num_samples=1000, progress=False) - exact
    estimate = ppvae.log_evidence(model, images, method="ais", steps=100, diagnostics=True, progress=False)
    annealed = estimate.log_evidence - exact
    assert importance.mean() < -0.5  # q(z | x) misses posterior mass that more samples do not find
    assert abs(annealed.mean()) < 0.1 and annealed.abs().mean() < 0.25  # AIS: within 0.1 nats on average
    assert (annealed.abs() < 4 * estimate.standard_error + 0.05).all()  # and its error bar says how far, per image


def test_bdmc_sandwiches_the_exact_evidence_of_simulated_images():
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]})
    model.fit(bars(300).x, epochs=3, batch_size=50, lr=3e-3, progress=False)
    images, estimate = ppvae.bdmc(model, num_images=20, steps=200, progress=False)
    assert images.shape == (20, 1, 8, 8) and set(images.unique().tolist()) <= {0.0, 1.0}  # drawn from the Bernoulli
    exact = ppvae.log_evidence(model, images, method="quadrature", binarize=None, progress=False)
    lower, upper = estimate.log_evidence, estimate.upper
    assert (lower - exact).mean() < 0.02 and (upper - exact).mean() > -0.02  # bounds on average, from either side
    assert (upper - lower).mean() < 0.1  # and close: AIS with these settings is accurate on this model


def test_ais_refuses_what_it_cannot_do():
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [8]})
    x = torch.zeros(2, 1, 8, 8)
    for options, message in (
        (dict(chains=0), "chains must be"),
        (dict(steps=2.5), "steps must be"),
        (dict(proposal="defensive"), "AIS starts from"),
    ):
        with pytest.raises(ValueError, match=message):
            ppvae.log_evidence(model, x, method="ais", progress=False, **options)
    autoencoder = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, guide="delta", network={"name": "mlp", "hidden": [8]})
    with pytest.raises(ValueError, match="point mass"):
        ppvae.log_evidence(autoencoder, x, method="ais", progress=False)
    assert ppvae.log_evidence(autoencoder, x, method="ais", proposal="prior", steps=5, progress=False).shape == (2,)


def test_ais_conditions_on_the_label_like_quadrature():
    cvae = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2, network={"name": "mlp", "hidden": [16]})
    data = bars(150)
    cvae.fit(data, epochs=3, batch_size=50, lr=3e-3, progress=False)
    exact = ppvae.log_evidence(cvae, data.subset(10), method="quadrature", progress=False)  # log p(x | y)
    annealed = ppvae.log_evidence(cvae, data.subset(10), method="ais", steps=200, progress=False)
    assert (annealed - exact).abs().mean() < 0.05


def test_the_front_door_takes_one_method_and_only_its_options():
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [8]})
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.4))
    refusals = [
        (
            {"method": "ais", "num_samples": 5},
            "num_samples does not apply to method='ais' .it is an option of method='is'",
        ),
        (
            {"chains": 4},
            "chains does not apply to method='is' .it is an option of method='ais'.; its options: num_samples",
        ),
        ({"method": "quadrature", "steps": 3}, "steps does not apply to method='quadrature'"),
        ({"method": "is", "leapfrog": 3}, "leapfrog does not apply to method='is' .no method takes it."),
        ({"method": "bridge"}, "method must be one of is, ais, quadrature, exact"),
    ]
    for options, message in refusals:
        with pytest.raises(ValueError, match=message):
            ppvae.log_evidence(model, x, progress=False, **options)
    with pytest.raises(ValueError, match="num_samples does not apply to method='quadrature'"):
        model.evaluate(x, num_samples=5, method="quadrature")


def test_factor_analysis_honours_the_method_it_is_given():
    train, test = fa_data(2000, d=6, k=2)
    fa = ppvae.FactorAnalysis(x_shape=(6,), z_dim=2).fit(train, progress=False)
    exact = fa.log_evidence(test[:20])
    assert torch.equal(exact, fa.exact_log_evidence(test[:20])) and torch.equal(
        ppvae.log_evidence(fa, test[:20], progress=False), exact
    )  # the closed form, by default, from the model and the front door alike
    annealed = fa.log_evidence(test[:20], method="ais", steps=50, chains=4, progress=False, diagnostics=True)
    assert not torch.equal(annealed.log_evidence, exact)  # AIS ran: it was not the closed form again
    assert (annealed.log_evidence - exact).abs().max() < 0.05
    sampled = fa.log_evidence(test[:20], 200, progress=False)  # num_samples asks for importance sampling
    assert not torch.equal(sampled, exact) and (sampled - exact).abs().max() < 0.05
    scores = fa.evaluate(test[:20], method="ais", steps=20, chains=2)
    assert scores["method"] == "ais" and abs(scores["log_px"] - scores["log_px_exact"]) < 0.1


def test_progress_is_a_few_plain_lines_where_output_is_captured(capsys):
    """Captured output (a log, a pipe) gets a line at each quarter, not a bar's every frame; quiet gets none."""
    model = ppvae.VAE(x_shape=(1, 4, 4), z_dim=2, network={"name": "mlp", "hidden": [8]})
    x = torch.bernoulli(torch.full((40, 1, 4, 4), 0.5))
    model.fit(x, epochs=2, batch_size=4, progress=True)
    out, err = capsys.readouterr()
    assert "epoch 2:" in out and "\r" not in err and "epoch 1/2" not in err  # the loop's lines say it all
    ppvae.log_evidence(model, x, num_samples=10, batch_size=1, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 4 and err.splitlines()[-1].startswith("log p(x), K=10: 40/40 images")
    ppvae.log_evidence(model, x, method="ais", chains=2, steps=10, progress=False)
    assert capsys.readouterr().err == ""


def test_a_seed_fixes_an_estimate_for_its_chunking_and_another_chunking_is_another_draw():
    """As log_evidence's docstring says: the same seed and memory settings repeat an estimate to the bit;
    other chunks draw other samples of the same estimator, which agree within its noise."""
    model = ppvae.VAE(x_shape=(1, 4, 4), z_dim=2, network={"name": "mlp", "hidden": [8]})
    x = torch.bernoulli(torch.full((30, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(1))
    model.fit(x, epochs=2, batch_size=10, progress=False)
    options = dict(num_samples=400, seed=3, progress=False, diagnostics=True)
    first = ppvae.log_evidence(model, x, batch_size=7, chunk_size=100, **options)
    again = ppvae.log_evidence(model, x, batch_size=7, chunk_size=100, **options)
    other = ppvae.log_evidence(model, x, batch_size=30, chunk_size=400, **options)
    assert torch.equal(first.log_evidence, again.log_evidence)
    assert not torch.equal(first.log_evidence, other.log_evidence)
    noise = (first.log_evidence - other.log_evidence).abs()
    assert noise.mean() < 0.1  # two draws of K = 400 on a model this small differ by noise alone
