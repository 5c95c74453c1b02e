"""A damaged or foreign run folder is one clear error naming the file and the field, never a traceback or a
silent default; what is whole in it is still read."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import bars

import ppvae
from ppvae.cli import main


@pytest.fixture
def run(tmp_path):
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, prior="vamp", network={"name": "mlp", "hidden": [8]})
    model.fit(bars(60).x, epochs=1, batch_size=30, out=tmp_path / "run", progress=False)
    return tmp_path / "run"


def rewrite_spec(run, change):
    spec = json.loads((run / "spec.json").read_text())
    change(spec)
    (run / "spec.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["config"].pop("prior"), "field 'config.prior' is missing"),
        (lambda s: s["config"].update(colour="red"), "unknown field 'config.colour'"),
        (lambda s: s["config"].update(z_dim="2"), "field 'config.z_dim' has the wrong type"),
        (lambda s: s["config"].update(z_dim=2.7), "field 'config.z_dim' has the wrong type"),
        (lambda s: s.update(format=99), "newer ppvae"),
        (lambda s: s.update(model="GAN"), "names model 'GAN'"),
        (lambda s: s.update(config=[2]), "field 'config' must be an object"),
    ],
)
def test_a_spec_that_does_not_describe_a_model_names_the_field(run, change, message):
    rewrite_spec(run, change)
    with pytest.raises(ValueError, match=message) as error:
        ppvae.load(run)
    assert "spec.json" in str(error.value)


def test_a_spec_that_is_not_json_or_weights_that_are_damaged_say_so(run, tmp_path, capsys):
    weights = (run / "weights.pt").read_bytes()
    (run / "weights.pt").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="weights.pt is damaged"):
        ppvae.load(run)
    other = ppvae.VAE(x_shape=(1, 8, 8), z_dim=3, prior="vamp", network={"name": "mlp", "hidden": [8]})
    torch.save({"state_dict": other.state_dict()}, run / "weights.pt")
    with pytest.raises(ValueError, match="does not fit the model"):
        ppvae.load(run)
    (run / "spec.json").write_text('{"format": 2, "model": "VAE", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        ppvae.load(run)
    assert main(["evaluate", str(run)]) == 2  # the CLI: one line, exit 2
    assert "not valid JSON" in capsys.readouterr().err


def test_a_torn_last_metrics_line_leaves_the_run_loadable(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_el')  # a kill mid-write
    model = ppvae.load(run)
    assert [r["epoch"] for r in model.history] == [1]


def test_evaluate_refuses_weights_that_are_not_finite(run):
    model = ppvae.load(run)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.evaluate(bars(10).x)


def test_a_run_folder_written_before_the_estimator_floor_still_loads_and_scores_the_same(tmp_path):
    """tests/data holds run folders (format 2) written by the version before the estimator floor, with what that
    version computed from them; this version loads them, scores them the same, and resumes them."""
    data = Path(__file__).parent / "data"
    saved = torch.load(data / "format-2-outputs.pt", weights_only=True)
    vae, cvae = ppvae.load(data / "vae-format-2"), ppvae.load(data / "cvae-format-2")
    x, y = saved["x"][:5], saved["y"][:5]
    assert torch.equal(vae.encode(x), saved["vae_codes"]) and torch.equal(vae.elbo_terms(x)["elbo"], saved["vae_elbo"])
    assert torch.equal(cvae.encode(x, y), saved["cvae_codes"])
    assert torch.equal(cvae.elbo_terms(x, y)["elbo"], saved["cvae_elbo"])
    assert len(vae.history) == 2 and vae.fit_record.options["binarize"] is None and cvae.classes == ["a", "b", "c"]
    assert vae.fit_record.training_state["epoch"] == 2
    shutil.copytree(data / "vae-format-2", tmp_path / "run")
    resumed = ppvae.load(tmp_path / "run")
    resumed.fit(saved["x"], epochs=3, batch_size=32, out=tmp_path / "run", resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3] and resumed.fit_record.training_state["epoch"] == 3
