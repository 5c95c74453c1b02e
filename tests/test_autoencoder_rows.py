"""An autoencoder (a point-mass guide) in the comparison, the sweep and the evaluation: a row like every model's,
with the numbers that mean something for it and a reason for each blank."""

import json

import numpy as np
import torch

import ppvae
from ppvae.cli import main


def grey_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 4, 4), generator=g).float() / 255


def small(guide):
    return ppvae.VAE(x_shape=(1, 4, 4), z_dim=2, guide=guide, network={"name": "mlp", "hidden": [8]})


def test_compare_gives_an_autoencoder_a_row_with_its_blanks_explained():
    train, test = grey_images(200), grey_images(40, seed=1)
    ae, vae = small("delta").fit(train, epochs=1, progress=False), small("normal").fit(train, epochs=1, progress=False)
    comparison = ppvae.compare({"ae": ae, "vae": vae}, test, num_samples=5, progress=False, show=False)
    ae_row, vae_row = comparison.rows
    assert ae_row["log_px"] is None and ae_row["elbo"] is None and ae_row["rank"] is None
    assert ae_row["squared_error"] > 0 and ae_row["sample_mmd"] >= 0  # what an autoencoder is measured by
    assert vae_row["rank"] == 1 and vae_row["log_px"] < 0 and vae_row["elbo"] < 0
    table = comparison.to_markdown()
    assert "| ae | binarised | — | — | — |" in table
    assert "ae: an autoencoder's point-mass guide has no density" in table and "ae: no ELBO" in table
    # with proposals from the prior, AIS scores the autoencoder's decoder, and both rows are ranked
    scored = ppvae.compare(
        {"ae": ae, "vae": vae}, test, method="ais", chains=2, steps=5, proposal="prior", progress=False, show=False
    )
    assert [r["method"] for r in scored.rows] == ["AIS, 2x5, from the prior"] * 2
    assert sorted(r["rank"] for r in scored.rows) == [1, 2] and scored.rows[0]["elbo"] is None


def test_compare_without_samples_leaves_log_px_out_for_every_model():
    train, test = grey_images(200), grey_images(40, seed=1)
    vae = small("normal").fit(train, epochs=1, progress=False)
    fa = ppvae.FactorAnalysis(x_shape=(1, 4, 4), z_dim=2).fit(ppvae.data.dequantize(train))
    rows = ppvae.compare({"vae": vae, "fa": fa}, test, num_samples=0, progress=False, show=False).rows
    assert rows[0]["log_px"] is None and rows[0]["left_out"] == ["log p(x) not asked for (num_samples=0)"]
    assert rows[1]["method"] == "exact" and rows[1]["rank"] == 1  # a closed form costs nothing: it stays


def test_the_cli_compares_sweeps_and_evaluates_an_autoencoder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "shapes.npy", (rng.random((200, 8, 8)) > 0.5).astype(np.uint8) * 255)
    common = f"--data {tmp_path / 'shapes.npy'} --epochs 1 --z-dim 2 --hidden 16 --quiet"
    assert main(["train", *common.split(), "--guide", "delta", "--out", str(tmp_path / "ae")]) == 0
    assert main(["train", *common.split(), "--out", str(tmp_path / "vae")]) == 0
    runs, out = [str(tmp_path / "ae"), str(tmp_path / "vae")], tmp_path / "compared"
    assert main(["compare", *runs, "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert rows[0]["log_px"] is None and rows[1]["rank"] == 1
    assert main(["compare", *runs, "--num-samples", "0", "--out", str(out), "--quiet"]) == 0
    assert all(r["log_px"] is None for r in json.loads((out / "comparison.json").read_text()))
    capsys.readouterr()
    ais = ["--method", "ais", "--proposal", "prior", "--chains", "2", "--steps", "5"]
    assert main(["evaluate", runs[0], *ais, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "no bound" in printed and "-log p(z) at the code" in printed and "| ELBO |" not in printed
    assert json.loads((tmp_path / "ae" / "evaluation.json").read_text())["log_px"] < 0
    assert main(["evaluate", runs[0], "--num-samples", "5", "--quiet"]) == 2
    assert "proposal='prior'" in capsys.readouterr().err
    sweep = f"sweep {common} --guide delta --beta 1 4 --num-samples 5 --out {tmp_path / 'sweep'}"
    assert main(sweep.split()) == 0
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "beta = 1, 4: no ELBO or KL" in table and "test ELBO" not in table and "| reconstruction |" in table
    assert all("log_px" not in row for row in json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"])
