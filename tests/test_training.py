"""The training engine: seeds, exact resume, divergence, held-out data, data sources, run folders, logging."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as pyro_dist
import pytest
import torch
from conftest import SMALL, assert_same_weights, small_data, weights_of

import ppvae
from ppvae.cli import main
from ppvae.estimator.files import write_text_atomic
from ppvae.infer import (
    KLWeight,
    ObjectiveModule,
    TensorBatches,
    TrainingLoop,
    make_adam,
    make_elbo,
    make_fabric,
    shard_order,
)
from ppvae.infer.batches import local_batch_size
from ppvae.infer.launch import plain_cuda_check

ROOT = Path(__file__).resolve().parents[1]


# -- seeds --------------------------------------------------------------------------------------------


def test_a_seed_fixes_the_weights_the_data_order_and_the_noise():
    x = small_data()
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed * 100)  # the global stream before the fit must not matter
        model = ppvae.VAE(**SMALL)
        history = model.fit(x, epochs=2, batch_size=32, seed=seed, progress=False).history
        runs.append(([r["train_loss"] for r in history], weights_of(model)))
    assert runs[0][0] == runs[1][0]
    assert_same_weights(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


def test_the_cli_reproduces_a_seeded_run(tmp_path):
    np.save(tmp_path / "images.npy", (small_data(300).numpy() * 255).astype(np.uint8))
    for name in ("a", "b"):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(tmp_path / "images.npy"),
                    "--epochs",
                    "1",
                    "--z-dim",
                    "2",
                    "--hidden",
                    "16",
                    "--seed",
                    "7",
                    "--quiet",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    a, b = ppvae.load(tmp_path / "a"), ppvae.load(tmp_path / "b")
    assert_same_weights(weights_of(a), weights_of(b))
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]


# -- resume ---------------------------------------------------------------------------------------------

TRAIN_SCRIPT = """
import sys, torch, ppvae
g = torch.Generator().manual_seed(0)
x = torch.bernoulli(torch.rand(6000, 1, 8, 8, generator=g) * 0.6 + 0.2, generator=g)
model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [64]})
model.fit(x, epochs=int(sys.argv[2]), batch_size=16, out=sys.argv[1], resume=sys.argv[3] == "resume", progress=False)
"""


def _train(out, epochs, resume=False):
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(out), str(epochs), "resume" if resume else "-"], cwd=ROOT
    )


def test_a_killed_run_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _train(straight, 2).wait(timeout=300) == 0
    process = _train(killed, 2)
    metrics = killed / "metrics.jsonl"
    while process.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # during the second epoch
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed; give it more data"
    assert json.loads(metrics.read_text().splitlines()[-1])["epoch"] == 1
    assert _train(killed, 2, resume=True).wait(timeout=300) == 0
    a, b = ppvae.load(straight), ppvae.load(killed)
    assert_same_weights(weights_of(a), weights_of(b))
    assert_same_weights(
        a.fit_record.training_state["optimizer"]["state"][0], b.fit_record.training_state["optimizer"]["state"][0]
    )
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_resume_continues_in_memory_and_from_the_folder(tmp_path):
    x = small_data()
    straight = ppvae.VAE(**SMALL)
    straight.fit(x, epochs=3, batch_size=32, kl_warmup=2, test=x[:64], progress=False)
    in_memory = ppvae.VAE(**SMALL)
    in_memory.fit(x, epochs=1, batch_size=32, kl_warmup=2, test=x[:64], progress=False, out=tmp_path / "run")
    in_memory.fit(x, epochs=3, resume=True, batch_size=32, kl_warmup=2, test=x[:64], progress=False)
    assert_same_weights(weights_of(straight), weights_of(in_memory))
    from_folder = ppvae.VAE(**SMALL)  # a new process would do this: build, then resume the folder
    from_folder.fit(x, epochs=3, resume=True, out=tmp_path / "run", test=x[:64], progress=False)
    assert_same_weights(weights_of(straight), weights_of(from_folder))
    assert [r["kl_weight"] for r in from_folder.history] == [r["kl_weight"] for r in straight.history]
    assert [r["epoch"] for r in from_folder.history] == [1, 2, 3]


def test_fitting_again_without_resume_adds_epochs():
    model = ppvae.VAE(**SMALL)
    model.fit(small_data(), epochs=2, batch_size=64, progress=False)
    model.fit(small_data(), epochs=1, batch_size=64, progress=False)
    assert [r["epoch"] for r in model.history] == [1, 2, 3]


def test_a_conv_run_with_batch_norm_repeats_and_resumes_bit_for_bit(tmp_path):
    """BatchNorm's running statistics are buffers the first-batch check must not move: same-seed runs, and a
    resumed run against a straight one, end with equal buffers as well as equal weights."""
    x = (torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    options = dict(batch_size=64, seed=1, progress=False)
    straight = ppvae.VAE(x_shape=(1, 28, 28), z_dim=2, network="conv").fit(x, epochs=2, **options)
    again = ppvae.VAE(x_shape=(1, 28, 28), z_dim=2, network="conv").fit(x, epochs=2, **options)
    assert any("running_mean" in name for name in weights_of(straight))
    assert_same_weights(weights_of(straight), weights_of(again))
    ppvae.VAE(x_shape=(1, 28, 28), z_dim=2, network="conv").fit(x, epochs=1, out=tmp_path / "run", **options)
    resumed = ppvae.VAE(x_shape=(1, 28, 28), z_dim=2, network="conv")
    resumed.fit(x, epochs=2, out=tmp_path / "run", resume=True, **options)
    assert_same_weights(weights_of(straight), weights_of(resumed))


def test_resume_without_a_checkpoint_is_explained(tmp_path):
    with pytest.raises(ValueError, match="resume=True needs a run folder"):
        ppvae.VAE(**SMALL).fit(small_data(), resume=True, progress=False)
    with pytest.raises(ValueError, match="holds no checkpoint.pt"):
        ppvae.VAE(**SMALL).fit(small_data(), resume=True, out=tmp_path, progress=False)


def test_cli_resume_takes_the_command_it_resumes(tmp_path, capsys):
    np.save(tmp_path / "images.npy", (small_data(300).numpy() * 255).astype(np.uint8))
    data = ["--data", str(tmp_path / "images.npy"), "--z-dim", "2", "--hidden", "16", "--seed", "3", "--quiet"]
    assert main(["train", *data, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *data, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    # the training command again, with --resume added and more epochs: bit for bit the straight run
    assert main(["train", *data, "--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    assert_same_weights(weights_of(ppvae.load(tmp_path / "straight")), weights_of(ppvae.load(tmp_path / "resumed")))
    changed = ["--z-dim", "3", "--prior", "laplace", "--seed", "4", "--batch-size", "64", "--limit", "200"]
    assert main(["train", *data, *changed, "--resume", "--out", str(tmp_path / "resumed")]) == 2
    err = capsys.readouterr().err
    for named in ("--z-dim 3 (the run's: 2)", "--prior laplace (the run's: normal)", "--seed 4 (the run's: 3)"):
        assert named in err
    assert "--batch-size 64 (the run's: 128)" in err and "--limit 200 (the run's: None)" in err
    assert err.count("\n") == 1
    # a plain --resume reaches the run's own epochs; --lr may change, and the run records it
    run = tmp_path / "short"
    assert main(["train", *data, "--epochs", "1", "--out", str(run)]) == 0
    spec = json.loads((run / "spec.json").read_text())
    spec["fit"]["epochs"] = 3  # as a run killed after its first epoch records it
    (run / "spec.json").write_text(json.dumps(spec))
    assert main(["train", "--resume", "--quiet", "--lr", "0.0005", "--out", str(run)]) == 0
    assert len(ppvae.load(run).history) == 3 and json.loads((run / "spec.json").read_text())["fit"]["lr"] == 0.0005


def test_a_resumed_fit_refuses_options_that_differ_from_its_run(tmp_path):
    x = small_data(128)
    ppvae.VAE(**SMALL).fit(x, epochs=1, batch_size=32, seed=5, out=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"fitted with batch_size=32, and this call asks for batch_size=64"):
        ppvae.VAE(**SMALL).fit(x, epochs=2, batch_size=64, resume=True, out=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"fitted with elbo='trace', and this call asks for elbo='iwae'"):
        ppvae.VAE(**SMALL).fit(x, epochs=2, elbo="iwae", resume=True, out=tmp_path / "run", progress=False)
    model = ppvae.VAE(**SMALL).fit(x, epochs=2, lr=1e-4, resume=True, out=tmp_path / "run", progress=False)
    assert model.fit_record.options["lr"] == 1e-4 and model.fit_record.options["seed"] == 5


# -- divergence ---------------------------------------------------------------------------------------


def test_divergence_stops_keeps_the_last_finite_checkpoint_and_says_what_to_try(tmp_path):
    x, run = small_data(), tmp_path / "run"
    model = ppvae.VAE(**SMALL)
    model.fit(x, epochs=2, batch_size=32, out=run, progress=False)
    good = weights_of(model)
    with pytest.raises(ppvae.TrainingDiverged) as error:
        model.fit(x, epochs=3, batch_size=32, lr=100, out=run, progress=False)
    message = str(error.value)
    assert "non-finite at epoch 3, step" in message and "lr=100" in message and "clip_norm=" in message
    assert f"{run} keeps the checkpoint of epoch 2" in message
    assert_same_weights(good, weights_of(model))  # the model in memory is the last finite one
    saved = ppvae.load(run)
    assert_same_weights(good, weights_of(saved))
    assert saved.fit_record.training_state["epoch"] == 2 and len(saved.history) == 2


def test_the_cli_exits_2_on_divergence(tmp_path, capsys):
    np.save(tmp_path / "images.npy", (small_data(300).numpy() * 255).astype(np.uint8))
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "images.npy"),
                "--epochs",
                "2",
                "--lr",
                "1e6",
                "--z-dim",
                "2",
                "--quiet",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "training diverged" in err and "Traceback" not in err


def test_clip_norm_is_applied_and_a_huge_step_still_ends_in_our_message():
    runs = []
    for clip_norm in (None, 1.0):  # the ELBO's gradient norm is far above 1 on a fresh model
        model = ppvae.VAE(**SMALL)
        runs.append(
            model.fit(small_data(), epochs=1, batch_size=32, clip_norm=clip_norm, progress=False).history[0][
                "train_loss"
            ]
        )
    assert np.isfinite(runs).all() and runs[0] != runs[1]
    with pytest.raises(ppvae.TrainingDiverged, match="lower the learning rate"):
        ppvae.VAE(**SMALL).fit(small_data(), epochs=3, batch_size=32, lr=1e6, clip_norm=1.0, progress=False)


# -- held-out data --------------------------------------------------------------------------------------


def test_validation_chooses_the_weights_and_early_stopping_ends_the_run(tmp_path):
    x = small_data(96)
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=8, network={"name": "mlp", "hidden": [256]})
    history = model.fit(
        x,
        epochs=40,
        batch_size=16,
        lr=3e-3,
        validation=0.25,
        early_stopping=3,
        binarize=None,
        out=tmp_path / "run",
        progress=False,
    ).history
    scores = [r["val_elbo"] for r in history]
    best = int(np.argmax(scores)) + 1
    assert len(history) == best + 3 < 40  # three epochs without a better validation ELBO, then stop
    saved = ppvae.load(tmp_path / "run")
    assert_same_weights(weights_of(model), weights_of(saved))  # weights.pt holds the chosen epoch
    assert (
        saved.fit_record.training_state["epoch"] == len(history)
        and saved.fit_record.training_state["best_epoch"] == best
    )
    held_out = x[
        torch.randperm(96, generator=torch.Generator().manual_seed(ppvae.infer.derive_seed(0, 0, 1)))[:24].sort().values
    ]
    assert model.evaluate(held_out, binarize=None)["elbo"] == pytest.approx(scores[best - 1])


def test_early_stopping_needs_held_out_data():
    with pytest.raises(ValueError, match="early_stopping needs held-out data"):
        ppvae.VAE(**SMALL).fit(small_data(), early_stopping=2, progress=False)


# -- data sources -----------------------------------------------------------------------------------------


def test_shards_are_disjoint_cover_the_data_and_pad_uneven_splits():
    for n in (10, 11):
        shards = [shard_order(n, seed=3, epoch=2, world_size=2, rank=r) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == (n + 1) // 2
        assert set(torch.cat(shards).tolist()) == set(range(n))
        overlap = set(shards[0].tolist()) & set(shards[1].tolist())
        assert len(overlap) == (0 if n % 2 == 0 else 1)  # one image repeated to even out 11
    one = shard_order(10, seed=3, epoch=2)
    assert torch.equal(one[0::2], shards_10 := shard_order(10, 3, 2, 2, 0)) and len(shards_10) == 5
    assert not torch.equal(shard_order(10, 3, 1), shard_order(10, 3, 2))  # a new order every epoch
    with pytest.raises(ValueError, match="must divide evenly across 2 processes"):
        local_batch_size(127, 2)


def test_training_streams_a_memory_mapped_array(tmp_path):
    pixels = (small_data(512).numpy() * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    data = ppvae.data.load(tmp_path / "images.npy", lazy=True)
    assert isinstance(data, ppvae.data.NpyImages) and len(data) == 512 and data.shape == (1, 8, 8)
    model = ppvae.VAE(**SMALL)
    history = model.fit(data, epochs=3, batch_size=64, lr=3e-3, binarize=None, progress=False).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    in_memory = ppvae.VAE(**SMALL)
    in_memory.fit(torch.from_numpy(pixels), epochs=3, batch_size=64, lr=3e-3, binarize=None, progress=False)
    assert history[0]["train_loss"] == pytest.approx(
        in_memory.history[0]["train_loss"], rel=1e-5
    )  # same order, same noise


def test_training_reads_a_folder_of_images_lazily(tmp_path):
    from torchvision.io import write_png

    images = (small_data(64) * 255).to(torch.uint8)
    for i, image in enumerate(images):
        folder = tmp_path / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(exist_ok=True)
        write_png(image, str(folder / f"{i:03d}.png"))
    data = ppvae.data.load(tmp_path, lazy=True)
    assert isinstance(data, ppvae.data.FolderImages) and data.classes == ["even", "odd"] and data.shape == (1, 8, 8)
    history = ppvae.VAE(**SMALL).fit(data, epochs=2, batch_size=16, num_workers=1, progress=False).history
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])
    with pytest.raises(ValueError, match="for data read from disk use 'dynamic' or 'threshold'"):
        ppvae.VAE(**SMALL).fit(data, binarize="static", progress=False)


# -- precision and devices --------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16-mixed", "64-true"])
def test_other_precisions_train(precision):
    model = ppvae.VAE(**SMALL)
    history = model.fit(small_data(), epochs=3, batch_size=32, lr=3e-3, precision=precision, progress=False).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_bad_engine_options_are_explained():
    model = ppvae.VAE(**SMALL)
    for options, message in [
        ({"accelerator": "tpu"}, "accelerator must be one of"),
        ({"precision": "8-bit"}, "precision must be one of"),
        ({"devices": 0}, "devices must be a positive number"),
        ({"strategy": "fsdp"}, "strategy must be one of"),
        ({"clip_norm": -1.0}, "clip_norm must be a positive"),
        ({"validation": 1.5}, r"validation as a fraction must be in \(0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.fit(small_data(), progress=False, **options)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            model.fit(small_data(), accelerator="cuda", progress=False)


def test_cpu_training_uses_torchs_cached_cuda_check_only_where_no_gpu_can_be_initialised(monkeypatch):
    """Lightning's NVML check costs a library load per optimizer step on a machine without a GPU."""
    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    monkeypatch.setenv(name, "1")
    seen = []
    model = ppvae.VAE(**SMALL)
    monkeypatch.setattr(
        model, "guide", lambda *a, _g=model.guide, **k: seen.append(os.environ.get(name)) or _g(*a, **k)
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    model.fit(small_data(64), epochs=1, batch_size=32, progress=False, compile=False)  # the guide runs every step
    assert seen[-1] is None and os.environ[name] == "1"  # off during the steps, Lightning's again after
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a GPU machine training on its CPU: left alone
    with plain_cuda_check(torch.device("cpu")):
        assert os.environ[name] == "1"
    with plain_cuda_check(torch.device("cuda")):
        assert os.environ[name] == "1"


# -- run folders and logs ---------------------------------------------------------------------------------


def test_the_run_folder_holds_plain_checkpoints_and_one_log_row_per_epoch(tmp_path):
    run = tmp_path / "run"
    model = ppvae.VAE(**SMALL)
    model.fit(small_data(), epochs=2, batch_size=64, test=small_data(32, seed=1), out=run, progress=False)
    model.fit(small_data(), epochs=3, batch_size=64, out=run, resume=True, progress=False)
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and set(checkpoint) >= {"model", "optimizer", "global_step", "seed", "history"}
    rows = (run / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and "train_loss" in rows[0]  # a header and epochs 1, 2 and 3: the resume kept one table
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    for name in ("spec.json", "weights.pt", "samples.png", "reconstructions.png"):
        assert (run / name).exists(), name
    assert not list(run.glob(".*.tmp"))  # no temporary files left behind


def test_atomic_writes_replace_a_symlink_instead_of_following_it(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "evaluation.json").symlink_to(target)
    write_text_atomic(tmp_path / "run" / "evaluation.json", "{}")
    assert target.read_text() == "keep me"
    assert not (tmp_path / "run" / "evaluation.json").is_symlink()


def test_training_prints_one_line_per_epoch_and_nothing_from_the_engine(tmp_path, capfd):
    model = ppvae.VAE(**SMALL)
    model.fit(small_data(), epochs=2, batch_size=64, test=small_data(32, seed=1), out=tmp_path / "run", progress=True)
    captured = capfd.readouterr()
    lines = captured.out.splitlines()  # the epoch lines; the progress bar draws on stderr and clears itself
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"] and "test_elbo" in lines[0]
    assert "Warning" not in captured.err + captured.out and "GPU available" not in captured.err
    model.fit(small_data(), epochs=1, batch_size=64, progress=False)
    captured = capfd.readouterr()
    assert captured.err == captured.out == ""


def test_tensorboard_logs_every_epoch_when_installed(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    model = ppvae.VAE(**SMALL)
    history = model.fit(
        small_data(), epochs=2, batch_size=64, test=small_data(32, seed=1), out=tmp_path, progress=False
    ).history
    events = event_accumulator.EventAccumulator(str(tmp_path / "logs" / "tensorboard"))
    events.Reload()
    logged = events.Scalars("test_elbo")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx([r["test_elbo"] for r in history], rel=1e-6)


# -- the signature of fit ----------------------------------------------------------------------


def test_fit_has_one_signature_and_the_cli_reads_it():
    from ppvae.cli import FIT_DEFAULTS

    assert ppvae.FactorAnalysis.fit_defaults() == ppvae.VAE.fit_defaults() == FIT_DEFAULTS
    assert FIT_DEFAULTS["epochs"] == 10 and FIT_DEFAULTS["devices"] == 1


def test_a_point_mass_guide_trains_an_autoencoder_and_refuses_evidence():
    model = ppvae.VAE(**{**SMALL, "guide": "delta"})
    history = model.fit(small_data(), epochs=3, batch_size=32, lr=3e-3, progress=False).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    loc, scale = model.encode(small_data(4), return_scale=True)
    assert torch.equal(scale, torch.zeros_like(loc))
    with pytest.raises(ValueError, match="point mass"):
        ppvae.log_evidence(model, small_data(4), num_samples=3, progress=False)


class FlagsSeen:
    """An objective that notes Pyro's validation flags (inference, poutine, distributions) at each step."""

    def __init__(self):
        self.objective, self.seen = make_elbo("trace"), []

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self.seen.append(validation_flags())
        return self.objective.differentiable_loss(model, guide, *args, **kwargs)


def validation_flags() -> tuple[bool, bool, bool]:
    return pyro.infer.is_validation_enabled(), pyro.poutine.is_validation_enabled(), pyro_dist.is_validation_enabled()


@pytest.mark.parametrize("before", [True, False])
def test_the_loop_runs_its_steps_with_pyros_validation_off_and_leaves_it_as_it_found_it(before):
    vae, objective = ppvae.VAE(**SMALL), FlagsSeen()
    fabric = make_fabric("cpu")
    loss, optimizer = fabric.setup(
        ObjectiveModule(vae, vae.model, vae.guide, objective), make_adam(list(vae.parameters()), 1e-2)
    )
    epochs_seen = []
    loop = TrainingLoop(
        fabric,
        loss,
        optimizer,
        TensorBatches(small_data(64), batch_size=32),
        KLWeight(),
        progress=False,
        on_epoch_end=lambda record, state: epochs_seen.append(validation_flags()),
    )
    with pyro.validation_enabled(before):
        loop.run(1, 2)
        assert validation_flags() == (before,) * 3
    assert objective.seen == [(False,) * 3] * 4  # two epochs of two batches
    assert epochs_seen == [(before,) * 3] * 2  # the caller's hook runs as the caller set it
