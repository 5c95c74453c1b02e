"""A hierarchy of stochastic layers, declared as data: ``VAE(z_dim=[64, 32])`` is the two-layer VAE of Burda et al.

The programs have one sample site per layer in the right order and dependence; every evidence estimator agrees with
quadrature, exact for a two-layer model of one dimension per layer; the model learns, loads and resumes; the toolkit
reads any layer; and what makes no sense is refused in one line.
"""

import json

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from conftest import bars

import ppvae
from ppvae.cli import main

TINY = {"x_shape": (1, 8, 8), "network": {"name": "mlp", "hidden": [32]}, "layer_hidden": [16]}


def test_one_sample_site_per_layer_top_down_in_the_model_and_bottom_up_in_the_guide():
    model = ppvae.VAE(z_dim=[6, 4, 3], **TINY)
    x = bars(5).x
    guide = poutine.trace(model.guide).get_trace(x)
    replayed = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x)
    sites = [name for name, site in guide.nodes.items() if site["type"] == "sample" and name != "data"]
    assert sites == ["z1", "z2", "z3"]
    assert [n for n, s in replayed.nodes.items() if s["type"] == "sample" and n != "data"] == ["z3", "z2", "z1", "x"]
    assert [guide.nodes[n]["value"].shape for n in sites] == [(5, 6), (5, 4), (5, 3)]
    assert model.latent_sizes == {"z1": 6, "z2": 4, "z3": 3} and model.z_dim == 6
    # p(z1 | z2) follows z2, and q(z2 | z1) follows z1: each layer is conditioned on its neighbour
    other = poutine.trace(poutine.condition(model.model, data={"z2": torch.ones(5, 4) * 3})).get_trace(x)
    assert not torch.allclose(other.nodes["z1"]["fn"].mean, replayed.nodes["z1"]["fn"].mean)
    moved = poutine.trace(poutine.condition(model.guide, data={"z1": torch.ones(5, 6) * 3})).get_trace(x)
    assert not torch.allclose(moved.nodes["z2"]["fn"].mean, guide.nodes["z2"]["fn"].mean)


def test_one_layer_is_the_vae_as_before():
    one = ppvae.VAE(z_dim=4, **TINY)
    assert one.latent_sizes == {"z": 4} and one.config()["z_dim"] == 4
    assert not any(name.startswith(("layers", "upper_guides", "layer_priors")) for name in one.state_dict())


@pytest.fixture(scope="module")
def trained_two_layers():
    """A two-layer VAE with one dimension per layer, trained on three kinds of bars: quadrature is exact for it."""
    model = ppvae.VAE(z_dim=[1, 1], **TINY)
    model.fit(bars(300), epochs=15, batch_size=50, lr=3e-3, progress=False, seed=1)
    return model


def test_every_estimator_agrees_with_quadrature_on_two_layers(trained_two_layers):
    model, x = trained_two_layers, bars(12, seed=5).x
    exact = ppvae.log_evidence(model, x, method="quadrature", progress=False).double()
    importance = ppvae.log_evidence(model, x, 5000, seed=0, progress=False, diagnostics=True)
    error = (importance.log_evidence - exact).abs()
    assert error.max() < 0.1 and error.mean() < 0.03
    ais = ppvae.log_evidence(model, x, method="ais", steps=100, seed=0, progress=False)
    assert (ais - exact).mean().abs() < 0.03 and (ais - exact).abs().max() < 0.2  # 16 chains: noisy per image
    # the per-example ELBO of a hierarchy is one draw (no closed-form KL); over 200 draws, a bound on every image
    elbo = torch.stack([model.elbo_terms(x, seed=seed)["elbo"] for seed in range(200)]).double().mean(0)
    assert (elbo < exact).all()


def test_a_hierarchy_learns_and_its_layers_both_carry_information(trained_two_layers):
    model = trained_two_layers
    assert model.history[-1]["train_elbo"] > model.history[0]["train_elbo"] + 3
    codes = model.encode(bars(90, seed=2), site="all")
    assert set(codes) == {"z1", "z2"} and codes["z2"].shape == (90, 1)
    labels = bars(90, seed=2).y
    means = torch.stack([codes["z1"][labels == k].mean() for k in range(3)])
    assert means.max() - means.min() > 0.5  # z1 separates the three kinds of bars


def test_the_toolkit_reads_and_decodes_any_layer(trained_two_layers):
    model = trained_two_layers
    top = model.encode(bars(6).x, site="z2")
    assert model.decode(top, site="z2").shape == (6, 1, 8, 8)
    below = model.descend(top, "z2")
    assert torch.allclose(model.decode(top, site="z2"), model.decode(below))
    assert ppvae.latent.encodings(model, bars(6), site="z2")[0].shape == (6, 1)
    with pytest.raises(ValueError, match="no latent site 'z3'; its sites: z1, z2"):
        model.decode(top, site="z3")


def test_a_conditional_hierarchy_samples_the_class_asked_for():
    data = bars(300)
    model = ppvae.CVAE(num_classes=3, z_dim=[2, 2], **TINY)
    model.fit(data, epochs=15, batch_size=50, lr=3e-3, progress=False)
    samples = model.sample(60, y=torch.arange(60) % 3, seed=0)[:, 0]
    kinds = torch.arange(60) % 3
    top, bottom = samples[:, :4].mean((1, 2)), samples[:, 4:].mean((1, 2))
    left, right = samples[:, :, :4].mean((1, 2)), samples[:, :, 4:].mean((1, 2))
    assert (top > bottom)[kinds == 0].float().mean() >= 0.8  # chance: 0.5
    assert (bottom > top)[kinds == 1].float().mean() >= 0.8
    assert (left > right)[kinds == 2].float().mean() >= 0.8


def test_a_hierarchy_is_saved_loaded_and_resumed_exactly(tmp_path):
    data = bars(100)
    straight = ppvae.VAE(z_dim=[3, 2], **TINY).fit(data, epochs=2, progress=False, out=tmp_path / "straight")
    ppvae.VAE(z_dim=[3, 2], **TINY).fit(data, epochs=1, progress=False, out=tmp_path / "resumed")
    resumed = ppvae.load(tmp_path / "resumed")
    resumed.fit(data, epochs=2, progress=False, out=tmp_path / "resumed", resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    spec = json.loads((tmp_path / "straight" / "spec.json").read_text())
    assert spec["config"]["z_dim"] == [3, 2] and spec["config"]["layer_hidden"] == [16]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"z_dim": [64, 0]}, "one positive integer per stochastic layer"),
        ({"z_dim": []}, "one positive integer per stochastic layer"),
        ({"z_dim": [4, 2], "prior": "vamp"}, "with several layers take prior='normal'"),
        ({"z_dim": [4, 2], "layer_hidden": [0]}, "layer_hidden widths must be positive"),
    ],
)
def test_a_hierarchy_that_makes_no_sense_is_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        ppvae.VAE(**{**TINY, **options})


def test_the_mean_field_elbo_is_refused_for_dependent_layers():
    with pytest.raises(ValueError, match=r"elbo='meanfield' .* biased .* \(the layers z1, z2\)"):
        ppvae.VAE(z_dim=[2, 2], **TINY).fit(bars(20), elbo="meanfield", progress=False)


def test_iwae_trains_a_hierarchy():
    model = ppvae.VAE(z_dim=[2, 2], **TINY).fit(bars(100), elbo="iwae", num_particles=5, epochs=3, progress=False)
    assert model.history[-1]["train_iwae"] > model.history[0]["train_iwae"]


def test_the_cli_and_a_spec_file_declare_a_hierarchy(tmp_path):
    data = tmp_path / "bars.npy"
    np.save(data, (bars(120).x[:, 0] * 255).to(torch.uint8).numpy())
    out = tmp_path / "run"
    flags = ["--data", str(data), "--hidden", "16", "--epochs", "1", "--quiet"]
    assert main(["train", *flags, "--z-dim", "4", "2", "--layer-hidden", "8", "--out", str(out)]) == 0
    assert json.loads((out / "spec.json").read_text())["config"]["z_dim"] == [4, 2]
    assert main(["evaluate", str(out), "--num-samples", "10", "--quiet"]) == 0
    assert "log_px" in json.loads((out / "evaluation.json").read_text())
    spec = tmp_path / "spec.toml"
    spec.write_text("[model]\nz_dim = [3, 2]\nlayer_hidden = [8]\n")
    assert main(["train", *flags, "--spec", str(spec), "--out", str(tmp_path / "toml")]) == 0
    assert ppvae.load(tmp_path / "toml").latent_sizes == {"z1": 3, "z2": 2}
    assert main(["train", *flags, "--z-dim", "4", "0", "--out", str(tmp_path / "bad")]) == 2


def test_the_latent_toolkit_spans_sweeps_and_interpolates_any_layer():
    model = ppvae.VAE(z_dim=[3, 2], **TINY).fit(bars(100), epochs=2, progress=False)
    images, spacing = ppvae.latent.manifold(model, steps=4, site="z2")
    assert images.shape == (4, 4, 1, 8, 8) and spacing == "the prior's quantiles"  # z2 is the top: p(z2) spans it
    images, spacing = ppvae.latent.manifold(model, steps=4, data=bars(50))  # z1's prior is conditional on z2
    assert spacing == "quantiles of the data's latent means"
    with pytest.raises(ValueError, match="the layer z1 .* pass data"):
        ppvae.latent.manifold(model, steps=4, site="z1")
    assert ppvae.latent.traverse(model, steps=5, site="z2").shape == (2, 5, 1, 8, 8)
    assert ppvae.latent.traverse(model, steps=5).shape == (3, 5, 1, 8, 8)
    path, _ = ppvae.latent.interpolate(model, bars(2).x[0], bars(2).x[1], steps=6, site="z2")
    assert path.shape == (6, 1, 8, 8)
    assert ppvae.latent.active_units(model, bars(60), site="z2").variance.shape == (2,)
    with pytest.raises(ValueError, match="latent dimensions must be distinct and in 0..1"):
        ppvae.latent.traverse(model, dims=[2], site="z2")
