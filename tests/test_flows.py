"""Normalizing flows as parts: a flow prior that is a density, a flow guide that scores any point it could draw and
fits what its base family cannot, evidence estimates that agree with quadrature, and one line for what cannot work."""

import math

import pytest
import torch
from conftest import bars

import ppvae
from ppvae.cli import main
from ppvae.parts import GUIDES, PRIORS

TINY = {"x_shape": (1, 8, 8), "network": {"name": "mlp", "hidden": [32]}}


def scrambled(part, seed=0, scale=0.15):
    """``part`` with every parameter redrawn away from the identity map its flow starts near."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in part.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return part


@pytest.mark.parametrize("transform", ["affine_coupling", "spline_coupling", "affine_autoregressive"])
def test_a_flow_prior_is_a_density_that_integrates_to_one(transform):
    prior = scrambled(PRIORS.build({"name": "flow", "transform": transform, "layers": 3}, z_dim=2))
    axis = torch.linspace(-12, 12, 481)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_density = prior().log_prob(grid)
        mass = log_density.exp().sum() * (axis[1] - axis[0]) ** 2
        standard = torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(-1)
        assert (log_density - standard)[standard > -6].abs().max() > 0.3  # not the base it started from
        draws = prior().sample((5,))
        assert torch.allclose(prior().log_prob(draws), prior().log_prob(draws.clone()), atol=1e-4)
    assert abs(mass.item() - 1) < 0.01


@pytest.mark.parametrize("transform", ["affine_coupling", "affine_autoregressive", "spline_autoregressive", "spline"])
def test_a_flow_guide_scores_any_point_as_it_scores_its_own_draws(transform):
    guide = scrambled(GUIDES.build({"name": "flow", "transform": transform}, z_dim=3))
    h = torch.randn(4, guide.width)
    q = guide(h)
    z = q.rsample()
    with torch.no_grad():
        assert torch.allclose(q.log_prob(z), guide(h).log_prob(z.clone()), atol=1e-4)  # the inverse, not the cache
    assert guide.scores_any_point


def banana_log_density(z):
    """A curved 2-D target: z1 ~ N(0, 1), z2 | z1 ~ N(z1^2 - 1, 0.3^2)."""
    return torch.distributions.Normal(0.0, 1.0).log_prob(z[..., 0]) + torch.distributions.Normal(
        z[..., 0] ** 2 - 1, 0.3
    ).log_prob(z[..., 1])


def fitted_elbo(spec, steps=600):
    """The ELBO of the family ``spec`` fitted to the banana by its encoder output alone (one x)."""
    torch.manual_seed(0)
    family = GUIDES.build(spec, z_dim=2)
    h = torch.zeros(1, family.width, requires_grad=True)
    optimizer = torch.optim.Adam([h, *family.parameters()], lr=0.02)
    for _ in range(steps):
        q = family(h)
        z = q.rsample((64,))
        loss = -(banana_log_density(z) - q.log_prob(z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        q = family(h)
        z = q.sample((20000,))
        return (banana_log_density(z) - q.log_prob(z)).mean().item()  # log Z = 0, so -KL(q || target)


def test_a_flow_guide_fits_a_curved_posterior_its_base_family_cannot():
    normal = fitted_elbo("normal")
    flow = fitted_elbo({"name": "flow", "transform": "affine_autoregressive", "layers": 4})
    assert normal < -0.3  # a normal misses the curve: KL(q || p) well above 0
    assert flow > normal + 0.2 and flow < 0.01


@pytest.fixture(scope="module")
def trained_flows():
    """A VAE with a flow prior and a flow guide on a 2-D latent space, trained on three kinds of bars."""
    model = ppvae.VAE(z_dim=2, prior={"name": "flow", "layers": 2}, guide="flow", **TINY)
    model.fit(bars(300), epochs=12, batch_size=50, lr=3e-3, progress=False, seed=1)
    return model


def test_every_estimator_agrees_with_quadrature_on_a_flow_model(trained_flows):
    model, x = trained_flows, bars(10, seed=5).x
    exact = ppvae.log_evidence(model, x, method="quadrature", progress=False).double()
    importance = ppvae.log_evidence(model, x, 40000, seed=0, progress=False)  # k-hat up to 0.8: K large
    assert (importance - exact).abs().max() < 0.08 and (importance - exact).abs().mean() < 0.03
    defensive = ppvae.log_evidence(model, x, 40000, proposal="defensive", seed=0, progress=False)
    assert (defensive - exact).abs().max() < 0.08
    ais = ppvae.log_evidence(model, x, method="ais", steps=100, seed=0, progress=False)
    assert (ais - exact).mean().abs() < 0.03 and (ais - exact).abs().max() < 0.2
    elbo = torch.stack([model.elbo_terms(x, seed=seed)["elbo"] for seed in range(100)]).double().mean(0)
    assert (elbo < exact).all()


def test_encode_reads_a_flow_guide_at_its_base_location_carried_through_the_flow(trained_flows):
    model, x = trained_flows, bars(6).x
    loc, scale = model.encode(x, return_scale=True)
    h = model.networks.encoder(x)
    base_loc, _ = model.guide_family.loc_scale(h)
    q = model.guide_family(h)
    carried = base_loc
    for transform in q.transforms:
        carried = transform(carried)
    assert torch.allclose(loc, carried, atol=1e-5) and (scale > 0).all()


def test_a_guide_that_scores_only_its_own_draws_trains_and_is_refused_where_points_are_not_its_own():
    model = ppvae.VAE(z_dim=3, guide={"name": "flow", "transform": "neural_autoregressive"}, **TINY)
    model.fit(bars(100), epochs=2, progress=False)
    assert not model.capabilities.scores_any_point
    x = bars(4).x
    assert ppvae.log_evidence(model, x, 50, progress=False).isfinite().all()  # its own draws: fine
    with pytest.raises(ValueError, match="AIS from the guide .* scores only its own draws .* proposal='prior'"):
        ppvae.log_evidence(model, x, method="ais", steps=5, progress=False)
    with pytest.raises(ValueError, match="defensive proposal .* scores only its own draws"):
        ppvae.log_evidence(model, x, 50, proposal="defensive", progress=False)
    with pytest.raises(ValueError, match="scores only its own draws"):
        ppvae.bdmc(model, num_images=2, steps=5, progress=False)
    assert ppvae.log_evidence(model, x, method="ais", steps=5, proposal="prior", progress=False).isfinite().all()


@pytest.mark.parametrize(
    ("kind", "spec", "z_dim", "message"),
    [
        ("guide", {"name": "flow", "base": "delta"}, 2, "a flow on the point-mass guide 'delta' has no density"),
        ("guide", {"name": "flow", "base": "flow"}, 2, "a guide family .* not another flow"),
        ("guide", {"name": "flow", "transform": "spline_coupling"}, 2, "unknown transform .*; available: affine_c"),
        ("guide", {"name": "flow", "transform": "affine_coupling"}, 1, "needs at least 2 latent dimensions, got 1"),
        ("prior", {"name": "flow", "transform": "neural_autoregressive"}, 2, "unknown transform 'neural_autor"),
        ("prior", {"name": "flow", "layers": 0}, 2, "layers must be a positive integer"),
        ("prior", {"name": "flow", "hidden": []}, 2, "hidden must list positive widths"),
    ],
)
def test_a_flow_that_cannot_work_is_refused_in_one_line(kind, spec, z_dim, message):
    with pytest.raises(ValueError, match=message):
        ppvae.VAE(z_dim=z_dim, **{kind: spec}, **TINY)


def test_flows_are_parts_like_any_other_on_the_command_line(tmp_path, capsys):
    assert main(["parts"]) == 0
    listed = capsys.readouterr().out
    assert "flow" in listed and "transform='affine_coupling'" in listed
    data = tmp_path / "bars.npy"
    import numpy as np

    np.save(data, (bars(120).x[:, 0] * 255).to(torch.uint8).numpy())
    out = tmp_path / "run"
    flags = ["--data", str(data), "--hidden", "16", "--epochs", "1", "--quiet", "--out", str(out), "--z-dim", "2"]
    assert main(["train", *flags, "--prior", "flow", "--prior-layers", "2", "--guide", "flow"]) == 0
    model = ppvae.load(out)
    assert model.prior.transform == "affine_coupling" and len(model.prior.transforms) == 2
    assert main(["evaluate", str(out), "--method", "quadrature", "--quiet"]) == 0
    assert math.isfinite(ppvae.load(out).evaluate(bars(5), method="quadrature")["log_px"])
