"""What makes M2's label matter: M2 with 100 labels under each setting, its test accuracy and its label effect.

Each setting trains ``ppvae.SemiSupervisedVAE(z_dim=50, ...)`` for 10 epochs on the first 59,000 Fashion-MNIST
training images with 100 labels (10 per class, seed 0), the last 1,000 images with their labels choosing the
epoch by accuracy, as `semi_supervised.py` does. The label effect is the mean absolute change of the decoder's
pixel means when the label changes under the same z (200 z from the prior): near 0, the decoder ignores y.
Each setting runs in a fresh process, so that its numbers do not depend on the ones before it.

    python benchmarks/m2_settings.py [--epochs 10] [--out runs/m2-settings]
    python benchmarks/m2_settings.py --setting '{"beta": 3, "fit": {"labelled_share": 0.5}}'   # one setting
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import ppvae
from ppvae.estimator.labels import keep_labels

SETTINGS = {
    "beta 1, each image once": {"beta": 1, "fit": {"labelled_share": 0}},
    "beta 3": {"beta": 3, "fit": {"labelled_share": 0}},
    "labelled share 0.5": {"beta": 1, "fit": {"labelled_share": 0.5}},
    "labelled share 0.1, beta 3": {"fit": {"labelled_share": 0.1}, "beta": 3},
    "labelled share 0.5, beta 3, alpha 1": {"fit": {"labelled_share": 0.5}, "beta": 3, "classifier_weight": 1},
    "labelled share 0.5, beta 3 (the defaults)": {"fit": {"labelled_share": 0.5}, "beta": 3},
}


def run_setting(setting: dict, epochs: int) -> dict:
    """Train M2 with ``setting`` (model arguments, and fit's under "fit"); its accuracy and label effect."""
    setting = dict(setting)
    fit_options = setting.pop("fit", {})
    data = ppvae.data.load("fashion-mnist", split="train")
    test = ppvae.data.load("fashion-mnist", split="test")
    train, validation = data.subset(range(59000)), data.subset(range(59000, 60000))
    kept = keep_labels(train, 100, 10, 0)
    model = ppvae.SemiSupervisedVAE(**{"z_dim": 50, **setting})
    started = time.perf_counter()
    model.fit(kept, epochs=epochs, validation=validation, seed=0, progress=False, **fit_options)
    seconds = time.perf_counter() - started
    best = max(model.history, key=lambda r: r["val_accuracy"])
    z = torch.randn(200, model.z_dim)
    means = torch.stack([model.decode(z, y=torch.full((200,), label)).reshape(200, -1) for label in range(10)])
    effect = (means - means.mean(0)).abs().mean().item()
    return {
        "test_accuracy": model.score(test),
        "best_epoch": best["epoch"],
        "val_accuracy": [r["val_accuracy"] for r in model.history],
        "label_effect": effect,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--setting", help="one setting as JSON: run it here and print its result as JSON")
    parser.add_argument("--out", default="runs/m2-settings")
    args = parser.parse_args()
    if args.setting is not None:
        print(json.dumps(run_setting(json.loads(args.setting), args.epochs)), flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| M2 with 100 labels | test accuracy | best validation epoch | label effect |",
        "| --- | --- | --- | --- |",
    ]
    for name, setting in SETTINGS.items():
        command = [sys.executable, __file__, "--setting", json.dumps(setting), "--epochs", str(args.epochs)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        lines.append(
            f"| {name} | {result['test_accuracy']:.3f} | {result['best_epoch']} | {result['label_effect']:.3f} |"
        )
        print(lines[-1], f"({result['seconds']:.0f} s)", flush=True)
    table = "\n".join(lines)
    (out / "m2_settings.md").write_text(table + f"\n\n{args.epochs} epochs, seed 0.\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
