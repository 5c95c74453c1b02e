"""Every tutorial notebook runs top to bottom (on a small subset, without showing figures)."""

import json
from pathlib import Path

import matplotlib
import pytest
import torch

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))
FAST_SETTINGS = (  # t-SNE is tested in test_latent.py; here its six sweep planes would cost a minute
    'EPOCHS = 1\nTRAIN_LIMIT = 2000\nNUM_SAMPLES = 20\nEVIDENCE_IMAGES = 100\nPROJECTION = "pca"\nCHAIN_STEPS = 20\n'
)


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch, fashion):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    assert sources[0].lstrip().startswith("# Settings"), "the first code cell holds the settings"
    namespace: dict = {}
    for source in [FAST_SETTINGS, *sources[1:]]:
        exec(compile(source, str(path), "exec"), namespace)
    CHECKS[path.name[:2]](namespace, tmp_path / "runs")


def check_01(ns, runs):
    assert (runs / "tutorial-vae" / "spec.json").exists() and (runs / "tutorial-1" / "scatter.png").exists()
    assert ns["gradient"].norm() > 0 and not ns["q"].sample().requires_grad  # the reparameterisation trick
    assert torch.allclose(ns["kl_by_hand"].double(), ns["kl_ppvae"], atol=1e-4)  # the closed-form KL


def check_02(ns, runs):
    assert ns["by_guide"][-1] > ns["by_prior"][-1]  # the guide is the better proposal
    assert ns["exact_flat"].error.max() < 0.01  # the quadrature is exact to its refinement
    assert ns["errors"]["guide", 100].mean() < 0.05  # importance sampling sits below it on average
    assert len(ns["errors"]["ais", 10]) == 40 and torch.isfinite(ns["gap"]).all() and len(ns["simulated"]) == 10


def check_03(ns, runs):
    assert len(ns["rows"]) == 8 and (runs / "laplace" / "spec.json").exists()
    assert all(
        ais.log_evidence.isfinite().all() and ais.standard_error.isfinite().all() for _, ais in ns["estimates"].values()
    )


def check_04(ns, runs):
    assert len(ns["comparison"].rows) == 5 and (runs / "latent-2d" / "latent.png").exists()
    assert ns["outside"]["sigmoid mean, scale >= 0.1"] == 0  # the sigmoid mean keeps samples in [0, 1]
    assert (
        ns["small_scale"]["sigmoid mean, scale >= 0.1"] == 0
        and min(ns["distance"].values()) > 0
        and ns["pixel_vae"].likelihood.scale().min() >= 0.1
    )


def check_05(ns, runs):
    assert ns["real"] > 0.6 and 0 <= ns["recognised"] <= 1  # one short epoch is too little for recognisable samples;
    # tests/test_cvae.py's slow classifier test checks that on more training
    assert ns["model_trace"].nodes["z"]["fn"].batch_shape == (4,)  # p(z | c): one prior per image
    assert all(ns["cvae_scores"][k]["nll"] > 0 and ns["network_scores"][k]["nll"] > 0 for k in (1, 2, 3))
    assert ns["network_scores"][1]["nll"] > ns["network_scores"][2]["nll"] > ns["network_scores"][3]["nll"]


def check_06(ns, runs):
    low, high = ns["betas"].rows[0], ns["betas"].rows[-1]  # beta 0.001 and 1024
    assert low["active_units"] > high["active_units"] and low["kl"] > high["kl"]
    mmd = ns["mmd_results"]
    assert mmd["other test images"].mmd2 < mmd["uniform noise"].mmd2 and mmd["uniform noise"].p_value < 0.05
    assert 0 <= ns["latent"].auroc(ns["normal"], ns["noise"]) <= 1 and len(ns["by_class"]) == 10  # one short epoch:
    # too little training for noise to score low (it does after 10 epochs, as the stored outputs show)
    assert (runs / "tutorial-06" / "manifold.png").exists() and (runs / "beta" / "sweep.md").exists()


def check_07(ns, runs):
    sites = [n for n, s in ns["guide_trace"].nodes.items() if s["type"] == "sample" and n != "data"]
    assert sites == ["z1", "z2"] and ns["model_trace"].nodes["z1"]["fn"].batch_shape == (4,)  # p(z1 | z2) per image
    assert all(gap.mean() > 0 for gap in ns["gaps"].values())  # the ELBO (20 draws per image) below log p(x)
    assert all(density.max() == 1 for density, _ in ns["panels"].values())
    assert len(ns["rows"]) == 6 and len(ns["rows"]["two layers (20, 10)"]["units"]) == 2


def check_08(ns, runs):
    y, z = ns["guide_trace"].nodes["y_unobserved"], ns["guide_trace"].nodes["z"]
    assert y["value"].shape == (10, 1) and z["fn"].batch_shape == (10, 4)  # every class at once, a z for each
    assert ns["m2_accuracy"] > 0.15 and 0 < ns["logistic_accuracy"] <= 1  # one short epoch: above chance
    assert torch.all(ns["log_px"] >= ns["log_pxy"].max(0).values - 1e-6)  # p(x) = sum_y p(x, y)
    assert ns["from_noise"].shape == (2, 10, 1, 28, 28) and len(ns["results"]) == 4  # steps 1 and 10 of 20
    assert all(0 <= confident <= 1 and mmd2 == mmd2 for mmd2, _, confident in ns["results"].values())


CHECKS = {
    "01": check_01,
    "02": check_02,
    "03": check_03,
    "04": check_04,
    "05": check_05,
    "06": check_06,
    "07": check_07,
    "08": check_08,
}  # what each notebook must produce
