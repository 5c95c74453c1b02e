"""Does the step change the answer? The default VAE fitted through each step, three seeds each, scored alike.

The lowered step (fit's default) draws the Pyro programs' noise and is checked against them on the first
batch; the compiled one is the lowered one through ``torch.compile``. Both should reach the programs' test
ELBO within seed-to-seed noise. Each row is one step: the test ELBO (mean and standard error over seeds,
on the first ``--test`` test images with one fixed binarisation), and each seed's value beside it, with
the largest difference from the programs' run of the same seed.

    python benchmarks/step_agreement.py [--epochs 5] [--seeds 0 1 2] [--n 60000] [--test 10000]
"""

from __future__ import annotations

import argparse
import statistics

import ppvae

STEPS = {"pyro programs": False, "lowered (default)": "auto", "compiled": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=60000, help="training images")
    parser.add_argument("--test", type=int, default=10000, help="test images scored")
    args = parser.parse_args()
    train = ppvae.data.load("fashion-mnist", split="train", limit=args.n)
    test = ppvae.data.load("fashion-mnist", split="test", limit=args.test)

    elbos: dict[str, list[float]] = {name: [] for name in STEPS}
    for seed in args.seeds:
        for name, compile in STEPS.items():
            model = ppvae.VAE(z_dim=20).fit(train, epochs=args.epochs, seed=seed, compile=compile, progress=False)
            assert model.fit_record.options["step"] == {False: "pyro", "auto": "lowered", True: "compiled"}[compile]
            elbos[name].append(model.evaluate(test, seed=0)["elbo"])
            print(f"seed {seed}, {name}: test ELBO {elbos[name][-1]:.3f}", flush=True)

    print(f"\n{args.epochs} epochs on {len(train)} images, test ELBO on {len(test)} test images\n")
    print("| step | test ELBO, mean ± s.e. | per seed | largest difference from the programs, same seed |")
    print("| --- | --- | --- | --- |")
    for name, values in elbos.items():
        error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        largest = max(abs(a - b) for a, b in zip(values, elbos["pyro programs"]))
        cells = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {statistics.mean(values):.3f} ± {error:.3f} | {cells} | {largest:.3f} |")


if __name__ == "__main__":
    main()
