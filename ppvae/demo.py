"""``ppvae demo``: the VAE on Fashion-MNIST, its evidence, and the comparison with factor analysis.

Four models, each in its own run folder under ``out``:

- ``out/`` the demo VAE: MLP 784-400-20, Bernoulli likelihood, dynamically binarised pixels;
- ``out/linear-vae``: the same with a linear decoder (binary data, like the demo VAE);
- ``out/factor-analysis``: 20 factors fitted by EM on dequantised pixels;
- ``out/normal-vae``: the MLP VAE with a learned per-pixel Normal scale on the same dequantised pixels.

The first two are compared on binarised test images, the last two on dequantised ones,
by exact (factor analysis) or importance-sampled log p(x); ``out/report.md`` shows it all.
"""

from __future__ import annotations

import json
from pathlib import Path

import ppvae
from ppvae.report import evaluation_table, run_report

DATASET = "fashion-mnist"


def run_demo(
    out: str | Path = "runs/demo",
    epochs: int = 10,
    limit: int | None = None,
    root: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_samples: int = 1000,
    evidence_images: int = 2000,
    progress: bool = True,
) -> Path:
    """Train, evaluate and compare; returns the path of ``report.md``."""
    out = Path(out)
    train = ppvae.data.load(DATASET, split="train", root=root, limit=limit)
    test = ppvae.data.load(DATASET, split="test", root=root)
    held_out = test.subset(evidence_images)
    source = {"dataset": DATASET, "root": root, "limit": limit, "test_limit": None, "dequantize": False}
    say = print if progress else (lambda *a, **k: None)
    say(f"ppvae demo: a VAE on {train}, {epochs} epochs; writing {out}/")

    fit = dict(epochs=epochs, seed=seed, accelerator=device, progress=progress)
    model = ppvae.VAE(x_shape=train.shape, z_dim=20)
    model.data_source = source
    model.fit(train, binarize="dynamic", test=test, out=out, **fit)
    scores = model.evaluate(test)
    evidence = model.evaluate(held_out, num_samples=num_samples, progress=progress)
    (out / "evaluation.json").write_text(json.dumps({"test": scores, f"first {evidence_images}": evidence}, indent=2) + "\n")

    say("\nthe comparison models: a linear VAE, factor analysis and a Normal VAE on dequantised pixels")
    dequantized = ppvae.data.dequantize(train, seed=seed)
    others = {
        "linear-vae": (ppvae.VAE(x_shape=train.shape, z_dim=20, network="linear"), train),
        "factor-analysis": (ppvae.FactorAnalysis(x_shape=train.shape, z_dim=20), dequantized),
        "normal-vae": (ppvae.VAE(x_shape=train.shape, z_dim=20, likelihood={"name": "normal", "scale": "per_pixel"}),
                       dequantized),  # fmt: skip
    }
    for name, (other, data) in others.items():
        other.data_source = {**source, "dequantize": data is dequantized}
        if isinstance(other, ppvae.FactorAnalysis):
            other.fit(data, out=out / name, seed=seed, progress=progress)
        else:
            other.fit(data, out=out / name, **fit)
    models = {"MLP VAE (demo)": model, "linear VAE": others["linear-vae"][0],
              "factor analysis": others["factor-analysis"][0], "Normal VAE": others["normal-vae"][0]}  # fmt: skip
    comparison = ppvae.compare(models, held_out, num_samples=num_samples, out=out / "comparison", seed=seed,
                               progress=progress, show=False)  # fmt: skip
    (out / "comparison" / "comparison.json").write_text(json.dumps(comparison.rows, indent=2) + "\n")

    figures = [f"![{name}](comparison/{path.name})" for name, path in comparison.figures.items()]
    notes = [
        f"## log p(x) on the first {evidence_images} test images (K = {num_samples})",
        evaluation_table(evidence, model.x_dim),
        "## Against factor analysis",
        "The demo VAE against a linear-decoder VAE on the same binarised pixels, and factor analysis "
        "against a VAE with the same per-pixel Normal noise on the same dequantised pixels "
        "(see `ppvae.compare`).",
        comparison.to_markdown(),
        *figures,
    ]
    report = run_report(model, out, scores, title="ppvae demo: a VAE on Fashion-MNIST", notes=notes)
    say(evaluation_table(scores, model.x_dim) + "\n\n" + comparison.to_markdown())
    say(f"\nreport: {report}")
    return report
