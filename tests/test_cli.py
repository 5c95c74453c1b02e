import json

import numpy as np
import pytest

from ppvae.cli import main


@pytest.mark.slow
def test_train_evaluate_sample_end_to_end(tmp_path, fashion, capsys):
    run = tmp_path / "vae"
    assert main(["train", "--limit", "2000", "--test-limit", "500", "--epochs", "2", "--z-dim", "8",
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    spec = json.loads((run / "spec.json").read_text())
    assert spec["model"] == "VAE" and spec["config"]["z_dim"] == 8 and spec["fit"]["data"]["dataset"] == "fashion-mnist"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["evaluate", str(run)]) == 0
    scores = json.loads((run / "evaluation.json").read_text())
    assert scores["n"] == 500 and -400 < scores["elbo"] < -200
    assert abs(scores["elbo"] - (scores["reconstruction"] - scores["kl"])) < 1e-6
    assert "| ELBO |" in capsys.readouterr().out
    assert main(["sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_on_own_array(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "shapes.npy", (rng.random((200, 12, 12)) > 0.5).astype(np.uint8) * 255)
    run = tmp_path / "own"
    assert main(["train", "--data", str(tmp_path / "shapes.npy"), "--epochs", "1", "--z-dim", "2",
                 "--hidden", "16", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    spec = json.loads((run / "spec.json").read_text())
    assert spec["config"]["x_shape"] == [1, 12, 12]
    assert main(["evaluate", str(run), "--num-samples", "50", "--quiet"]) == 0
    scores = json.loads((run / "evaluation.json").read_text())
    assert scores["n"] == 20  # the held-out tenth
    assert scores["num_samples"] == 50 and scores["log_px"] > scores["elbo"] - 3 * scores["elbo_se"]


def test_missing_data_is_one_clear_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a ppvae run folder" in capsys.readouterr().err


def test_parts_lists_the_registry(capsys):
    assert main(["parts"]) == 0
    out = capsys.readouterr().out
    assert "priors:" in out and "bernoulli" in out and "hidden=" in out
