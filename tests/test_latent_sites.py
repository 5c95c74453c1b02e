"""Several latent sites: a hand-written linear-Gaussian chain z2 -> z1 -> x, whose marginal is known in closed form,
scored by every estimator (per-example ELBO, importance sampling, the defensive proposal, AIS, BDMC, quadrature)
and read by encode, through ppvae's front door as a model would be.

    z2 ~ N(0, 1),   z1 | z2 ~ N(a z2, s^2),   x | z1 ~ N(W z1 + b, diag(psi))
    =>  z1 ~ N(0, v) with v = a^2 + s^2,      x ~ N(b, v W W^T + diag(psi))

The guide is hierarchical the other way, q(z1 | x) q(z2 | z1): the exact posterior of each, widened and shifted so
that importance sampling has work to do.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.infer import ais_log_evidence, estimate_log_evidence, quadrature_log_evidence
from ppvae.infer.traces import LatentSpace

D = 6
A, S = 0.8, 0.6
V = A**2 + S**2
g = torch.Generator().manual_seed(3)
W = torch.randn(D, generator=g)
B = torch.randn(D, generator=g) * 0.3
PSI = torch.rand(D, generator=g) * 0.4 + 0.3


def chain_model(x, c=None, kl_weight=1.0):
    with pyro.plate("data", x.shape[0]):
        z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
        z1 = pyro.sample("z1", dist.Normal(A * z2, S))
        mean = z1[..., None] * W + B
        pyro.sample("x", dist.Normal(mean, PSI.sqrt()).to_event(1), obs=x.reshape(x.shape[0], D))


def chain_guide(x, c=None, kl_weight=1.0, widen=1.3, shift=0.2):
    x = x.reshape(x.shape[0], D)
    precision = 1 / V + (W**2 / PSI).sum()
    mean = ((x - B) * W / PSI).sum(-1) / precision
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(mean + shift, widen * precision.rsqrt()))
        pyro.sample("z2", dist.Normal(A * z1 / V + shift, widen * math.sqrt(S**2 / V)))


def exact_log_evidence(x):
    covariance = V * torch.outer(W, W) + torch.diag(PSI)
    return dist.MultivariateNormal(B.double(), covariance.double()).log_prob(x.reshape(x.shape[0], D).double())


def images(n=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, generator=generator) * math.sqrt(V)
    return z1[:, None] * W + B + torch.randn(n, D, generator=generator) * PSI.sqrt()


def test_the_latent_space_lays_the_sites_end_to_end():
    x = images(4)
    space = LatentSpace(chain_model, chain_guide, x, None)
    assert space.names == ["z2", "z1"] and space.dim == 2 and space.observed == ["x"]
    z = torch.randn(3, 4, 2)
    assert torch.equal(space.join(space.split(z)), z)
    log_prior, log_likelihood = space.log_joint(z)
    by_hand = dist.Normal(0.0, 1.0).log_prob(z[..., 0]) + dist.Normal(A * z[..., 0], S).log_prob(z[..., 1])
    assert torch.allclose(log_prior, by_hand, atol=1e-5) and log_likelihood.shape == (3, 4)
    with pytest.raises(ValueError, match="at most 1 latent dimensions in all; the latent sites z2, z1 have 2"):
        space.require("quadrature", max_dim=1)


def test_importance_sampling_matches_the_closed_form_within_its_error():
    x, exact = images(), exact_log_evidence(images())
    torch.manual_seed(0)
    estimate = estimate_log_evidence(chain_model, chain_guide, x, num_samples=2000, diagnostics=True)
    error = estimate.log_evidence - exact
    assert error.abs().max() < 0.05 and error.mean().abs() < 0.02
    torch.manual_seed(0)
    one = estimate_log_evidence(chain_model, chain_guide, x, num_samples=1).log_evidence
    assert (one - exact).mean() < -0.05  # K = 1 is the ELBO: below log p(x), as it must be


def test_the_defensive_proposal_mixes_whole_draws_of_every_site():
    x, exact = images(), exact_log_evidence(images())
    torch.manual_seed(0)
    estimate = estimate_log_evidence(chain_model, chain_guide, x, num_samples=4000, proposal="defensive")
    assert (estimate.log_evidence - exact).abs().max() < 0.05


def test_ais_over_both_sites_matches_the_closed_form_within_its_standard_errors():
    x, exact = images(), exact_log_evidence(images())
    torch.manual_seed(0)
    for start in ("prior", "guide"):
        estimate = ais_log_evidence(chain_model, chain_guide, x, chains=16, steps=200, leapfrog_steps=5, start=start)
        error = estimate.log_evidence - exact
        assert (error.abs() < 4 * estimate.standard_error + 0.02).all(), (start, error, estimate.standard_error)
        assert estimate.acceptance.mean() > 0.5


def test_quadrature_integrates_two_one_dimensional_sites_exactly():
    x, exact = images(8), exact_log_evidence(images(8))
    estimate = quadrature_log_evidence(chain_model, chain_guide, x, batch_size=8)
    assert torch.allclose(estimate.log_evidence, exact, atol=1e-3) and estimate.error.max() < 1e-3


@pytest.fixture(scope="module")
def chain():
    """The chain as a ppvae model: its two programs and a capabilities line (defined here, so that the library's
    own table of models holds it only while these tests run)."""

    class Chain(ppvae.LatentVariableModel):
        capabilities = ppvae.Capabilities()

        def __init__(self, x_shape=(1, 1, D)):
            super().__init__(x_shape, z_dim=1)
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # a model has weights; these programs use none

        def config(self):
            return {"x_shape": list(self.x_shape)}

        def model(self, x=None, c=None, kl_weight=1.0):
            chain_model(x, c)

        def guide(self, x=None, c=None, kl_weight=1.0):
            chain_guide(x, c)

        def likelihood_mean(self, z, c=None):
            return (z.reshape(-1, 1) * W + B).reshape(-1, *self.x_shape)

    yield Chain()
    del ppvae.MODELS["Chain"]


def test_the_front_door_scores_a_model_of_several_sites_by_every_method(chain):
    x, exact = images(), exact_log_evidence(images())
    by_is = ppvae.log_evidence(chain, x, num_samples=2000, binarize=None, progress=False)
    by_ais = ppvae.log_evidence(chain, x, method="ais", steps=200, chains=16, binarize=None, progress=False)
    by_quadrature = ppvae.log_evidence(chain, x[:8], method="quadrature", binarize=None, progress=False)
    assert (by_is - exact).abs().max() < 0.05 and (by_ais - exact).abs().max() < 0.1
    assert torch.allclose(by_quadrature, exact[:8], atol=1e-3)
    terms = chain.elbo_terms(x, binarize=None)
    assert (terms["elbo"] < exact).float().mean() > 0.5 and torch.isfinite(terms["kl"]).all()  # sampled KL: noisy


def test_bdmc_brackets_the_evidence_of_a_two_site_model(chain):
    simulated, estimate = ppvae.bdmc(chain, num_images=20, chains=8, steps=200, leapfrog_steps=5, progress=False)
    truth = exact_log_evidence(simulated)
    gap = estimate.upper - estimate.log_evidence
    assert gap.mean() < 0.1  # AIS with these settings is accurate on this model's own data
    assert (estimate.log_evidence - truth).mean() < 0.05 and (estimate.upper - truth).mean() > -0.05  # below, above


def test_encode_reads_every_site_each_given_its_parents_location(chain):
    x = images(5)
    codes = chain.encode(x, binarize=None, site="all", return_scale=True)
    assert list(codes) == ["z1", "z2"]  # the guide's order
    z1, z1_scale = codes["z1"]
    precision = 1 / V + (W**2 / PSI).sum()
    expected = ((x - B) * W / PSI).sum(-1) / precision + 0.2
    assert torch.allclose(z1, expected, atol=1e-5) and torch.allclose(z1_scale, 1.3 * precision.rsqrt().expand(5))
    assert torch.allclose(codes["z2"][0], A * z1 / V + 0.2, atol=1e-5)  # z2's location at z1's location
    assert torch.equal(chain.encode(x, binarize=None), z1)  # by default: the guide's first site
    assert torch.equal(chain.encode(x, binarize=None, site="z2"), codes["z2"][0])
    with pytest.raises(ValueError, match="no latent site 'z3'; its sites: z1, z2"):
        chain.encode(x, binarize=None, site="z3")
