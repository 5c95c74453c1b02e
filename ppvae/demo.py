"""``ppvae demo``: the VAE on Fashion-MNIST, its evidence, and the comparison with factor analysis.

Four models, each in its own run folder under ``out``:

- ``out/`` the demo VAE: MLP 784-400-20, Bernoulli likelihood, dynamically binarised pixels;
- ``out/linear-vae``: the same with a linear decoder (binary data, like the demo VAE);
- ``out/factor-analysis``: 20 factors fitted by EM on dequantised pixels;
- ``out/normal-vae``: the MLP VAE with a learned per-pixel Normal scale on the same dequantised pixels.

The first two are compared on binarised test images, the last two on dequantised ones,
by exact (factor analysis) or importance-sampled log p(x). The demo VAE's own log p(x) is
measured twice: by importance sampling on ``evidence_images`` test images, and by annealed
importance sampling, the most accurate estimator it can afford, on the first ``ais_images``,
with bidirectional Monte Carlo bounds on as many images simulated from the model to say how
accurate that is. ``out/report.md`` shows it all.
"""

from __future__ import annotations

import json
from pathlib import Path

import ppvae
from ppvae.atomic import write_text_atomic
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
    ais_images: int = 100,
    ais_steps: int = 100,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train, evaluate and compare; returns the path of ``report.md``. A folder ``out`` that holds anything is
    refused unless ``overwrite`` replaces an earlier demo's runs (ppvae's own files only), as for ``fit``."""
    out = Path(out)
    train = ppvae.data.load(DATASET, split="train", root=root, limit=limit)
    test = ppvae.data.load(DATASET, split="test", root=root)
    held_out = test.subset(evidence_images)
    source = {"dataset": DATASET, "root": root, "limit": limit, "test_limit": None, "dequantize": False}
    say = print if progress else (lambda *a, **k: None)
    say(f"ppvae demo: a VAE on {train}, {epochs} epochs; writing {out}/")

    fit = dict(epochs=epochs, seed=seed, accelerator=device, progress=progress, overwrite=overwrite)
    model = ppvae.VAE(x_shape=train.shape, z_dim=20)
    model.fit_record.data_source = source
    model.fit(train, binarize="dynamic", test=test, out=out, **fit)
    scores = model.evaluate(test)
    evidence = model.evaluate(held_out, num_samples=num_samples, progress=progress)
    say(f"\nlog p(x) by AIS on the first {ais_images} test images, and BDMC bounds on {ais_images} simulated ones")
    annealed = annealed_evidence(model, test.subset(ais_images), num_samples, ais_steps, seed, progress)
    write_text_atomic(
        out / "evaluation.json",
        json.dumps({"test": scores, f"first {evidence_images}": evidence, "ais": annealed}, indent=2) + "\n",
    )

    say("\nthe comparison models: a linear VAE, factor analysis and a Normal VAE on dequantised pixels")
    dequantized = ppvae.data.dequantize(train, seed=seed)
    others = {
        "linear-vae": (ppvae.VAE(x_shape=train.shape, z_dim=20, network="linear"), train),
        "factor-analysis": (ppvae.FactorAnalysis(x_shape=train.shape, z_dim=20), dequantized),
        "normal-vae": (
            ppvae.VAE(x_shape=train.shape, z_dim=20, likelihood={"name": "normal", "scale": "per_pixel"}),
            dequantized,
        ),
    }
    for name, (other, data) in others.items():
        other.fit_record.data_source = {**source, "dequantize": data is dequantized}
        if isinstance(other, ppvae.FactorAnalysis):
            other.fit(data, out=out / name, seed=seed, progress=progress, overwrite=overwrite)
        else:
            other.fit(data, out=out / name, **fit)
    models = {
        "MLP VAE (demo)": model,
        "linear VAE": others["linear-vae"][0],
        "factor analysis": others["factor-analysis"][0],
        "Normal VAE": others["normal-vae"][0],
    }
    comparison = ppvae.compare(
        models, held_out, num_samples=num_samples, out=out / "comparison", seed=seed, progress=progress, show=False
    )
    write_text_atomic(out / "comparison" / "comparison.json", json.dumps(comparison.rows, indent=2) + "\n")

    figures = [f"![{name}](comparison/{path.name})" for name, path in comparison.figures.items()]
    notes = [
        f"## log p(x) on the first {evidence_images} test images (K = {num_samples})",
        evaluation_table(evidence, model.x_dim),
        f"## log p(x) by annealed importance sampling (the first {ais_images} test images)",
        annealed_table(annealed),
        "## Against factor analysis",
        "The demo VAE against a linear-decoder VAE on the same binarised pixels, and factor analysis "
        "against a VAE with the same per-pixel Normal noise on the same dequantised pixels "
        "(see `ppvae.compare`).",
        comparison.to_markdown(),
        *figures,
    ]
    report = run_report(model, out, scores, title="ppvae demo: a VAE on Fashion-MNIST", notes=notes)
    say(evaluation_table(scores, model.x_dim) + "\n\n" + annealed_table(annealed) + "\n\n" + comparison.to_markdown())
    say(f"\nreport: {report}")
    return report


def annealed_evidence(
    model: ppvae.VAE, images, num_samples: int, steps: int, seed: int, progress: bool, chains: int = 16
) -> dict[str, float]:
    """Mean log p(x) of ``images`` by IS (K = ``num_samples``) and by AIS (``chains`` x ``steps``), and BDMC's
    lower and upper bounds on as many images simulated from the model, each with its seconds."""
    options = dict(chains=chains, steps=steps, seed=seed, progress=progress)
    importance = ppvae.log_evidence(model, images, num_samples=num_samples, diagnostics=True, progress=progress)
    annealed = ppvae.log_evidence(model, images, method="ais", diagnostics=True, **options)
    _, bounds = ppvae.bdmc(model, num_images=len(images), **options)
    return {
        "images": len(images),
        "num_samples": num_samples,
        "chains": chains,
        "steps": steps,
        "is_log_px": importance.log_evidence.mean().item(),
        "is_seconds": importance.seconds,
        "is_khat_unreliable": (importance.pareto_k > 0.7).double().mean().item(),
        "ais_log_px": annealed.log_evidence.mean().item(),
        "ais_seconds": annealed.seconds,
        "ais_se": annealed.standard_error.pow(2).mean().sqrt().item() / len(images) ** 0.5,
        "ais_gain": (annealed.log_evidence - importance.log_evidence).mean().item(),
        "bdmc_lower": bounds.log_evidence.mean().item(),
        "bdmc_upper": bounds.upper.mean().item(),
        "bdmc_gap": (bounds.upper - bounds.log_evidence).mean().item(),
    }


def annealed_table(a: dict[str, float]) -> str:
    """The IS and AIS estimates of one set of images side by side, and the BDMC bounds, as Markdown."""
    noise = " (below zero by the chains' noise alone)" if a["bdmc_gap"] < 0 else ""
    return "\n".join(
        [
            "| estimator | mean log p(x), nats | seconds |",
            "| --- | --- | --- |",
            f"| importance sampling, K = {a['num_samples']} | {a['is_log_px']:.2f} (k-hat > 0.7 on "
            f"{a['is_khat_unreliable']:.0%}) "
            f"| {a['is_seconds']:.1f} |",
            f"| AIS, {a['chains']} chains x {a['steps']} steps | {a['ais_log_px']:.2f} (chain noise ± "
            f"{a['ais_se']:.2f}) "
            f"| {a['ais_seconds']:.1f} |",
            "",
            f"AIS sits {a['ais_gain']:.2f} nats per image above importance sampling: both are stochastic lower "
            "bounds, so "
            f"the higher is the closer. On {a['images']} images simulated from the model, bidirectional Monte "
            "Carlo with "
            f"the same settings bounds log p(x) between {a['bdmc_lower']:.2f} (forward AIS) and {a['bdmc_upper']:.2f} "
            f"(reverse AIS): a gap of {a['bdmc_gap']:+.2f} nats per image{noise}, which bounds the AIS error on images "
            "drawn from the model itself.",
        ]
    )
