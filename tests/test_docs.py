"""The README and the documentation site say what runs: their Python blocks run, their tables quote what
produced them, and the site builds in strict mode."""

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ppvae
from ppvae.estimator import LatentVariableModel

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *(ROOT / "docs" / name for name in ("index.md", "models.md", "training.md", "latent.md"))]
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def tables(path: Path) -> list[tuple[str | None, list[list[str]]]]:
    """(the source a table is quoted from, or None; its rows of cells, the header first) for every table."""
    found, rows, source, quoted = [], [], None, None
    for line in [*path.read_text().split("\n"), ""]:
        if line.startswith("|"):
            if not line.startswith("| ---") and not line.startswith("|---"):
                rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if rows:
            found.append((quoted, rows))
            rows, quoted = [], None
        if match := re.match(r"<!-- quoted from (\S+) -->", line):
            source = match.group(1)
        quoted, source = source, None
    return found


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text.replace("−", "-"))


def notebook_lines(path: Path) -> list[str]:
    """Every line of text a notebook's stored outputs show."""
    lines = []
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/markdown") or ""
            lines += "".join(text).split("\n")
    return lines


def test_every_table_quoted_from_a_tutorial_holds_the_notebook_s_stored_figures():
    quoted = [
        (page, source, rows) for page in PAGES for source, rows in tables(page) if source and source.endswith(".ipynb")
    ]
    assert len(quoted) >= 2
    for page, source, rows in quoted:
        shown = notebook_lines(ROOT / source)
        for row in rows[1:]:
            label, figures = row[0], numbers(" ".join(row[1:]))
            candidates = [numbers(line.replace(label, "", 1)) for line in shown if label in line]
            held = [c for c in candidates if _in_order(figures, c)]
            assert held, f"{page.name}: the row {label!r} ({figures}) is not in {source}'s stored output"


def test_a_table_quoted_from_a_benchmark_s_table_is_that_table():
    """A benchmark that writes its table (``table.md`` beside its results) is quoted whole: no row typed in."""
    quoted = [
        (page, source, rows)
        for page in [*PAGES, ROOT / "docs" / "results.md"]
        for source, rows in tables(page)
        if source and source.endswith(".md")
    ]
    assert quoted  # the richer models' table at full scale
    for page, source, rows in quoted:
        written = tables(ROOT / source)
        assert len(written) == 1, f"{source} should hold one table"
        assert rows == written[0][1], (
            f"{page.name}: the table quoted from {source} differs from it: run `make quote-tables`"
        )


def test_quote_tables_copies_a_benchmark_s_new_table_into_the_page_that_quotes_it(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("quote_tables", ROOT / "benchmarks" / "quote_tables.py")
    quote_tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quote_tables)
    (tmp_path / "table.md").write_text("| model | gain |\n| --- | --- |\n| a | +1.0 |\n| b | +2.0 |\n")
    marker = "<!-- quoted from table.md -->"
    page = f"Rows:\n\n{marker}\n| model | gain |\n| --- | --- |\n| a | +1.0 |\n\nAfter.\n"
    new = quote_tables.requoted(page, tmp_path)
    assert new == f"Rows:\n\n{marker}\n| model | gain |\n| --- | --- |\n| a | +1.0 |\n| b | +2.0 |\n\nAfter.\n"
    assert quote_tables.requoted(new, tmp_path) == new
    with pytest.raises(SystemExit, match="not directly above a table"):
        quote_tables.requoted(f"{marker}\n\n| model | gain |\n", tmp_path, "page.md")


def _in_order(wanted: list[str], among: list[str]) -> bool:
    rest = iter(among)
    return all(any(w == a for a in rest) for w in wanted)


def test_a_table_the_readme_shares_with_a_page_is_the_same_table():
    pages = {tuple(rows[0]): rows for page in PAGES[1:] + [ROOT / "docs" / "results.md"] for _, rows in tables(page)}
    shared = [rows for _, rows in tables(ROOT / "README.md") if tuple(rows[0]) in pages]
    assert len(shared) >= 3  # the demo's evaluation and comparison, the richer models' table
    for rows in shared:
        assert rows == pages[tuple(rows[0])], f"the README's table {rows[0][:3]}... differs from its page's"


@pytest.mark.slow
def test_the_python_blocks_of_the_readme_and_the_pages_run_in_order(tmp_path, monkeypatch):
    """Pasted in order into one session, on a small subset of Fashion-MNIST and a tenth of the epochs."""
    load, fit = ppvae.data.load, LatentVariableModel.fit

    def small_load(name, *args, **kwargs):
        data = load(name, *args, **kwargs)
        if name == "fashion-mnist":
            return data.subset(400 if kwargs.get("split", "train") == "train" else 120)
        return data

    @functools.wraps(fit)  # fit's own signature, whose defaults a resumed fit reads
    def short_fit(self, data, *args, epochs=10, **kwargs):
        return fit(self, data, *args, epochs=max(1, epochs // 10), **kwargs)

    monkeypatch.setattr(ppvae.data, "load", small_load)
    monkeypatch.setattr(LatentVariableModel, "fit", short_fit)
    monkeypatch.chdir(tmp_path)
    np.save("big.npy", np.random.default_rng(0).integers(0, 256, (256, 28, 28), dtype=np.uint8))  # the user's file
    namespace: dict = {}
    ran = 0
    for page in PAGES:
        for number, block in enumerate(python_blocks(page)):
            try:
                exec(compile(block, f"{page.name}, Python block {number + 1}", "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{page.name}, Python block {number + 1} fails: {error!r}\n{block}") from error
            ran += 1
    assert ran >= 8 and namespace["log_px"].shape == (120,)
    assert Path("runs/vae/attribute.png").exists() and Path("runs/beta/sweep.md").exists()


def test_the_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra builds the site: pip install -e '.[docs]'")
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    reference = (site / "reference" / "models.html").read_text()
    assert "log_evidence" in reference and "Maximise the ELBO by SVI" in reference  # docstrings rendered
    assert (site / "tutorials" / "07_richer_posteriors_and_priors.html").stat().st_size > 100_000  # with outputs
