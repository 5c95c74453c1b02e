"""ppvae.latent's numbers, checked against brute force and known answers, and ppvae.sweep end to end."""

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import bars as three_kinds
from PIL import Image

import ppvae
from ppvae.cli import main
from ppvae.latent import auroc, knn_accuracy, mmd, mmd_test, nearest_distance, project

SMALL_NET = {"name": "mlp", "hidden": [32]}


def test_knn_accuracy_separates_clusters_and_is_at_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    centres = torch.randn(4, 3, generator=g) * 10
    codes = centres[labels] + torch.randn(400, 3, generator=g)
    assert knn_accuracy(codes[:200], labels[:200], codes[200:], labels[200:], k=5) == 1.0
    shuffled = labels[torch.randperm(400, generator=g)]
    assert 0.1 < knn_accuracy(codes[:200], shuffled[:200], codes[200:], shuffled[200:], k=5) < 0.4
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(codes[:3], labels[:3], codes, labels, k=5)


def test_mmd_is_the_unbiased_estimate_and_the_permutation_test_tells_samples_apart(fashion):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g).double(), torch.randn(9, 5, generator=g).double() + 0.5
    bandwidth = 2.0

    def k(a, b):
        return torch.exp(-((a - b) ** 2).sum() / (2 * bandwidth**2)).item()

    within_x = sum(k(a, b) for a, b in itertools.permutations(x, 2)) / (7 * 6)
    within_y = sum(k(a, b) for a, b in itertools.permutations(y, 2)) / (9 * 8)
    between = sum(k(a, b) for a in x for b in y) / (7 * 9)
    assert mmd(x, y, bandwidth) == pytest.approx(within_x + within_y - 2 * between, rel=1e-9)

    _, test = fashion
    first, second = test.x[:400], test.x[400:800]
    noise = torch.rand(400, 1, 28, 28, generator=g)
    same, different = mmd_test(first, second, permutations=100), mmd_test(first, noise, permutations=100)
    assert abs(same.mmd2) < 0.01 * different.mmd2 and same.p_value > 0.01
    assert different.p_value < 0.01


def test_nearest_distance_finds_the_closest_reference_image_and_sets_noise_apart(fashion):
    reference = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    images = torch.tensor([[0.1, 0.0], [2.0, 2.0], [0.0, 0.7]])  # the second is clipped to (1, 1) first
    assert torch.allclose(nearest_distance(images, reference, batch_size=2), torch.tensor([0.1, 0.0, 0.3]).double())
    _, test = fashion
    held_out, noise = (
        nearest_distance(test.x[400:500], test.x[:400]),
        nearest_distance(torch.rand(100, 1, 28, 28), test.x[:400]),
    )
    assert held_out.median() < 0.5 * noise.median()
    with pytest.raises(ValueError, match="one size"):
        nearest_distance(torch.rand(3, 5), torch.rand(3, 4))


def test_auroc_is_the_probability_that_an_anomaly_scores_lower():
    normal, anomalous = torch.tensor([3.0, 5.0, 5.0, 9.0]), torch.tensor([1.0, 5.0, 7.0])
    pairs = [(1.0 if a < n else 0.5 if a == n else 0.0) for n in normal for a in anomalous]
    assert auroc(normal, anomalous) == pytest.approx(sum(pairs) / len(pairs))
    assert auroc(torch.arange(5.0) + 10, torch.arange(5.0)) == 1.0
    assert auroc(torch.ones(4), torch.ones(3)) == 0.5


def test_project_gives_two_dimensions_by_pca_or_a_chosen_pair():
    codes = torch.randn(50, 5) * torch.tensor([5.0, 1, 1, 1, 0.1])
    points, axes = project(codes, "pca")
    assert points.shape == (50, 2) and axes[0] == "principal component 1"
    assert points[:, 0].var() > points[:, 1].var()  # the first component carries the most variance
    pair, axes = project(codes, (1, 3))
    assert torch.equal(pair, codes[:, [1, 3]].double()) and axes == ("z2", "z4")
    with pytest.raises(ValueError, match="method"):
        project(codes, "umap")
    pytest.importorskip("sklearn")
    embedded, axes = project(codes, "tsne")
    assert embedded.shape == (50, 2) and axes == ("t-SNE 1", "t-SNE 2")


def test_a_beta_sweep_switches_units_off_and_writes_its_table_and_figures(tmp_path):
    train, test = three_kinds(600), three_kinds(150, seed=1)
    result = ppvae.sweep(
        train,
        test,
        beta=[1, 30],
        model_options={"z_dim": 4, "network": SMALL_NET},
        fit_options={"epochs": 8, "batch_size": 50, "lr": 3e-3},
        num_samples=20,
        k=5,
        knn_train=600,
        out=tmp_path / "beta",
        progress=False,
    )
    low, high = result.rows
    assert low["active_units"] > high["active_units"]  # a heavy KL weight switches units off
    assert low["kl"] > high["kl"] and low["reconstruction"] > high["reconstruction"]
    assert low["knn_accuracy"] > 0.9  # three kinds, easily told apart in z at beta=1
    assert low["log_px"] >= low["elbo"] - 1
    table = (tmp_path / "beta" / "sweep.md").read_text()
    assert table.startswith("| beta | test ELBO") and "active units" in table and "k-hat > 0.7" in table
    assert 0 <= low["khat_unreliable"] <= 1 and low["evidence_images"] == 150
    assert json.loads((tmp_path / "beta" / "sweep.json").read_text())["rows"][1]["value"] == 30
    for name in ("samples", "variance", "latent"):
        with Image.open(result.figures[name]) as image:
            assert image.size[0] > 300 and image.size[1] > 150
    assert (tmp_path / "beta" / "beta-30" / "spec.json").exists()
    with pytest.raises(ValueError, match="sweep one setting"):
        ppvae.sweep(train, test, beta=[1], z_dim=[2])


def test_the_cli_sweeps_z_dim_with_beta_held(tmp_path, capsys):
    images = tmp_path / "images.npy"
    np.save(images, (three_kinds(120).x.numpy() * 255).astype(np.uint8))
    code = main(
        [
            "sweep",
            "--z-dim",
            "1",
            "3",
            "--beta",
            "2",
            "--data",
            str(images),
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--num-samples",
            "5",
            "--out",
            str(tmp_path / "capacity"),
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| z_dim | test ELBO" in out and "k-NN" not in out  # unlabelled data: no k-NN column
    assert json.loads((tmp_path / "capacity" / "z_dim-3" / "spec.json").read_text())["config"]["beta"] == 2.0
    assert main(["sweep", "--beta", "1", "--z-dim", "2", "--data", str(images), "--out", str(tmp_path / "x")]) == 2
