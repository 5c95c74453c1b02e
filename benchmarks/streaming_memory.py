"""Peak memory of training on a memory-mapped array: it must not grow with the dataset's size.

Writes two .npy files of 28x28 uint8 images (Fashion-MNIST's training images
repeated, with a random flip each, to reach the size asked for) and trains the
default VAE for one epoch on each, in a fresh process, two ways:

- streamed: ``ppvae.data.load(path, lazy=True)``, batches read through a DataLoader;
- in memory: the whole array loaded as one tensor (the fast path), for contrast.

Each process reports its peak resident memory (the kernel's high-water mark,
VmHWM) and its peak anonymous memory (RssAnon, sampled every 10 ms): the pages of
a memory-mapped file count in the first but are page cache the kernel can drop at
any time, so the second is what the process itself holds.

    python benchmarks/streaming_memory.py [--sizes 50000 200000] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _status(field: str) -> int:
    """A /proc/self/status field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return 0


def worker(path: str, mode: str, batch_size: int) -> dict:
    import torch

    import ppvae

    peak_anon = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], _status("RssAnon"))
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    baseline = _status("RssAnon")
    data = ppvae.data.load(path, lazy=True) if mode == "streamed" else torch.from_numpy(np.load(path))
    model = ppvae.VAE(z_dim=20)
    started = time.perf_counter()
    model.fit(data, epochs=1, batch_size=batch_size, binarize="dynamic", progress=False)
    seconds = time.perf_counter() - started
    done.set()
    return {
        "images": len(data),
        "mode": mode,
        "seconds": seconds,
        "peak_rss_mb": _status("VmHWM"),
        "peak_anon_mb": max(peak_anon[0], _status("RssAnon")),
        "anon_at_import_mb": baseline,
    }


def write_array(path: Path, n: int) -> None:
    import ppvae

    train = ppvae.data.load("fashion-mnist", split="train")
    pixels = (train.x[:, 0] * 255).round().to(dtype=__import__("torch").uint8).numpy()
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    for start in range(0, n, len(pixels)):
        block = pixels[: min(len(pixels), n - start)]
        flip = rng.random(len(block)) < 0.5
        out[start : start + len(block)] = np.where(flip[:, None, None], block[:, :, ::-1], block)
    out.flush()
    del out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50000, 200000])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.batch_size)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for n in args.sizes:
            path = Path(directory) / f"images-{n}.npy"
            write_array(path, n)
            for mode in ("streamed", "in memory"):
                result = subprocess.run(
                    [sys.executable, __file__, "--worker", str(path), mode, "--batch-size", str(args.batch_size)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append({**json.loads(result.stdout.splitlines()[-1]), "file_mb": path.stat().st_size / 2**20})
                print(rows[-1], flush=True)
    print("\n| images | .npy file (MB) | data | epoch (s) | images/s | peak RSS (MB) | peak anonymous memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['images']:,} | {r['file_mb']:.0f} | {r['mode']} | {r['seconds']:.1f} "
            f"| {r['images'] / r['seconds']:,.0f} | {r['peak_rss_mb']} | {r['peak_anon_mb']} |"
        )


if __name__ == "__main__":
    main()
