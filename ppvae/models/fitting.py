"""The training loop every model shares: SVI epochs over an in-memory tensor of images.

Work that can be done once is done once: the data is moved to the device,
binarised (static/threshold) and checked against the likelihood before the
first step, and the program is validated by Pyro on the first batch. Inside
an epoch a step is a slice of the data, an optional fresh Bernoulli draw
(dynamic binarisation) and one ``SVITrainer.step``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyro
import torch
from tqdm import tqdm

from ppvae.data import binarize as binarize_images
from ppvae.infer import SVITrainer, make_elbo

if TYPE_CHECKING:
    from ppvae.models.base import Data, LatentVariableModel


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


def fit_svi(
    model: "LatentVariableModel",
    data: "Data",
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    binarize: str | None,
    test: "Data | None",
    elbo: str,
    num_particles: int,
    seed: int,
    device: str | torch.device | None,
    progress: bool,
    checkpoint_dir: str | Path | None,
    y: torch.Tensor | None,
    kl_warmup: int = 0,
) -> list[dict[str, Any]]:
    _check_positive(epochs=epochs, batch_size=batch_size, lr=lr)
    if elbo == "iwae" and (getattr(model, "beta", 1.0) != 1.0 or kl_warmup):
        raise ValueError("elbo='iwae' trains the importance-weighted bound, which has no beta; use beta=1 and no kl_warmup")
    if kl_warmup < 0 or (kl_warmup and not hasattr(model, "kl_annealing")):
        raise ValueError(f"kl_warmup must be a number of epochs >= 0 for a model with a KL weight, got {kl_warmup}")
    if device is not None:
        model.to(device)
    pyro.set_rng_seed(seed)

    x = model._images(data)
    if x.shape[0] == 0:
        raise ValueError("no training images")
    c = model._labels(data, y)
    method = model.resolve_binarize(binarize, x)
    dynamic = method == "dynamic"
    if not dynamic:
        x = binarize_images(x, method, seed=seed)
    model.check_data(torch.bernoulli(x[:batch_size]) if dynamic else x)
    if not model.history:
        model.initialize(x)
    if dynamic and (x.min() < 0 or x.max() > 1):
        raise ValueError("dynamic binarisation needs pixel values in [0, 1]")

    model.fit_config = {"binarize": method, "elbo": elbo, "num_particles": num_particles, "lr": lr,
                        "batch_size": batch_size, "seed": seed, "kl_warmup": kl_warmup}  # fmt: skip
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "name"):
        model.fit_config["dataset"] = data.name
    x_test = model.prepare(test, seed=seed) if test is not None else None
    if x_test is not None:
        model.preview = x_test[:16].cpu().clone()  # a copy: a view would save the whole test set

    trainer = SVITrainer(model.model, model.guide, model.parameters(), make_elbo(elbo, num_particles), lr=lr)
    n = x.shape[0]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    first = x[:batch_size]
    trainer.validate(torch.bernoulli(first) if dynamic else first, None if c is None else c[:batch_size])

    start_epoch = len(model.history)
    # KL warm-up: the latent site's weight rises linearly, step by step, from just above 0
    # (Pyro cannot scale a site by 0) to beta over the first kl_warmup epochs.
    warmup_steps = kl_warmup * -(-n // batch_size)
    global_step = 0
    for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator, device=x.device)
        total = torch.zeros((), device=x.device)
        annealed = False  # whether any step of this epoch trained at a KL weight below beta
        bar = tqdm(total=n, desc=f"epoch {epoch}/{start_epoch + epochs}", unit="img", disable=not progress, leave=False)
        with pyro.validation_enabled(False), bar:
            for step, i in enumerate(range(0, n, batch_size)):
                index = order[i : i + batch_size]
                xb = torch.bernoulli(x[index]) if dynamic else x[index]
                if warmup_steps:
                    model.kl_annealing = min(1.0, (global_step + 1) / warmup_steps)
                    annealed = annealed or model.kl_annealing < 1.0
                global_step += 1
                total += trainer.step(xb, None if c is None else c[index])
                if progress and (step % 20 == 0 or i + batch_size >= n):
                    bar.set_postfix(loss=f"{total.item() / min(i + batch_size, n):.2f}")
                    bar.update(min(i + batch_size, n) - bar.n)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": total.item() / n, "seconds": time.perf_counter() - started}
        if elbo == "iwae":
            record["train_iwae"] = -record["train_loss"]
        elif getattr(model, "beta", 1.0) == 1.0 and not annealed:
            record["train_elbo"] = -record["train_loss"]  # the loss is the true ELBO only at weight 1
        if hasattr(model, "kl_annealing"):
            record["kl_weight"] = model.beta * model.kl_annealing
        if x_test is not None:
            test_labels = getattr(test, "y", None) if model.conditional else None
            scores = model.evaluate(x_test, y=test_labels, binarize=None, seed=seed)
            record.update({f"test_{k}": v for k, v in scores.items() if k != "n"})
        model.history.append(record)
        if progress:
            shown = ", ".join(f"{k} {v:.2f}" for k, v in record.items() if k.endswith(("elbo", "kl", "reconstruction")))
            tqdm.write(f"epoch {epoch}: {shown} ({record['seconds']:.1f} s)")
        if checkpoint_dir is not None:
            model.save(checkpoint_dir, figures=False)
    return model.history
