"""ppvae.compare: each model on its own representation of one test set, side by side."""

import pytest
import torch

import ppvae


def grey_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 4, 4), generator=g).float() / 255


def test_compare_scores_each_model_on_its_representation(tmp_path, capsys):
    train, test = grey_images(300), ppvae.data.ImageDataset(grey_images(60, seed=1), torch.arange(60) % 3)
    fa = ppvae.FactorAnalysis(x_shape=(1, 4, 4), z_dim=2)
    fa.fit(ppvae.data.dequantize(train))
    vae = ppvae.VAE(x_shape=(1, 4, 4), z_dim=2, network={"name": "mlp", "hidden": [8]})
    vae.fit(train, epochs=1, progress=False)
    comparison = ppvae.compare({"fa": fa, "vae": vae}, test, num_samples=5, out=tmp_path, progress=False)
    printed = capsys.readouterr().out
    assert printed.strip() == comparison.to_markdown().strip() == str(comparison).strip()
    fa_row, vae_row = comparison.rows
    assert (fa_row["data"], fa_row["method"]) == ("dequantised", "exact")
    assert (vae_row["data"], vae_row["method"]) == ("binarised", "IS, K=5")
    # FA's exact log p(x) of the dequantised test images, with the same seed compare uses
    exact = fa.log_evidence(ppvae.data.dequantize(test, seed=0)).mean().item()
    assert fa_row["log_px"] == pytest.approx(exact)
    assert fa_row["parameters"] == fa.num_parameters() and vae_row["fit_seconds"] > 0
    samples = fa.sample(60, seed=0).clamp(0, 1)  # the MMD column: samples against the grey test images
    assert fa_row["sample_mmd"] == pytest.approx(ppvae.latent.mmd(samples, test.x)) and "MMD²" in printed
    assert sorted(comparison.figures) == ["latent", "reconstructions", "samples"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in comparison.figures.values())


def test_compare_refuses_models_of_different_shapes():
    with pytest.raises(ValueError, match="different shapes"):
        ppvae.compare([ppvae.VAE(x_shape=(1, 4, 4), z_dim=2), ppvae.VAE(x_shape=(1, 8, 8), z_dim=2)], grey_images(4))
    with pytest.raises(ValueError, match="at least one model"):
        ppvae.compare({}, grey_images(4))
