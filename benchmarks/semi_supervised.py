"""Semi-supervised learning on Fashion-MNIST: M2's test accuracy against classifiers that see only the labels.

For each label count (balanced: count / 10 per class, drawn with the seed) and seed, on the 59,000 first
training images (the last 1,000, with their labels, are the validation split that chooses each model's
epoch by accuracy) and the 10,000 test images:

    m2               ppvae.SemiSupervisedVAE: the label enumerated, the classifier's term (alpha) on
    m2, no alpha     the same with classifier_weight=0: q(y | x) learns only through the unlabelled bound
    m2, sampled y    the same with enumerate_labels=False: y drawn, a score-function gradient
    m1+m2            M2 on the 50 posterior means of a VAE (M1) trained on every training image, a normal
                     likelihood with a learned scale (Kingma et al.'s stacked model)
    labels only      q(y | x)'s own network (MLP 784-400-10, or the conv network with --classifier conv)
                     trained by cross-entropy on the labelled images alone, on the images M2's q(y | x) reads
                     (binarised, or grey with a grey-level likelihood), its epoch chosen on the same split
    logistic         scikit-learn's logistic regression on the labelled pixels (the issue's reference)

Every M2 trains for the same number of epochs with the same network (MLP 400, z_dim 50); ``--classifier conv``
gives q(y | x) in M2 and the labels-only baseline the conv network instead. M2's likelihood is a Bernoulli on
dynamically binarised images; ``--likelihood continuous_bernoulli`` scores the grey levels themselves, so that
q(y | x), and the labels-only baseline with it, reads the grey images the logistic regression reads. The table goes to
``--out``/semi_supervised.md, with the samples of each class from the M2 of the first seed at the
smallest label count.

    python benchmarks/semi_supervised.py [--labels 100 600 1000 3000] [--seeds 0 1 2] [--epochs 10]
        [--methods m2 "m2, no alpha" "m2, sampled y" "labels only" logistic] [--alpha 50] [--beta 3]
        [--labelled-share 0.5] [--classifier mlp] [--likelihood bernoulli] [--out runs/semi-supervised]

``--beta 1 --labelled-share 0`` trains Kingma et al.'s objective as written (each image once an epoch).
``--out``/semi_supervised.json keeps each run: its test accuracy and, for an M2, its best epoch, its seconds and
its validation accuracy after every epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import ppvae
from ppvae import viz
from ppvae.data import binarize
from ppvae.estimator.figures import save_figure_atomic
from ppvae.estimator.labels import keep_labels
from ppvae.parts import NETWORKS

M2_SETTINGS = {
    "m2": {},
    "m2, no alpha": {"classifier_weight": 0.0},
    "m2, sampled y": {"enumerate_labels": False},
}
METHODS = [*M2_SETTINGS, "m1+m2", "labels only", "logistic"]


def m1_codes(train, validation, test, seed, epochs):
    """The datasets as the posterior means of a VAE (z_dim 50) fitted to the training images, (N, 1, 1, 50)."""
    vae = ppvae.VAE(z_dim=50).fit(train, epochs=epochs, seed=seed, progress=False)
    return [
        ppvae.data.ImageDataset(vae.encode(d).reshape(len(d), 1, 1, 50), d.y, d.name, d.split)
        for d in (train, validation, test)
    ]


def m1_m2_accuracy(codes, labels, seed, epochs, alpha, share, beta):
    train, validation, test = codes
    model = ppvae.SemiSupervisedVAE(
        x_shape=(1, 1, 50),
        z_dim=50,
        likelihood={"name": "normal", "scale": "learned"},
        classifier_weight=alpha,
        beta=beta,
    )
    model.fit(
        train, labelled=labels, labelled_share=share, epochs=epochs, validation=validation, seed=seed, progress=False
    )
    return model.score(test)


def m2_accuracy(name, train, validation, test, labels, seed, epochs, alpha, share, beta, classifier, likelihood):
    settings = {
        "classifier_weight": alpha,
        "classifier_network": classifier,
        "likelihood": likelihood,
        **M2_SETTINGS[name],
    }
    model = ppvae.SemiSupervisedVAE(z_dim=50, beta=beta, **settings)
    started = time.perf_counter()
    model.fit(
        train, labelled=labels, labelled_share=share, epochs=epochs, validation=validation, seed=seed, progress=False
    )
    seconds = time.perf_counter() - started
    best = max(model.history, key=lambda r: r["val_accuracy"])
    curve = [round(r["val_accuracy"], 4) for r in model.history]  # where it peaked, and whether it still climbs
    return model, model.score(test), {"epoch": best["epoch"], "seconds": seconds, "val_accuracy": curve}


def labels_only_accuracy(train, validation, test, labels, seed, classifier="mlp", grey=False, epochs=200):
    """M2's classifier network alone, trained by cross-entropy on the labelled images as M2 reads them: binarised
    afresh each epoch, or with ``grey`` the grey images; the epoch with the best validation accuracy is kept."""
    kept = keep_labels(train, labels, 10, seed)
    x, y = kept.x[kept.y >= 0], kept.y[kept.y >= 0]
    torch.manual_seed(seed)
    net = NETWORKS.build(classifier, x_shape=(1, 28, 28), z_dim=1, encoder_out=10, decoder_out=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    val_x, test_x = (d.x if grey else binarize(d.x, "static", seed=seed) for d in (validation, test))
    best, state = -1.0, None
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            index = order[i : i + 100]
            loss = torch.nn.functional.cross_entropy(
                net.encoder(x[index] if grey else torch.bernoulli(x[index])), y[index]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()  # batch norm, in the conv network, on its running statistics
        with torch.no_grad():
            score = (net.encoder(val_x).argmax(-1) == validation.y).double().mean().item()
        if score > best:
            best, state = score, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    with torch.no_grad():
        predicted = torch.cat([net.encoder(test_x[i : i + 1000]).argmax(-1) for i in range(0, len(test_x), 1000)])
    return (predicted == test.y).double().mean().item()


def logistic_accuracy(train, test, labels, seed):
    from sklearn.linear_model import LogisticRegression

    kept = keep_labels(train, labels, 10, seed)
    known = kept.y >= 0
    classifier = LogisticRegression(max_iter=2000).fit(kept.x[known].flatten(1).numpy(), kept.y[known].numpy())
    return float(classifier.score(test.x.flatten(1).numpy(), test.y.numpy()))


def cell(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return f"{mean:.3f} ± {se:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=50.0, help="M2's classifier_weight")
    parser.add_argument(
        "--beta", type=float, default=3.0, help="M2's beta: the weight of z's KL in training (its default, 3)"
    )
    parser.add_argument(
        "--labelled-share", type=float, default=0.5, help="M2's labelled_share (its default, 0.5; 0: each image once)"
    )
    parser.add_argument(
        "--classifier", choices=["mlp", "conv"], default="mlp", help="q(y | x)'s network, in M2 and labels only"
    )
    parser.add_argument(
        "--likelihood",
        choices=["bernoulli", "continuous_bernoulli"],
        default="bernoulli",
        help="M2's likelihood: binarised images, or the grey levels (q(y | x) and labels only then read grey images)",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--out", default="runs/semi-supervised")
    parser.add_argument("--limit", type=int, help="train on the first N images only (a quick check of the script)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ppvae.data.load("fashion-mnist", split="train")
    train, validation = data.subset(args.limit or 59_000), data.subset(torch.arange(59_000, 60_000))
    test = ppvae.data.load("fashion-mnist", split="test")
    results: dict[str, dict[int, list[float]]] = {m: {n: [] for n in args.labels} for m in args.methods}
    details = []
    cache = {}  # the M1 codes of each seed, shared by the label counts
    for labels in args.labels:
        for seed in args.seeds:
            for method in args.methods:
                started = time.perf_counter()
                extra = {}
                if method in M2_SETTINGS:
                    model, score, extra = m2_accuracy(
                        method,
                        train,
                        validation,
                        test,
                        labels,
                        seed,
                        args.epochs,
                        args.alpha,
                        args.labelled_share,
                        args.beta,
                        args.classifier,
                        args.likelihood,
                    )
                    if method == "m2" and labels == args.labels[0] and seed == args.seeds[0]:
                        rows = dict(zip(model.class_names, model.class_samples(10).cpu()))
                        title = f"M2 trained with {labels} labels: samples of each class"
                        save_figure_atomic(viz.image_rows, out / "m2_classes.png", rows, title=title)
                elif method == "m1+m2":
                    if (seed, "codes") not in cache:
                        cache[(seed, "codes")] = m1_codes(train, validation, test, seed, args.epochs)
                    score = m1_m2_accuracy(
                        cache[(seed, "codes")], labels, seed, args.epochs, args.alpha, args.labelled_share, args.beta
                    )
                elif method == "labels only":
                    score = labels_only_accuracy(
                        train, validation, test, labels, seed, args.classifier, args.likelihood != "bernoulli"
                    )
                else:
                    score = logistic_accuracy(train, test, labels, seed)
                results[method][labels].append(score)
                details.append({"method": method, "labels": labels, "seed": seed, "accuracy": score, **extra})
                print(
                    f"{method:>14} {labels:>5} labels, seed {seed}: test accuracy {score:.3f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    header = "| method | " + " | ".join(f"{n} labels" for n in args.labels) + " |"
    lines = [header, "| --- |" + " --- |" * len(args.labels)]
    for method in args.methods:
        lines.append(f"| {method} | " + " | ".join(cell(results[method][n]) for n in args.labels) + " |")
    table = "\n".join(lines)
    note = (
        f"Test accuracy on the 10,000 Fashion-MNIST test images, mean ± standard error over seeds "
        f"{', '.join(map(str, args.seeds))}; M2 trained {args.epochs} epochs (alpha {args.alpha:g}, "
        f"beta {args.beta:g}, labelled share {args.labelled_share:g}, classifier {args.classifier}, "
        f"likelihood {args.likelihood})."
    )
    print("\n" + table + "\n\n" + note)
    (out / "semi_supervised.md").write_text(table + "\n\n" + note + "\n")
    (out / "semi_supervised.json").write_text(json.dumps(details, indent=1) + "\n")


if __name__ == "__main__":
    main()
