"""The latent-space figures: each kind one call, one PNG; the walks they draw checked against the model."""

import numpy as np
import pytest
import torch
from conftest import SMALL, bars
from PIL import Image

import ppvae
from ppvae import latent
from ppvae.cli import main


@pytest.fixture(scope="module")
def fitted():
    """A small VAE trained on the three kinds of bars, with snapshots after epochs 1 and 4."""
    train, test = bars(600), bars(150, seed=1)
    model = ppvae.VAE(**SMALL)
    model.fit(train, epochs=4, batch_size=50, lr=3e-3, test=test, snapshot_epochs=[1, 4], progress=False)
    return model, test


@pytest.mark.parametrize("kind", sorted(ppvae.plots.KINDS))
def test_every_kind_writes_a_png(kind, fitted, tmp_path):
    model, test = fitted
    options = {"source": "top", "target": "left"} if kind == "attribute" else {}
    path = ppvae.plot(model, kind, test, tmp_path, **options)
    assert path == tmp_path / f"{kind}.png"
    with Image.open(path) as image:
        assert image.size[0] >= 300 and image.size[1] >= 150


def test_the_walks_agree_with_the_model(fitted):
    model, test = fitted
    x = model.prepare(test)[:2]
    grid, spacing = latent.manifold(model, steps=5)
    assert grid.shape == (5, 5, 1, 8, 8) and spacing == "the prior's quantiles"
    middle = model.decode(torch.zeros(1, 2))  # the grid's centre is z = 0 (the prior's median)
    assert torch.allclose(grid[2, 2], middle[0].cpu(), atol=1e-6)
    rows = latent.traverse(model, dims=[1], steps=3, span=2.0)
    assert torch.allclose(rows[0, 0], model.decode(torch.tensor([[0.0, -2.0]]))[0].cpu(), atol=1e-6)
    through_z, pixels = latent.interpolate(model, x[0], x[1], steps=4)
    assert torch.allclose(through_z[0], model.reconstruct(x[:1])[0].cpu(), atol=1e-6)
    assert torch.equal(pixels[0], x[0].cpu()) and torch.equal(pixels[-1], x[1].cpu())
    data = ppvae.data.ImageDataset(model.prepare(test), test.y, "bars", "test", test.classes)
    moved = latent.attribute(model, data, "top", "left", data.x[:3], strengths=(0.0, 1.0))
    assert torch.allclose(moved[:, 0], model.reconstruct(data.x[:3]).cpu(), atol=1e-6)
    scales, mean, spread = latent.uncertainty(model, x, draws=8)
    assert scales.shape == (2, 2) and mean.shape == spread.shape == (2, 1, 8, 8) and (spread >= 0).all()


def test_snapshots_are_kept_saved_and_reloaded(fitted, tmp_path):
    model, test = fitted
    assert sorted(model.fit_record.snapshots) == [1, 4] and model.fit_record.snapshots[4].shape == (150, 2)
    assert not torch.equal(
        model.fit_record.snapshots[1], model.fit_record.snapshots[4]
    )  # the latent space moved during training
    assert torch.allclose(model.fit_record.snapshots[4], model.encode(model.prepare(test)).cpu(), atol=1e-5)
    model.save(tmp_path / "run", figures=False)
    loaded = ppvae.load(tmp_path / "run")
    assert torch.equal(loaded.fit_record.snapshots[1], model.fit_record.snapshots[1]) and torch.equal(
        loaded.fit_record.snapshot_labels, test.y
    )
    with pytest.raises(ValueError, match="pass test="):
        ppvae.VAE(**SMALL).fit(bars(50), epochs=1, snapshot_epochs=[1], progress=False)
    with pytest.raises(ValueError, match="snapshot_epochs"):
        ppvae.VAE(**SMALL).fit(bars(50), epochs=1, snapshot_epochs=[0], test=bars(10), progress=False)


def test_figures_say_what_they_need():
    model = ppvae.VAE(**{**SMALL, "prior": {"name": "mixture", "components": 3}})
    with pytest.raises(ValueError, match="no quantile function"):
        latent.manifold(model)
    assert latent.manifold(model, steps=3, data=bars(30).x)[0].shape == (3, 3, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown figure"):
        ppvae.plot(model, "tsne-plot", bars(10))
    with pytest.raises(ValueError, match="kept no snapshots"):
        ppvae.plot(model, "training", bars(10))
    with pytest.raises(ValueError, match="unknown label 'boots'; known: top, bottom, left"):
        latent.attribute(model, bars(30), "top", "boots", bars(30).x[:2])
    with pytest.raises(ValueError, match=r"label 7 is outside 0..2"):
        latent.attribute(model, bars(30), "top", 7, bars(30).x[:2])
    cvae = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2)
    with pytest.raises(ValueError, match="pass y"):
        latent.traverse(cvae)
    assert latent.traverse(cvae, y=1, steps=3).shape == (2, 3, 1, 8, 8)


def test_the_cli_draws_kinds_into_the_run(tmp_path, capsys):
    images = tmp_path / "images.npy"
    np.save(images, (bars(120).x.numpy() * 255).astype(np.uint8))
    main(
        [
            "train",
            "--data",
            str(images),
            "--z-dim",
            "2",
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--snapshot-epochs",
            "1",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    assert main(["plot", str(tmp_path / "run"), "manifold", "traverse", "training", "interpolate"]) == 0
    for kind in ("manifold", "traverse", "training", "interpolate"):
        assert (tmp_path / "run" / f"{kind}.png").stat().st_size > 0
    assert main(["plot", str(tmp_path / "run"), "attribute"]) == 2  # unlabelled data: a message, not a traceback
    assert "labelled" in capsys.readouterr().err
