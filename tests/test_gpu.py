"""Everything a user does with a model, on a CUDA device: skipped on a machine without one.

Run on a GPU machine with ``pytest -m gpu``. The CPU tests check the numbers; these check that
each path keeps its tensors on the device it was given and agrees with the CPU where it must:
weights saved on the GPU load on the CPU unchanged, and estimates agree within their error.
"""

import subprocess
import sys

import numpy as np
import pyro
import pytest
import torch
from conftest import SMALL, bars, same_weights, small_data, weights_of

import ppvae
from ppvae.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU = {"accelerator": "cuda", "progress": False}


def test_training_evaluation_and_evidence_run_on_the_gpu():
    model = ppvae.VAE(**SMALL)
    history = model.fit(small_data(), epochs=3, batch_size=32, lr=3e-3, test=small_data(64, 1), **GPU).history
    assert model.device.type == "cuda" and history[-1]["train_loss"] < history[0]["train_loss"]
    assert np.isfinite(model.evaluate(small_data(64, 1), num_samples=10)["log_px"])
    assert ppvae.log_evidence(model, small_data(8, 1), num_samples=20, progress=False).shape == (8,)


@pytest.mark.parametrize(
    "options",
    [
        {"z_dim": [4, 2]},
        {"z_dim": 2, "prior": "flow", "guide": "flow"},
        {"z_dim": [3, 2], "prior": {"name": "flow", "transform": "affine_autoregressive"}, "guide": "flow"},
    ],
)
def test_hierarchies_and_flows_train_score_and_anneal_on_the_gpu_and_load_on_the_cpu(options, tmp_path):
    model = ppvae.VAE(x_shape=(1, 8, 8), network={"name": "mlp", "hidden": [32]}, **options)
    model.fit(bars(200), epochs=2, out=tmp_path / "run", **GPU)
    assert model.device.type == "cuda"
    on_cpu = ppvae.load(tmp_path / "run")
    assert same_weights(weights_of(on_cpu), {k: v.cpu() for k, v in weights_of(model).items()})
    x = bars(6, seed=1).x
    assert model.sample(3).device.type == "cuda" and model.encode(x, site="all")
    ais = ppvae.log_evidence(model, x, method="ais", steps=20, progress=False)
    on_device = ppvae.log_evidence(model, x, 2000, seed=0, progress=False)
    on_host = ppvae.log_evidence(on_cpu, x, 2000, seed=0, progress=False)
    assert ais.isfinite().all() and (on_device - on_host).abs().max() < 0.3  # other noise, the same estimand


def test_training_on_the_gpu_prints_nothing_from_the_engine():
    """In a fresh process, as in a notebook: Fabric's one-time note on TF32 matmuls must not reach the user."""
    script = (
        "import torch, ppvae; ppvae.VAE(x_shape=(1, 8, 8), z_dim=2)"
        ".fit(torch.rand(64, 1, 8, 8).round(), epochs=1, accelerator='cuda', progress=False)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


@pytest.mark.parametrize("name", sorted(n for n, c in ppvae.MODELS.items() if c.__module__.startswith("ppvae.")))
def test_every_model_trains_on_the_gpu_and_loads_on_the_cpu(name, tmp_path):
    cls = ppvae.MODELS[name]
    model = cls(x_shape=(1, 8, 8), **({"z_dim": 2} if cls.capabilities.latent else {}))
    x = small_data(200)
    if not model.capabilities.binary:  # a density: continuous pixels
        x = ppvae.data.dequantize(torch.round(x * 128 + 64) / 255)
    data = ppvae.data.ImageDataset(x, torch.arange(200) % 10, "images", "train")
    model.fit(data, out=tmp_path / "run", test=data.subset(40), **GPU)  # options every model takes
    assert model.device.type == "cuda"
    on_cpu = ppvae.load(tmp_path / "run")  # the default device: weights saved from the GPU, read on the CPU
    assert on_cpu.device.type == "cpu" and same_weights(
        weights_of(on_cpu), {k: v.cpu() for k, v in weights_of(model).items()}
    )
    on_gpu = ppvae.load(tmp_path / "run", device="cuda")
    assert on_gpu.device.type == "cuda"
    labels = {"y": 1} if model.capabilities.condition == "labels" else {}
    if model.capabilities.samples_from_prior:
        assert model.sample(3, **labels).shape == (3, 1, 8, 8)
    scores = model.evaluate(data.subset(20), num_samples=5)
    assert np.isfinite(scores["elbo"]) and np.isfinite(scores["log_px"])
    assert ppvae.log_evidence(model, data.subset(7), num_samples=5, progress=False).shape == (7,)


def test_a_resumed_gpu_run_continues_where_the_straight_run_went(tmp_path):
    x = small_data()
    straight = ppvae.VAE(**SMALL)
    straight.fit(x, epochs=3, batch_size=32, kl_warmup=2, **GPU)
    resumed = ppvae.VAE(**SMALL)
    resumed.fit(x, epochs=1, batch_size=32, kl_warmup=2, out=tmp_path / "run", **GPU)
    again = ppvae.VAE(**SMALL)  # as a new process would: build, then resume the folder
    again.fit(x, epochs=3, resume=True, out=tmp_path / "run", **GPU)
    assert again.device.type == "cuda" and [r["epoch"] for r in again.history] == [1, 2, 3]
    for key, value in weights_of(straight).items():  # GPU kernels may reorder sums: equal to rounding, not bits
        torch.testing.assert_close(weights_of(again)[key], value, rtol=1e-4, atol=1e-5)


def test_the_gpu_estimates_the_same_evidence_as_the_cpu():
    model = ppvae.VAE(**SMALL)
    model.fit(small_data(), epochs=5, batch_size=32, lr=3e-3, progress=False)
    images = small_data(32, seed=1)
    exact = ppvae.log_evidence(model, images, method="quadrature", progress=False).cpu()  # z_dim 2: integrated
    estimates = {}
    for seed, device in enumerate(("cpu", "cuda")):  # different draws, the same number
        model.to(device)
        estimates[device] = ppvae.log_evidence(model, images, num_samples=2000, seed=seed, progress=False).cpu()
    assert (estimates["cuda"] - estimates["cpu"]).abs().mean() < 0.02
    for estimate in estimates.values():
        assert -0.01 < (exact - estimate).mean() < 0.05  # at or just below the truth, as importance sampling is


def test_held_out_images_are_the_same_on_every_device():
    """One seed, one set of held-out images: a static binarisation or a dequantisation does not depend on
    the device the data or the model sits on (a GPU's generator draws other numbers for the same seed)."""
    grey = torch.rand(50, 1, 8, 8)
    assert torch.equal(
        ppvae.data.binarize(grey.cuda(), "static", seed=3).cpu(), ppvae.data.binarize(grey, "static", seed=3)
    )
    levels = torch.round(grey * 255) / 255
    assert torch.equal(ppvae.data.dequantize(levels.cuda(), seed=3).cpu(), ppvae.data.dequantize(levels, seed=3))
    model = ppvae.VAE(**SMALL)
    model.fit(small_data(), epochs=1, batch_size=32, binarize="dynamic", accelerator="cpu", progress=False)
    on_cpu = model.prepare(grey)
    assert on_cpu.device.type == "cpu" and torch.equal(model.to("cuda").prepare(grey).cpu(), on_cpu)


def test_annealed_importance_sampling_and_bdmc_run_on_the_gpu():
    model = ppvae.VAE(**SMALL)
    model.fit(bars(300).x, epochs=3, batch_size=50, lr=3e-3, **GPU)
    images, estimate = ppvae.bdmc(model, num_images=10, steps=100, progress=False)
    exact = ppvae.log_evidence(model, images, method="quadrature", binarize=None, progress=False).cpu()
    lower, upper = estimate.log_evidence.cpu(), estimate.upper.cpu()
    assert (lower - exact).mean() < 0.05 and (upper - exact).mean() > -0.05
    assert estimate.evaluation == "lowered"  # the chains ran the lowered log-joint on the device
    assert estimate.graphed  # in CUDA graphs, forward and reverse


def test_the_chains_in_a_cuda_graph_are_the_eager_chains(capsys):
    model = ppvae.VAE(**SMALL).to("cuda")
    x = torch.bernoulli(torch.full((40, 1, 8, 8), 0.3, device="cuda"), generator=torch.Generator("cuda").manual_seed(0))
    options = dict(method="ais", chains=4, steps=50, diagnostics=True, seed=0, batch_size=25)  # a partial batch
    graphed = ppvae.log_evidence(model, x, progress=True, **options)
    eager = ppvae.log_evidence(model, x, progress=False, cuda_graph=False, **options)
    said = capsys.readouterr()
    assert graphed.graphed and not eager.graphed and "CUDA graph" not in said.out + said.err
    assert torch.allclose(graphed.log_weights, eager.log_weights, rtol=0, atol=1e-3)
    assert torch.allclose(graphed.step_size, eager.step_size, rtol=1e-4)


def test_streamed_data_and_conv_networks_with_a_vampprior_train_on_the_gpu(tmp_path):
    pixels = (small_data(512).numpy() * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    data = ppvae.data.load(tmp_path / "images.npy", lazy=True)  # a DataLoader, pinned memory, copies to the GPU
    model = ppvae.VAE(
        x_shape=(1, 8, 8),
        z_dim=2,
        network={"name": "conv", "channels": [8, 16]},
        prior={"name": "vamp", "components": 5},
    )
    history = model.fit(data, epochs=3, batch_size=64, lr=3e-3, binarize=None, **GPU).history
    assert model.device.type == "cuda" and history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_trains_on_the_gpu(precision):
    model = ppvae.VAE(**SMALL)
    history = model.fit(small_data(), epochs=3, batch_size=32, lr=3e-3, precision=precision, **GPU).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert next(model.parameters()).dtype == torch.float32  # mixed: the weights stay float32


def test_a_cvae_on_the_gpu_draws_the_class_it_is_asked_for():
    model = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2, network={"name": "mlp", "hidden": [16]})
    model.fit(bars(600), epochs=30, batch_size=60, lr=3e-3, **GPU)
    for name in ("top", "bottom", "left"):
        mean = model.sample(50, y=name, seed=0).mean(0)[0].cpu()
        regions = {"top": mean[:4].mean(), "bottom": mean[4:].mean(), "left": mean[:, :4].mean()}
        assert max(regions, key=regions.get) == name, (name, regions)


def test_the_latent_toolkit_works_on_a_gpu_model():
    model = ppvae.VAE(**SMALL)
    data = bars(300)
    model.fit(data, epochs=3, batch_size=50, lr=3e-3, **GPU)
    assert ppvae.latent.active_units(model, data).variance.shape == (2,)
    assert ppvae.latent.traverse(model, steps=5).shape[:2] == (2, 5)
    assert ppvae.latent.manifold(model, steps=4)[0].shape[:2] == (4, 4)
    assert ppvae.latent.interpolate(model, data.x[0], data.x[1], steps=6)[0].shape == (6, 1, 8, 8)
    assert 0 <= ppvae.latent.latent_knn_accuracy(model, data, bars(90, seed=1), k=3) <= 1


def test_the_cli_trains_on_the_gpu_and_the_run_loads_on_the_cpu(tmp_path, capsys):
    np.save(tmp_path / "images.npy", (small_data(256).numpy() * 255).astype(np.uint8))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "images.npy"),
                "--z-dim",
                "2",
                "--epochs",
                "2",
                "--accelerator",
                "cuda",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert ppvae.load(run).sample(4).shape[0] == 4


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_the_training_step_waits_for_the_gpu_nowhere(elbo):
    """Forward, backward and the optimizer step with CUDA's sync debugging set to error: no host read."""
    from ppvae.infer import ObjectiveModule, make_adam, make_elbo

    model = ppvae.VAE(**SMALL).to("cuda")
    x = small_data(32).to("cuda")
    model.initialize(x)
    loss = ObjectiveModule(model, model.model, model.guide, make_elbo(elbo))
    optimizer = make_adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss(x, None).backward()  # the first step allocates the optimizer's state
    optimizer.step()
    torch.cuda.synchronize()
    with pyro.validation_enabled(False):
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                loss(x, None, kl_weight=0.5).backward()
                optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_a_graphed_step_replays_the_eager_steps():
    """The CUDA graph, captured and checked against the eager step, then replayed: the eager run's losses and
    weights, through warm-up, a changing KL weight and a partial batch."""
    from test_graphed import setup, train, weights

    from ppvae.infer.graphed import GraphedStep

    model, eager = setup(device="cuda")
    eager_losses, expected = train(eager, device="cuda"), weights(model)
    model, eager = setup(device="cuda")
    lines = []
    graphed = GraphedStep(eager, torch.device("cuda"), announce=lines.append)
    losses = train(graphed, device="cuda")
    assert graphed.captured and not lines
    torch.testing.assert_close(losses, eager_losses, rtol=1e-4, atol=1e-3)
    for key, value in weights(model).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5)


def test_a_step_that_reads_back_is_not_captured_and_trains_eagerly():
    from test_graphed import setup, train, weights

    from ppvae.infer.graphed import GraphedStep

    model, eager = setup(device="cuda", sync=True)
    eager_losses, expected = train(eager, device="cuda"), weights(model)
    model, eager = setup(device="cuda", sync=True)
    lines = []
    graphed = GraphedStep(eager, torch.device("cuda"), announce=lines.append)
    losses = train(graphed, device="cuda")
    assert not graphed.captured and len(lines) == 1 and "capturing it failed" in lines[0]
    torch.testing.assert_close(losses, eager_losses)
    for key, value in weights(model).items():
        torch.testing.assert_close(value, expected[key])


def test_a_gpu_fit_replays_a_cuda_graph_and_says_where_it_cannot(capsys):
    model = ppvae.VAE(**SMALL)
    model.fit(small_data(), epochs=3, batch_size=32, lr=3e-3, **GPU)
    assert model.fit_record.options["cuda_graph"] is True and model.fit_record.options["step"] == "lowered"
    history = model.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    clipped = ppvae.VAE(**SMALL)
    clipped.fit(small_data(), epochs=1, batch_size=32, clip_norm=10.0, accelerator="cuda")
    assert clipped.fit_record.options["cuda_graph"] is False
    assert "not captured in a CUDA graph: gradient clipping is not captured yet" in capsys.readouterr().out
