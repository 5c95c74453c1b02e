"""Every tutorial notebook runs top to bottom (on a small subset, without showing figures)."""

import json
from pathlib import Path

import matplotlib
import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))
FAST_SETTINGS = "EPOCHS = 1\nTRAIN_LIMIT = 2000\n"


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
    assert (tmp_path / "runs" / "tutorial-vae" / "spec.json").exists()
