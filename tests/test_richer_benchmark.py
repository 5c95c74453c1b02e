"""benchmarks/richer_models.py keeps a row's finished stages, so a row stopped midway resumes where it stopped."""

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import ppvae
from tests.conftest import small_data

ROOT = Path(__file__).resolve().parents[1]


class Stopped(Exception):
    """A run stopped midway (a session's end)."""


@pytest.fixture
def richer(monkeypatch, one_thread):
    """The benchmark's module, reading small 8x8 images in place of Fashion-MNIST, AIS 20 images a stage."""
    spec = importlib.util.spec_from_file_location("richer_models", ROOT / "benchmarks" / "richer_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def load(name, split="train", limit=None, **options):
        x = small_data(64 if split == "train" else 50, seed=0 if split == "train" else 1)
        return ppvae.data.ImageDataset(x[:limit], None, name, split)

    monkeypatch.setattr(ppvae.data, "load", load)
    monkeypatch.setattr(module, "AIS_CHUNK", 20)
    return module


def run(module, monkeypatch, out: Path) -> dict:
    options = "--epochs 2 --chains 2 --ais-steps 3 --num-samples 10 --ais-images 50 --bdmc-images 4 --rows default"
    monkeypatch.setattr(sys, "argv", ["richer_models.py", *options.split(), "--out", str(out)])
    module.main()
    return json.loads((out / "results.json").read_text())["rows"]["default"]


def test_a_row_stopped_in_its_ais_resumes_there_and_gives_the_straight_run_s_numbers(
    richer, monkeypatch, tmp_path, capsys
):
    straight = run(richer, monkeypatch, tmp_path / "straight")

    calls = []
    measure = richer.ais

    def stopped_at_the_second_chunk(model, images, args, seed):
        calls.append(len(images))
        if calls == [20, 20]:
            raise Stopped
        return measure(model, images, args, seed)

    monkeypatch.setattr(richer, "ais", stopped_at_the_second_chunk)
    with pytest.raises(Stopped):
        run(richer, monkeypatch, tmp_path / "stopped")
    stages = json.loads((tmp_path / "stopped" / "partial" / "default" / "stages.json").read_text())
    assert {"evaluate", "ais 0"} <= set(stages) and "ais 20" not in stages
    capsys.readouterr()

    calls.clear()
    resumed = run(richer, monkeypatch, tmp_path / "stopped")
    printed = capsys.readouterr().out
    assert "trained 2 epochs: kept from" in printed and "ELBO and IS" not in printed
    assert calls == [20, 10]  # the two chunks left, not the first again
    assert not (tmp_path / "stopped" / "partial" / "default").exists()
    for measure_name in ("elbo", "is", "ais", "bdmc_gap"):
        assert resumed[measure_name] == pytest.approx(straight[measure_name], abs=1e-9), measure_name
    assert torch.tensor(resumed["ais_per_image"]).equal(torch.tensor(straight["ais_per_image"]))


def test_a_row_s_stages_measured_with_other_settings_are_thrown_away(richer, monkeypatch, tmp_path, capsys):
    partial = tmp_path / "partial" / "default"
    partial.mkdir(parents=True)
    (partial / "settings.json").write_text(json.dumps({"epochs": 99}))
    (partial / "stages.json").write_text(json.dumps({"seconds": 1.0, "evaluate": {"elbo": 0.0}}))
    row = run(richer, monkeypatch, tmp_path)
    assert "measured with other settings: the row starts again" in capsys.readouterr().out
    assert row["elbo"] < -10  # measured, not the planted 0.0


def test_every_row_of_the_table_trains_is_scored_and_gains_a_figure_over_the_default(richer, monkeypatch, tmp_path):
    """Each row's declaration (model and fit options) builds, trains and passes every estimator: a row that a
    later edit breaks fails here in seconds, not two hours into a full-scale run."""
    rows = " ".join(richer.ROWS)
    options = f"--epochs 1 --chains 2 --ais-steps 2 --num-samples 5 --ais-images 8 --bdmc-images 2 --rows {rows}"
    monkeypatch.setattr(sys, "argv", ["richer_models.py", *options.split(), "--out", str(tmp_path)])
    richer.main()
    results = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert list(results) == list(richer.ROWS)
    for key, row in results.items():
        assert all(math.isfinite(row[m]) for m in ("elbo", "is", "ais", "bdmc_gap")), key
        assert len(row["ais_per_image"]) == 8, key
    table = [line.split(" | ") for line in (tmp_path / "table.md").read_text().splitlines()[2:]]
    assert [cells[0].lstrip("| ") for cells in table] == [name for name, _, _ in richer.ROWS.values()]
    gains = [cells[4] for cells in table]
    assert gains[0] == "-" and all(re.fullmatch(r"[+-]\d+\.\d\d ± \d+\.\d\d", g) for g in gains[1:]), gains


def test_ais_scores_every_row_on_the_binary_images_elbo_and_is_score(richer, monkeypatch, tmp_path):
    """AIS runs a chunk of images at a time, but each chunk is a slice of the test set's one binarisation (the
    row's seed), not a binarisation of its own: an image is the same binary image in every row, so the gains
    pair image by image."""
    scored = []
    measure = richer.ais

    def kept(model, images, args, seed):
        scored.append((model, images))
        return measure(model, images, args, seed)

    monkeypatch.setattr(richer, "ais", kept)
    run(richer, monkeypatch, tmp_path)
    model = scored[0][0]
    test = ppvae.data.load("fashion-mnist", split="test")
    assert [len(images) for _, images in scored] == [20, 20, 10]
    assert torch.cat([images for _, images in scored]).equal(model.prepare(test, seed=0))
