"""What ``compile=True`` costs before its first step, and when it pays: one-off seconds against seconds saved.

Each measurement runs in a fresh process, as a user's script does: the default VAE fits ``--epochs`` epochs
of ``--n`` Fashion-MNIST images with ``compile="auto"`` (the lowered step) and then with ``compile=True``.
A fit's wall time less its epochs' time is its set-up; the compiled fit's set-up less the lowered fit's is
the cost of compiling. The first process compiles with an empty inductor cache (a user's first compile);
the second finds the graph in that cache (every later compile of the same model on the same machine). The
last column is the number of epochs of all 60,000 images after which compiling has paid for itself. Run it
on an idle machine: a busy core slows a two-thread process far more than its share.

    python benchmarks/compile_cost.py [--n 12000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import ppvae


def measure(n: int, epochs: int) -> dict[str, float]:
    """Set-up and per-epoch seconds of the lowered and the compiled fit, in this process."""
    train = ppvae.data.load("fashion-mnist", split="train", limit=n)
    result = {}
    for name, compile in (("lowered", "auto"), ("compiled", True)):
        model = ppvae.VAE(z_dim=20)
        started = time.perf_counter()
        model.fit(train, epochs=epochs, binarize="dynamic", seed=0, progress=False, compile=compile)
        epoch_seconds = [record["seconds"] for record in model.history]
        result[f"{name} set-up"] = time.perf_counter() - started - sum(epoch_seconds)
        result[f"{name} epoch"] = min(epoch_seconds)  # the machine's noise only adds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=12000, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.n, args.epochs)))
        return

    command = [sys.executable, __file__, "--measure", "--n", str(args.n), "--epochs", str(args.epochs)]
    print(f"{args.epochs} epochs of {args.n} images, each row in a fresh process\n")
    print(
        "| inductor cache | compiling (s) | epoch, lowered (s) | epoch, compiled (s) | pays after, epochs of 60,000 |"
    )
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as cache:
        for label in ("empty", "holding the graph"):
            environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
            r = json.loads(output.strip().splitlines()[-1])
            cost = r["compiled set-up"] - r["lowered set-up"]
            saved = (r["lowered epoch"] - r["compiled epoch"]) * 60000 / args.n
            pays = f"{cost / saved:.1f}" if saved > 0 else "never"
            print(f"| {label} | {cost:.1f} | {r['lowered epoch']:.2f} | {r['compiled epoch']:.2f} | {pays} |")


if __name__ == "__main__":
    main()
