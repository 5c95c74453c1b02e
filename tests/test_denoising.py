"""The generalized denoising autoencoder: corruption parts, the program with no latent site (and walkback), the
sampling chain, and the one-line refusals of what it cannot do."""

import pyro.poutine as poutine
import pytest
import torch

import ppvae
from ppvae.parts import CORRUPTIONS

SMALL = {"x_shape": (1, 8, 8), "code_dim": 16, "network": {"name": "mlp", "hidden": [32]}}


@pytest.mark.parametrize(("name", "level"), [("salt_pepper", 0.4), ("mask", 0.3), ("gaussian", 0.2)])
def test_each_corruption_draws_from_its_noise_at_its_level(name, level):
    x = torch.bernoulli(torch.full((400, 1, 8, 8), 0.5))
    noisy = CORRUPTIONS.build({"name": name, "level": level})(x)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1
    changed = (noisy != x).double().mean().item()
    # salt and pepper or a mask change half the pixels they hit; clipped noise moves only those it pushes inward
    expected = {"salt_pepper": level / 2, "mask": level / 2, "gaussian": 0.5}[name]
    assert changed == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "mask", "level": 1.0}, "below 1"),
        ({"name": "salt_pepper", "level": 0}, r"level must be in \(0, 1\]"),
        ({"name": "blur"}, "unknown corruption 'blur'; available: salt_pepper, gaussian, mask"),
    ],
)
def test_a_bad_corruption_is_one_line(spec, message):
    with pytest.raises(ValueError, match=message):
        ppvae.DenoisingAutoencoder(**SMALL, corruption=spec)


def test_the_program_scores_the_clean_image_given_its_corruption_and_walkback_scores_more_steps():
    model = ppvae.DenoisingAutoencoder(**SMALL, walkback=2)
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.5))
    trace = poutine.trace(model.model).get_trace(x, None, walkback=2)
    observed = [name for name, site in trace.nodes.items() if site["type"] == "sample" and site["is_observed"]]
    assert observed == ["x", "x_walkback_1", "x_walkback_2"]
    assert all(torch.equal(trace.nodes[name]["value"], x) for name in observed)  # each step scored against x
    plain = poutine.trace(model.model).get_trace(x, None)  # scoring: the denoising step alone
    assert [n for n, s in plain.nodes.items() if s["type"] == "sample" and s["is_observed"]] == ["x"]
    assert model.training_arguments == {"walkback": 2}


def test_it_learns_to_denoise_real_images_and_its_chain_runs_from_noise_and_from_test_images(fashion):
    train, test = fashion
    model = ppvae.DenoisingAutoencoder(corruption={"name": "salt_pepper", "level": 0.3}, walkback=1)
    model.fit(train.subset(3000), epochs=5, test=test.subset(200), progress=False)
    grey = test.x[:200]  # what a binarised image is on average: the clean image the denoiser should predict
    corrupted = model.corruption(model.prepare(test.subset(200)))
    denoised = model.reconstruct(test.subset(200))
    assert (denoised - grey).abs().mean() < 0.75 * (corrupted - grey).abs().mean()
    assert model.history[-1]["test_elbo"] > model.history[0]["test_elbo"]  # log p(x | x~) rises
    chain = model.chain(8, steps=20, burn_in=10, thin=5)
    assert chain.shape == (2, 8, 1, 28, 28) and 0 <= chain.min() and chain.max() <= 1
    assert torch.equal(chain, model.chain(8, steps=20, burn_in=10, thin=5))  # the seed fixes it
    states = model.chain(test.subset(4), steps=3, means=False)
    assert states.shape == (3, 4, 1, 28, 28) and set(states.unique().tolist()) <= {0.0, 1.0}
    assert model.sample(3).shape == (3, 1, 28, 28)
    scores = model.evaluate(test.subset(100))
    assert scores["elbo"] == pytest.approx(scores["reconstruction"]) and scores["elbo"] < 0  # log p(x | x~)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.chain(4, steps=0), "steps must be a whole number >= 1"),
        (lambda m: m.chain(4, steps=5, burn_in=5), "leaves none of the 5 steps"),
        (lambda m: ppvae.log_evidence(m, torch.zeros(2, 1, 8, 8)), "no tractable p\\(x\\)"),
        (lambda m: m.evaluate(torch.zeros(2, 1, 8, 8), num_samples=10), "no tractable p\\(x\\)"),
        (lambda m: m.sample(2, y=1), "not conditional"),
        (lambda m: ppvae.DenoisingAutoencoder(**{**SMALL, "walkback": -1}), "walkback must be"),
    ],
)
def test_what_it_cannot_do_is_one_line(call, message):
    with pytest.raises(ValueError, match=message):
        call(ppvae.DenoisingAutoencoder(**SMALL))


def test_the_cli_trains_a_dae_with_a_corruption_flag_and_samples_its_chain(tmp_path, capsys, fashion):
    from ppvae.cli import main

    out = tmp_path / "dae"
    flags = ["--model", "dae", "--corruption", "mask", "--corruption-level", "0.4", "--limit", "300"]
    assert main(["train", *flags, "--test-limit", "50", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    model = ppvae.load(out)
    assert model.specs["corruption"] == {"name": "mask", "level": 0.4}
    assert main(["sample", str(out), "-n", "4"]) == 0
    assert main(["evaluate", str(out), "--num-samples", "10"]) == 2
    assert "no tractable p(x)" in capsys.readouterr().err


def test_compare_gives_it_a_row_with_its_blanks_explained(tmp_path):
    from conftest import small_data

    data = small_data(120)
    dae = ppvae.DenoisingAutoencoder(**SMALL).fit(data, epochs=1, progress=False)
    vae = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]}).fit(
        data, epochs=1, progress=False
    )
    comparison = ppvae.compare({"dae": dae, "vae": vae}, data[:40], num_samples=5, out=tmp_path, show=False)
    rows = {row["model"]: row for row in comparison.rows}
    assert rows["dae"]["log_px"] is None and rows["dae"]["elbo"] is None and rows["vae"]["log_px"] is not None
    assert "no tractable" not in comparison.to_markdown() and "p(x | x~)" in comparison.to_markdown()
    assert rows["dae"]["sample_mmd"] >= 0


def test_the_chain_keeps_the_steps_asked_for():
    model = ppvae.DenoisingAutoencoder(**SMALL)
    every = model.chain(3, steps=6)
    assert torch.equal(model.chain(3, steps=6, keep=[2, 5]), every[[1, 4]])
    assert torch.equal(model.chain(3, steps=6, burn_in=2, thin=2), every[[3, 5]])
    with pytest.raises(ValueError, match="keep lists steps from 1 to 6"):
        model.chain(3, steps=6, keep=[0, 7])
