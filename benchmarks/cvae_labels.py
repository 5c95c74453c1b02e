"""Does the label matter? Conditional samples classified by a classifier trained on real images.

A small classifier (784-256-10 MLP, trained here on the real Fashion-MNIST training
images; a measuring instrument, not part of ppvae) labels 100 samples of each
class from each CVAE. The fraction classified as the class that was asked for is
set beside the classifier's accuracy on real test images: samples as recognisable
as real images score as high. Also reported: the test ELBO, and how much the
decoded image changes when only the label changes against when only z changes
(mean absolute pixel difference), the measure the issue started from.

    python benchmarks/cvae_labels.py [--epochs 10] [--limit 60000] [--out runs/cvae-labels]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

import ppvae

SETTINGS = {  # name: CVAE arguments
    "z=2, normal prior": {"z_dim": 2},
    "z=8, normal prior": {"z_dim": 8},
    "z=8, conditional prior": {"z_dim": 8, "prior": "conditional"},
    "z=20, normal prior": {"z_dim": 20},
    "z=20, conditional prior": {"z_dim": 20, "prior": "conditional"},
}


def train_classifier(train: ppvae.data.ImageDataset, epochs: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(train))
        for i in range(0, len(train), 128):
            index = order[i : i + 128]
            loss = nn.functional.cross_entropy(net(train.x[index]), train.y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (classifier(images).argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def label_effect(model: ppvae.CVAE, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean |pixel difference| between decodes that differ only in the label, and only in z."""
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, model.z_dim, generator=g), torch.randn(n, model.z_dim, generator=g)
    y1 = torch.randint(0, 10, (n,), generator=g)
    y2 = (y1 + torch.randint(1, 10, (n,), generator=g)) % 10
    across_labels = (model.decode(z1, y1) - model.decode(z1, y2)).abs().mean().item()
    across_z = (model.decode(z1, y1) - model.decode(z2, y1)).abs().mean().item()
    return across_labels, across_z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=60000, help="training images")
    parser.add_argument("--out", default="runs/cvae-labels", help="a run folder per setting, with its figures")
    args = parser.parse_args()
    train = ppvae.data.load("fashion-mnist", split="train", limit=args.limit)
    test = ppvae.data.load("fashion-mnist", split="test")
    started = time.perf_counter()
    classifier = train_classifier(train)
    real = accuracy(classifier, test.x, test.y)
    print(f"classifier: {real:.3f} on the real test images ({time.perf_counter() - started:.0f} s to train)")
    asked = torch.arange(10).repeat_interleave(100)
    rows = []
    for name, options in SETTINGS.items():
        model = ppvae.CVAE(x_shape=train.shape, num_classes=10, **options)
        started = time.perf_counter()
        model.fit(
            train,
            epochs=args.epochs,
            test=test.subset(2000),
            seed=0,
            progress=False,
            overwrite=True,
            out=Path(args.out) / name.replace(", ", "-").replace("=", "").replace(" ", "-"),
        )
        seconds = time.perf_counter() - started
        samples = model.sample(1000, y=asked, seed=1)
        across_labels, across_z = label_effect(model)
        rows.append(
            (
                name,
                model.history[-1]["test_elbo"],
                accuracy(classifier, samples, asked),
                across_labels,
                across_z,
                seconds,
            )
        )
        print(rows[-1], flush=True)
    print(f"\nClassifier accuracy on real test images: {real:.3f}\n")
    print("| CVAE | test ELBO (nats) | samples classified as asked | pixel change: label | pixel change: z | fit (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, elbo, acc, across_labels, across_z, seconds in rows:
        print(f"| {name} | {elbo:.2f} | {acc:.3f} | {across_labels:.3f} | {across_z:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
