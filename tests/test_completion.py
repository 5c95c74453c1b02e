"""Image completion: the visible quadrants as the condition, the hidden pixels as the output."""

import numpy as np
import pyro.poutine as poutine
import pytest
import torch

import ppvae
from ppvae.cli import main
from ppvae.models.completion import quadrant_masks

SMALL_NET = {"name": "mlp", "hidden": [32]}


def two_kinds(n=384, seed=0):
    """8x8 binary images of two kinds that look alike in the bottom-left quadrant (dark in both):
    bright top rows, or bright right columns. One quadrant cannot tell them apart; two can."""
    g = torch.Generator().manual_seed(seed)
    p = torch.full((n, 1, 8, 8), 0.05)
    p[0::2, :, :4] = 0.95
    p[1::2, :, :, 4:] = 0.95
    return torch.bernoulli(p, generator=g)


def test_quadrant_masks_follow_pyros_tutorial():
    masks = quadrant_masks((1, 4, 4))
    assert [int(m.sum()) for m in masks] == [0, 4, 8, 12, 16]
    assert masks[1, 0, 2:, :2].all() and masks[1].sum() == 4  # 1: the bottom left
    assert masks[2, 0, :, :2].all() and masks[2].sum() == 8  # 2: the left half
    assert not masks[3, 0, 2:, 2:].any() and masks[3].sum() == 12  # 3: all but the bottom right
    assert (masks[1] <= masks[2]).all() and (masks[2] <= masks[3]).all()


@pytest.mark.parametrize("cls", [ppvae.CompletionVAE, ppvae.CompletionNetwork])
def test_only_the_hidden_pixels_are_scored(cls):
    model = cls(x_shape=(1, 8, 8), network=SMALL_NET)
    x = two_kinds(6)
    c = model.quadrant_condition(x, 2)
    assert c.shape == (6, 128) and model.hidden_pixels(c).sum() == 6 * 32

    def log_likelihood(images):  # log p(x | z, c) at a fixed z
        program = poutine.condition(model.model, data={"z": torch.zeros(6, 20)} if model.capabilities.latent else {})
        return poutine.trace(program).get_trace(images, c).nodes["x"]["fn"].log_prob(images)

    visible_changed, hidden_changed = x.clone(), x.clone()
    visible_changed[..., :4] = 1 - visible_changed[..., :4]
    hidden_changed[..., 4:] = 1 - hidden_changed[..., 4:]
    assert torch.equal(
        log_likelihood(x), log_likelihood(visible_changed)
    )  # c holds the visible pixels; x scores the rest
    assert not torch.allclose(log_likelihood(x), log_likelihood(hidden_changed))


def test_each_training_image_shows_a_number_of_quadrants_drawn_from_visible():
    x = two_kinds(300)
    shown = lambda model: model.condition(x, None, train=True)[:, 64:].sum(1) / 16  # noqa: E731 (quadrants shown per image)
    torch.manual_seed(0)
    counts = shown(ppvae.CompletionVAE(x_shape=(1, 8, 8), visible=(1, 2, 3)))
    assert set(counts.tolist()) == {1.0, 2.0, 3.0} and all((counts == k).sum() > 70 for k in (1, 2, 3))
    torch.manual_seed(0)
    assert torch.equal(counts, shown(ppvae.CompletionVAE(x_shape=(1, 8, 8))))  # from the seeded noise stream
    assert set(shown(ppvae.CompletionVAE(x_shape=(1, 8, 8), visible=[2])).tolist()) == {2.0}


def test_the_cvae_draws_either_kind_where_the_network_can_only_blur():
    train, test = two_kinds(768), two_kinds(90, seed=1)
    cvae = ppvae.CompletionVAE(
        x_shape=(1, 8, 8), z_dim=2, network=SMALL_NET, prior={"name": "conditional", "hidden": 32}
    )
    network = ppvae.CompletionNetwork(x_shape=(1, 8, 8), network=SMALL_NET)
    for model in (cvae, network):
        model.fit(train, epochs=40, batch_size=64, lr=3e-3, progress=False)

    def kind_contrast(completions):  # top-left minus bottom-right brightness of each completion: +-0.9 when decided
        return completions[..., :4, :4].mean((-1, -2, -3)) - completions[..., 4:, 4:].mean((-1, -2, -3))

    draws = kind_contrast(cvae.complete(test[:30], visible=1, samples=8))  # (30, 8)
    assert draws.abs().mean() > 0.5  # each draw is one kind or the other ...
    assert (draws > 0.3).any() and (draws < -0.3).any()  # ... and both kinds are drawn
    guess = kind_contrast(network.complete(test[:30], visible=1))
    assert guess.abs().mean() < 0.25  # the network's one guess is half of each: a blur
    cvae_scores = ppvae.completion_scores(cvae, test, num_samples=200, particles=2)
    network_scores = ppvae.completion_scores(network, test, particles=1)
    # one quadrant leaves the kind undecided: the network pays about log 2 on each of 32 pixels, the CVAE about once
    assert cvae_scores[1]["nll"] < network_scores[1]["nll"] - 10  # measured: 10.3 against 25.8 nats
    assert network_scores[1]["nll"] == pytest.approx(network_scores[1]["elbo_nll"])  # no latent: exact
    assert "khat_unreliable" not in network_scores[1] and all(
        0 <= cvae_scores[k]["khat_unreliable"] <= 1 for k in (1, 2, 3)
    )
    for k in (2, 3):  # the kind is visible: both models do about as well
        assert abs(cvae_scores[k]["nll"] - network_scores[k]["nll"]) < 2


def test_a_resumed_completion_run_equals_a_straight_one(tmp_path):
    x = two_kinds(128)
    straight = ppvae.CompletionVAE(x_shape=(1, 8, 8), z_dim=2, network=SMALL_NET)
    straight.fit(x, epochs=2, batch_size=32, progress=False)
    first = ppvae.CompletionVAE(x_shape=(1, 8, 8), z_dim=2, network=SMALL_NET)
    first.fit(x, epochs=1, batch_size=32, out=tmp_path / "run", progress=False)
    resumed = ppvae.CompletionVAE(x_shape=(1, 8, 8), z_dim=2, network=SMALL_NET)
    resumed.fit(x, epochs=2, batch_size=32, out=tmp_path / "run", resume=True, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_completion_models_say_what_they_need():
    with pytest.raises(ValueError, match="among"):
        ppvae.CompletionVAE(x_shape=(1, 8, 8), visible=(2, 4))
    model = ppvae.CompletionVAE(x_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"model\.complete"):
        model.sample(4)
    with pytest.raises(ValueError, match="visible part c"):
        model.model(two_kinds(2))
    with pytest.raises(ValueError, match="1, 2 or 3"):
        model.complete(two_kinds(2), visible=0)
    with pytest.raises(ValueError, match=r"builds its condition from images: pass c=quadrant_condition\(x, k\)"):
        model.decode(torch.zeros(2, model.z_dim))
    c = model.quadrant_condition(two_kinds(2), 2)
    assert model.decode(torch.zeros(2, model.z_dim), c=c).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="no latent"):
        ppvae.CompletionNetwork(x_shape=(1, 8, 8)).encode(two_kinds(2))
    with pytest.raises(ValueError, match="network='mlp'"):
        ppvae.CompletionNetwork(x_shape=(1, 8, 8), network="conv")
    with pytest.raises(ValueError, match="hidden widths must be positive, got \\[0\\]"):
        ppvae.CompletionNetwork(x_shape=(1, 8, 8), network={"name": "mlp", "hidden": 0})


def test_completions_keep_the_visible_pixels_and_the_run_draws_them(tmp_path):
    x = two_kinds(64)
    model = ppvae.CompletionVAE(x_shape=(1, 8, 8), z_dim=2, network=SMALL_NET)
    model.fit(x, epochs=1, test=x[:16], out=tmp_path / "run", progress=False)
    completed = model.complete(x[:5], visible=3, samples=4)
    assert completed.shape == (5, 4, 1, 8, 8)
    assert torch.equal(completed[:, :, :, :4], x[:5, None, :, :4].expand(5, 4, 1, 4, 8))  # the top half is shown
    assert not torch.equal(completed[:, 0], completed[:, 1])  # draws differ
    assert (tmp_path / "run" / "completions.png").stat().st_size > 0
    assert not (tmp_path / "run" / "samples.png").exists()  # nothing is drawn from nothing
    assert ppvae.load(tmp_path / "run").visible == (1, 2, 3)


def test_the_cli_trains_and_completes(tmp_path, capsys):
    images = tmp_path / "images.npy"
    np.save(images, (two_kinds(96).numpy() * 255).astype(np.uint8))
    spec = tmp_path / "completion.toml"
    spec.write_text('[model]\nname = "completion"\nz_dim = 2\nvisible = [1, 2]\n[fit]\nepochs = 1\n')
    main(
        [
            "train",
            "--spec",
            str(spec),
            "--data",
            str(images),
            "--hidden",
            "16",
            "--out",
            str(tmp_path / "cvae"),
            "--quiet",
        ]
    )
    assert ppvae.load(tmp_path / "cvae").visible == (1, 2)
    main(["sample", str(tmp_path / "cvae"), "-n", "4", "--visible", "1", "--data", str(images)])
    assert (tmp_path / "cvae" / "samples.png").stat().st_size > 0
    main(
        [
            "train",
            "--model",
            "completion-network",
            "--data",
            str(images),
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "net"),
            "--quiet",
        ]
    )
    assert isinstance(ppvae.load(tmp_path / "net"), ppvae.CompletionNetwork)
    assert main(["sample", str(tmp_path / "net"), "--label", "1"]) == 2
    assert "--label needs a CVAE" in capsys.readouterr().err
