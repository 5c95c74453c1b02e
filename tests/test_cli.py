import json

import numpy as np
import pytest
import torch

import ppvae
from ppvae.cli import main


@pytest.mark.slow
def test_train_evaluate_sample_end_to_end(tmp_path, fashion, capsys):
    run = tmp_path / "vae"
    assert (
        main(
            [
                "train",
                "--limit",
                "2000",
                "--test-limit",
                "500",
                "--epochs",
                "2",
                "--z-dim",
                "8",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    spec = json.loads((run / "spec.json").read_text())
    assert spec["model"] == "VAE" and spec["config"]["z_dim"] == 8 and spec["data"]["dataset"] == "fashion-mnist"
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
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "shapes.npy"),
                "--epochs",
                "1",
                "--z-dim",
                "2",
                "--hidden",
                "16",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
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


@pytest.mark.slow
def test_demo_writes_the_report_with_the_comparison(tmp_path, fashion):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--limit",
                "1500",
                "--epochs",
                "1",
                "--num-samples",
                "20",
                "--evidence-images",
                "200",
                "--ais-images",
                "10",
                "--ais-steps",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    report = (out / "report.md").read_text()
    annealed = json.loads((out / "evaluation.json").read_text())["ais"]
    assert annealed["bdmc_lower"] < annealed["bdmc_upper"] + 0.5 and annealed["ais_gain"] > -1  # 20 steps: loose
    assert "AIS, 16 chains x 20 steps" in report
    assert "log p(x), importance sampled (K = 20)" in report and "## Against factor analysis" in report
    rows = json.loads((out / "comparison" / "comparison.json").read_text())
    kinds = {r["model"]: (r["data"], r["method"]) for r in rows}
    assert kinds["factor analysis"] == ("dequantised", "exact") and kinds["Normal VAE"] == ("dequantised", "IS, K=20")
    assert kinds["MLP VAE (demo)"][0] == kinds["linear VAE"][0] == "binarised"
    for name in ("samples.png", "reconstructions.png"):
        assert (out / "comparison" / name).read_bytes()[:4] == b"\x89PNG"
    for run in ("linear-vae", "factor-analysis", "normal-vae"):
        assert (out / run / "spec.json").exists()


def test_spec_file_and_part_flags_build_the_model(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "grey.npy", rng.integers(0, 256, (300, 8, 8)).astype(np.uint8))
    spec = tmp_path / "model.toml"
    spec.write_text(
        '[model]\nz_dim = 3\nbeta = 2.0\n[model.likelihood]\nname = "normal"\nscale = "learned"\n'
        "[fit]\nepochs = 1\nbatch_size = 64\n[data]\ndequantize = true\n"
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--spec",
                str(spec),
                "--data",
                str(tmp_path / "grey.npy"),
                "--network-hidden",
                "32",
                "16",
                "--likelihood-scale",
                "per_pixel",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    saved = json.loads((run / "spec.json").read_text())
    config = saved["config"]
    assert config["z_dim"] == 3 and config["beta"] == 2.0 and config["network"] == {"name": "mlp", "hidden": [32, 16]}
    assert config["likelihood"] == {"name": "normal", "scale": "per_pixel"}  # the flag overrides the file
    assert saved["fit"]["batch_size"] == 64 and saved["data"]["dequantize"] is True
    # bad flags and options are one clear error each
    assert main(["train", "--data", str(tmp_path / "grey.npy"), "--prior-components", "3", "--out", str(run)]) == 2
    assert "prior 'normal' has no option 'components'; its options: none" in capsys.readouterr().err
    flags = ["--prior", "mixture", "--prior-component", "3"]
    assert main(["train", "--data", str(tmp_path / "grey.npy"), *flags, "--out", str(run)]) == 2
    assert "no option 'component' (did you mean --prior-components?)" in capsys.readouterr().err
    spec.write_text("[model]\nz_dimm = 3\n")
    assert main(["train", "--spec", str(spec), "--out", str(run)]) == 2
    assert "VAE has no option 'z_dimm' (did you mean 'z_dim'?); its options: z_dim, prior" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "grey.npy"), "--colour", "red", "--out", str(run)]) == 2
    assert "unrecognised argument '--colour'" in capsys.readouterr().err
    spec.write_text("[modle]\nz_dim = 3\n")
    assert main(["train", "--spec", str(spec), "--out", str(run)]) == 2
    assert "unknown tables ['modle']" in capsys.readouterr().err


def test_factor_analysis_run_and_compare(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "grey.npy", rng.integers(0, 256, (400, 6, 6)).astype(np.uint8))
    data = ["--data", str(tmp_path / "grey.npy"), "--quiet"]
    assert (
        main(
            [
                "train",
                "--model",
                "factor-analysis",
                "--z-dim",
                "2",
                "--dequantize",
                *data,
                "--out",
                str(tmp_path / "fa"),
            ]
        )
        == 0
    )
    assert (
        main(["train", "--z-dim", "2", "--hidden", "16", "--epochs", "2", *data, "--out", str(tmp_path / "vae")]) == 0
    )
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(tmp_path / "fa"),
                str(tmp_path / "vae"),
                "--num-samples",
                "10",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| fa | dequantised |" in table and "| vae | binarised |" in table and "exact" in table
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["fa", "vae"] and rows[0]["method"] == "exact"
    assert (out / "latent.png").exists() and (out / "comparison.md").read_text().startswith("# Comparison")


def test_counts_are_checked_and_evaluation_json_is_strict(tmp_path, capsys):
    images = tmp_path / "images.npy"
    np.save(images, (np.random.default_rng(0).random((40, 1, 8, 8)) > 0.5).astype(np.float32))
    for flags in (["--limit", "0"], ["--limit", "-5"], ["--test-limit", "0"]):
        assert main(["train", "--data", str(images), *flags, "--out", str(tmp_path / "never")]) == 2
        assert "must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    run = tmp_path / "run"
    main(
        ["train", "--data", str(images), "--z-dim", "2", "--hidden", "8", "--epochs", "1", "--out", str(run), "--quiet"]
    )
    assert main(["sample", str(run), "-n", "0"]) == 2
    assert main(["evaluate", str(run), "--batch-size", "0"]) == 2
    assert "--batch-size must be a positive whole number" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--test-limit", "1", "--quiet"]) == 0  # one image: its standard errors are NaN
    text = (run / "evaluation.json").read_text()
    assert "NaN" not in text and json.loads(text)["elbo_se"] is None


PART_OPTIONS = {
    "vae": ("--prior-components", "4", "prior", None),  # the normal prior has no components: refused
    "cvae": ("--prior-hidden", "16", "prior", {"name": "conditional", "hidden": 16}),
    "completion": ("--prior-hidden", "16", "prior", {"name": "conditional", "hidden": 16}),
    "completion-network": ("--network-hidden", "16", "network", {"name": "mlp", "hidden": 16}),
    "fa": ("--likelihood-scale", "learned", "likelihood", None),  # factor analysis takes no likelihood
}


@pytest.mark.parametrize("name", sorted(PART_OPTIONS))
def test_part_options_read_the_defaults_of_the_model_being_built(name):
    from ppvae.specs import build_model, part_flags

    flag, value, kind, expected = PART_OPTIONS[name]
    if expected is None:
        with pytest.raises(ValueError, match="no option 'components'|takes no likelihood"):
            part_flags({"name": name}, [flag, value])
        return
    spec = part_flags({"name": name}, [flag, value])
    assert spec[kind] == expected
    labelled = ppvae.data.ImageDataset(torch.rand(10, 1, 8, 8), torch.arange(10) % 3, classes=["a", "b", "c"])
    model = build_model(spec, (1, 8, 8), labelled)
    assert model.config()[kind] == expected


def test_evaluate_and_compare_take_the_estimator_and_name_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "shapes.npy", (rng.random((200, 8, 8)) > 0.5).astype(np.uint8) * 255)
    for seed, name in enumerate(("a", "b")):
        train = f"train --data {tmp_path / 'shapes.npy'} --epochs 1 --z-dim 2 --hidden 16 --quiet --seed {seed}"
        assert main([*train.split(), "--out", str(tmp_path / name), "--model", "vae"]) == 0
    run = str(tmp_path / "a")
    assert main(["evaluate", run, "--method", "ais", "--chains", "2", "--steps", "5", "--quiet"]) == 0
    scores = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    assert (
        scores["method"] == "ais" and scores["log_px"] < 0 and "annealed importance sampling" in capsys.readouterr().out
    )
    assert main(["evaluate", run, "--method", "quadrature", "--quiet"]) == 0
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text())["method"] == "quadrature"
    assert main(["evaluate", run, "--method", "ais", "--num-samples", "5", "--quiet"]) == 2
    assert "--num-samples is importance sampling's" in capsys.readouterr().err
    assert main(["evaluate", run, "--method", "is", "--num-samples", "0", "--quiet"]) == 2  # was K=1000, silently
    assert "--num-samples 0 asks for no log p(x), --method is for one" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        ppvae.load(run).evaluate(torch.zeros(2, 1, 8, 8), method="is", num_samples=0)
    assert main(["evaluate", run, "--method", "exact", "--quiet"]) == 2
    assert "no closed-form evidence" in capsys.readouterr().err
    out = tmp_path / "compared"
    runs = [run, str(tmp_path / "b")]
    assert (
        main(["compare", *runs, "--method", "ais", "--chains", "2", "--steps", "5", "--out", str(out), "--quiet"]) == 0
    )
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["method"] for r in rows] == ["AIS, 2x5"] * 2 and sorted(r["rank"] for r in rows) == [1, 2]
    assert rows[0]["rank"] == (1 if rows[0]["log_px"] > rows[1]["log_px"] else 2)
    assert "| rank |" in (out / "comparison.md").read_text()
