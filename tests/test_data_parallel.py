"""Data-parallel training on two CPU processes with the gloo backend.

Each test spawns two processes (a few seconds to start); the workers are module-level
functions so that spawned processes can import them.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, small_data

import ppvae
from ppvae.infer import (
    KLWeight,
    ObjectiveModule,
    TensorBatches,
    TrainingLoop,
    launch,
    make_adam,
    make_elbo,
    make_fabric,
    shard_order,
)


def train_and_gather(fabric, x, seed):
    """Three epochs of the loop on this rank; rank 0 gathers every rank's weights and shard."""
    torch.manual_seed(seed)  # the same initial weights on every rank
    vae = ppvae.VAE(**SMALL)
    loss, optimizer = fabric.setup(
        ObjectiveModule(vae, vae.model, vae.guide, make_elbo("trace")), make_adam(list(vae.parameters()), 1e-2)
    )
    batches = TensorBatches(x, batch_size=32, seed=seed).for_rank(fabric.world_size, fabric.global_rank, fabric.device)
    result = TrainingLoop(fabric, loss, optimizer, batches, KLWeight(), seed=seed, progress=False).run(1, 3)
    flat = torch.cat([p.detach().flatten() for p in vae.parameters()])
    shard = shard_order(x.shape[0], seed, 1, fabric.world_size, fabric.global_rank)
    return {
        "weights": fabric.all_gather(flat),
        "shards": fabric.all_gather(shard),
        "losses": [r["train_loss"] for r in result.records],
    }


def test_two_processes_keep_identical_weights_on_disjoint_shards_and_learn():
    x = small_data()
    result = launch(make_fabric("cpu", devices=2), train_and_gather, x, 5)
    assert result["weights"].shape[0] == 2 and torch.equal(result["weights"][0], result["weights"][1])
    shards = result["shards"]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist()) and sorted(shards.flatten().tolist()) == list(
        range(256)
    )
    assert result["losses"][-1] < result["losses"][0]


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_two_processes_equal_one_at_the_same_global_batch(network):
    """With a point-mass guide on binary pixels there is no per-image noise, so the data-parallel run must
    reproduce the one-process run: same global batches, the summed loss scaled by the number of processes."""
    x = small_data(256)
    spec = {
        "x_shape": (1, 8, 8),
        "z_dim": 2,
        "guide": "delta",
        "network": {"name": "mlp", "hidden": [32]}
        if network == "mlp"
        else {"name": "conv", "channels": [4, 4], "hidden": 16},
    }
    if (
        network == "conv"
    ):  # batch norm makes a batch's statistics per process: one image per process-batch of the same size
        spec["x_shape"] = (1, 8, 8)
    one, two = ppvae.VAE(**spec), ppvae.VAE(**spec)
    one.fit(x, epochs=2, batch_size=64, binarize=None, accelerator="cpu", progress=False)
    two.fit(x, epochs=2, batch_size=64, binarize=None, accelerator="cpu", devices=2, progress=False)
    if network == "mlp":
        for a, b in zip(one.parameters(), two.parameters()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert [r["train_loss"] for r in one.history] == pytest.approx([r["train_loss"] for r in two.history], rel=1e-6)
    else:  # batch norm normalises each process's half-batch by its own statistics: close, not equal
        assert two.history[-1]["train_loss"] < two.history[0]["train_loss"]
        assert two.history[-1]["train_loss"] == pytest.approx(one.history[-1]["train_loss"], rel=0.05)


def test_data_parallel_fit_with_the_vampprior_a_run_folder_and_a_stream(tmp_path):
    pixels = (small_data(256).numpy() * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    model = ppvae.VAE(**{**SMALL, "prior": {"name": "vamp", "components": 4}})
    history = model.fit(
        ppvae.data.load(tmp_path / "images.npy", lazy=True),
        epochs=2,
        batch_size=32,
        lr=3e-3,
        devices=2,
        accelerator="cpu",
        out=tmp_path / "run",
        test=small_data(32, 1),
        progress=False,
    ).history
    assert [r["epoch"] for r in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]
    saved = ppvae.load(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))
    resumed = ppvae.VAE(**{**SMALL, "prior": {"name": "vamp", "components": 4}})
    resumed.fit(
        ppvae.data.load(tmp_path / "images.npy", lazy=True),
        epochs=3,
        resume=True,
        devices=2,
        accelerator="cpu",
        out=tmp_path / "run",
        progress=False,
    )
    assert len(resumed.history) == 3


def test_a_global_batch_that_does_not_split_is_explained():
    with pytest.raises(ValueError, match="must divide evenly across 2 processes"):
        ppvae.VAE(**SMALL).fit(small_data(), batch_size=33, devices=2, accelerator="cpu", progress=False)


def test_a_conditional_model_trains_data_parallel_from_a_labelled_stream(tmp_path):
    x = small_data(128)
    np.save(tmp_path / "x.npy", (x.numpy() * 255).astype(np.uint8))
    np.save(tmp_path / "y.npy", (torch.arange(128) % 4).numpy())
    stream = ppvae.data.NpyImages(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    model = ppvae.CVAE(
        x_shape=(1, 8, 8), num_classes=4, z_dim=2, prior="conditional", network={"name": "mlp", "hidden": [16]}
    )
    history = model.fit(stream, epochs=2, batch_size=32, devices=2, accelerator="cpu", progress=False).history
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])
    assert model.sample(4, y=3).shape == (4, 1, 8, 8)


def test_under_torchrun_fit_joins_its_processes_and_equals_a_spawned_run(tmp_path):
    """torchrun starts the processes; each calls fit(devices=2), which joins them instead of spawning."""
    script = Path(__file__).parent / "scripts" / "torchrun_fit.py"
    torchrun = Path(sys.executable).parent / "torchrun"
    completed = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(29400 + os.getpid() % 500),
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Initializing distributed" not in completed.stdout + completed.stderr  # the engine's banners stay quiet
    rank0, rank1 = torch.load(tmp_path / "weights-0.pt"), torch.load(tmp_path / "weights-1.pt")
    assert torch.equal(rank0, rank1)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(256, 1, 8, 8, generator=g) * 0.6 + 0.2, generator=g)
    spawned = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]})
    spawned.fit(x, epochs=2, batch_size=32, devices=2, accelerator="cpu", progress=False, seed=3)
    assert torch.equal(torch.cat([p.detach().flatten() for p in spawned.parameters()]), rank0)
    saved = ppvae.load(tmp_path / "run")  # rank 0 alone wrote the run folder
    assert len(saved.history) == 2 and torch.equal(torch.cat([p.detach().flatten() for p in saved.parameters()]), rank0)
