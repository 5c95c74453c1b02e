"""Seconds per training epoch of ppvae's VAE at this checkout against an earlier commit: a regression check.

Each version trains in its own long-lived process (two ppvae packages cannot share one),
next to a third process running the hand-written PyTorch loop of ``train_speed.py`` with
default Adam. The driver asks each for one epoch in turn, in an order that rotates
round by round (see ``train_speed.round_order``), and reports the median over rounds of
each round's ratio, with a bootstrap 95% interval, so that the drift of a shared machine
cancels. The earlier commit is checked out into a temporary git worktree.

    python benchmarks/train_speed_versions.py --baseline 7352ff1~1 [--n 12000] [--rounds 42]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
import torch, ppvae
train = ppvae.data.load("fashion-mnist", split="train", limit=int(sys.argv[2]))
if sys.argv[3] == "pytorch":
    sys.path.insert(0, sys.argv[4])
    from train_speed import TorchVAE, torch_epoch
    x = train.x.reshape(len(train), -1)
    reference = TorchVAE()
    optimizer, generator = torch.optim.Adam(reference.parameters(), lr=1e-3), torch.Generator().manual_seed(0)
    epoch = lambda: torch_epoch(reference, optimizer, x, 128, generator)
else:
    model = ppvae.VAE(z_dim=20)
    def epoch():
        model.fit(train, epochs=1, batch_size=128, binarize="dynamic", elbo="meanfield", progress=False)
        return model.history[-1]["seconds"]
for _ in sys.stdin:
    print(epoch(), flush=True)
"""


class Worker:
    """A process that trains one epoch per line it reads and answers with the epoch's seconds."""

    def __init__(self, root: Path, n: int, kind: str):
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), str(n), kind, str(HERE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
        )

    def epoch(self) -> float:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("a worker died; run it by hand to see why")
        return float(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--n", type=int, default=12000, help="training images per epoch")
    parser.add_argument("--rounds", type=int, default=42)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from train_speed import paired_ratio, round_order

    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(baseline), args.baseline], check=True
        )
        try:
            workers = {
                "pytorch": Worker(ROOT, args.n, "pytorch"),
                "baseline": Worker(baseline, args.n, "ppvae"),
                "this checkout": Worker(ROOT, args.n, "ppvae"),
            }
            for worker in workers.values():  # warm-up
                worker.epoch()
            times: dict[str, list[float]] = {name: [] for name in workers}
            started = time.perf_counter()
            for round_ in range(args.rounds):
                for name in round_order(list(workers), round_):
                    times[name].append(workers[name].epoch())
            for worker in workers.values():
                worker.close()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)

    print(f"{args.n} images, {args.rounds} rounds in {time.perf_counter() - started:.0f} s; baseline {args.baseline}")
    print("median over rounds of each round's ratio, [bootstrap 95% interval]\n")
    print("| loop | s / epoch (median) | ratio to PyTorch, default Adam | ratio to the baseline |")
    print("| --- | --- | --- | --- |")

    def ratio(name: str, base: str) -> str:
        return "1.000" if name == base else "{:.3f} [{:.3f}, {:.3f}]".format(*paired_ratio(times[name], times[base]))

    for name, values in times.items():
        to_base = "" if name == "pytorch" else ratio(name, "baseline")
        print(f"| {name} | {statistics.median(values):.3f} | {ratio(name, 'pytorch')} | {to_base} |")


if __name__ == "__main__":
    main()
