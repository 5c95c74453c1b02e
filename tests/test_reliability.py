"""Nothing a user does loses work, shows a traceback, or trains silently on data that makes no sense:
run folders claimed and locked, mistakes as one line with exit code 2, data checked at the door,
a failed fit undone, models that leave Pyro's store when dropped, and threads that take turns."""

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from conftest import bars, same_weights, weights_of

import ppvae
from ppvae.atomic import write_text_atomic
from ppvae.cli import main
from ppvae.estimator.files import RunFolderBusy, RunLock
from ppvae.estimator.runs import read_metrics

NET = {"name": "mlp", "hidden": [8]}


def small_vae(**parts):
    return ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network=NET, **parts)


def fit(model, data, **options):
    model.fit(data, **{"epochs": 1, "batch_size": 32, "progress": False, **options})
    return model


# -- run folders ----------------------------------------------------------------------------------


def test_a_second_training_into_a_run_folder_is_refused_and_the_first_run_stays(tmp_path):
    run = tmp_path / "run"
    fit(small_vae(), bars(64), out=run)
    before = (run / "weights.pt").read_bytes(), (run / "spec.json").read_text()
    with pytest.raises(ValueError, match="already holds a run: continue it with resume=True .* overwrite=True"):
        fit(small_vae(prior="laplace"), bars(64), out=run)
    assert ((run / "weights.pt").read_bytes(), (run / "spec.json").read_text()) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds 1 file\(s\) \(todo.txt\)"):
        fit(small_vae(), bars(64), out=tmp_path / "notes")


def test_overwrite_replaces_the_run_and_removes_what_the_old_weights_made(tmp_path):
    run = tmp_path / "run"
    fit(small_vae(), bars(64), out=run)
    write_text_atomic(run / "evaluation.json", "{}")  # what ppvae made from the old weights
    ppvae.plot(ppvae.load(run), "manifold", out=run)
    (run / "notes.txt").write_text("the user's own")
    fit(small_vae(prior="laplace"), bars(64), out=run, overwrite=True)
    assert ppvae.load(run).specs["prior"]["name"] == "laplace"
    assert not (run / "evaluation.json").exists() and not (run / "manifold.png").exists()
    assert (run / "notes.txt").read_text() == "the user's own"  # only what ppvae wrote goes
    assert (
        len(read_metrics(run / "metrics.jsonl")) == 1
        and not (run / "checkpoint.pt").exists()
        or torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    )
    with pytest.raises(ValueError, match="pass one of them"):
        fit(small_vae(), bars(64), out=run, overwrite=True, resume=True)


def test_saving_other_weights_removes_what_the_old_ones_made_and_their_checkpoint(tmp_path):
    run = tmp_path / "run"
    model = fit(small_vae(), bars(64), out=run)
    ppvae.plot(model, "manifold", out=run)  # a figure and an evaluation ppvae made from the old weights
    write_text_atomic(run / "evaluation.json", "{}")
    with pytest.raises(ValueError, match="already holds a run: .* overwrite=True"):
        small_vae().save(run)  # another model's weights: refused, and the run stays
    assert (run / "checkpoint.pt").exists() and len(ppvae.load(run).history) == 1
    small_vae().save(run, overwrite=True)  # an untrained model: no training state of its own
    assert not any((run / name).exists() for name in ("evaluation.json", "manifold.png", "checkpoint.pt"))
    assert ppvae.load(run).history == []


def test_replacing_a_run_removes_ppvae_s_files_and_never_a_user_s(tmp_path):
    run = tmp_path / "run"
    fit(small_vae(), bars(64), out=run)
    mine = {"notes.png": b"my figure", "report.md": b"my report", "results.json": b"{}"}
    for name, data in mine.items():
        (run / name).write_bytes(data)
    fit(small_vae(), bars(64), out=run, overwrite=True, epochs=2)
    small_vae().save(run, overwrite=True)
    assert all((run / name).read_bytes() == data for name, data in mine.items())
    with RunLock(run), pytest.raises(RunFolderBusy):
        small_vae().save(run, overwrite=True)  # a folder a training holds is refused


def test_an_overwrite_that_fails_at_once_leaves_the_old_run_whole(tmp_path):
    run = tmp_path / "run"
    old = fit(small_vae(), bars(64), out=run, epochs=2)
    with pytest.raises(ppvae.TrainingDiverged):
        fit(small_vae(), bars(64), out=run, overwrite=True, lr=1e6)
    kept = ppvae.load(run)
    assert (
        same_weights(weights_of(kept), weights_of(old)) and len(kept.history) == 2 and (run / "checkpoint.pt").exists()
    )


def test_resume_removes_the_evaluation_of_the_old_weights(tmp_path):
    run = tmp_path / "run"
    fit(small_vae(), bars(64), out=run)
    write_text_atomic(run / "evaluation.json", "{}")  # as ppvae evaluate writes it
    fit(small_vae(), bars(64), out=run, epochs=2, resume=True)
    assert not (run / "evaluation.json").exists() and len(ppvae.load(run).history) == 2


def test_an_evaluation_made_during_a_training_goes_when_the_weights_change(tmp_path, monkeypatch):
    """ppvae evaluate on a run that is still training writes evaluation.json from that epoch's weights; the next
    epoch's weights make it stale, so it goes, and the run ends without it."""
    run = tmp_path / "run"
    original = ppvae.estimator.runs.write_run
    written = []

    def evaluating_meanwhile(model, record, directory, **kwargs):
        path = original(model, record, directory, **kwargs)
        if not written:  # after the first epoch, as another process would
            write_text_atomic(directory / "evaluation.json", "{}")
            written.append(True)
        return path

    monkeypatch.setattr(ppvae.estimator.runs, "write_run", evaluating_meanwhile)
    fit(small_vae(), bars(64), out=run, epochs=2)
    assert written and not (run / "evaluation.json").exists()


def test_a_folder_another_training_holds_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunFolderBusy, match="another training is writing"):
            fit(small_vae(), bars(64), out=run)
        with pytest.raises(RunFolderBusy):
            RunLock(run).__enter__()
    fit(small_vae(), bars(64), out=run)  # released: the folder is free again
    assert (run / "weights.pt").exists()


def test_an_out_that_cannot_hold_a_run_is_refused_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    model = small_vae()
    with pytest.raises(ValueError, match="is a file; give a folder"):
        fit(model, bars(64), out=tmp_path / "afile")
    with pytest.raises(ValueError, match="cannot write the run folder"):
        fit(model, bars(64), out=tmp_path / "afile" / "run")
    assert model.history == [] and model.fit_record.options == {}


def test_ctrl_c_exits_130_with_one_line_and_the_checkpoint_resumes(tmp_path, default_sigint):
    np.save(tmp_path / "x.npy", (bars(4000).x.numpy() * 255).astype(np.uint8))
    command = [
        sys.executable,
        "-m",
        "ppvae",
        "train",
        "--data",
        "x.npy",
        "--z-dim",
        "2",
        "--hidden",
        "8",
        "--batch-size",
        "16",
        "--epochs",
        "500",
        "--quiet",
        "--out",
        "run",
    ]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "run" / "checkpoint.pt").exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert process.poll() is None, f"the training ended before its first checkpoint: {process.communicate()[1]}"
        assert (tmp_path / "run" / "checkpoint.pt").exists(), "no checkpoint after 300 s"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:  # a failed check leaves no training running behind the test
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted; run keeps the checkpoint" in err and "--resume" in err
    epochs = len(ppvae.load(tmp_path / "run").history)
    assert epochs >= 1
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", str(epochs + 1), "--quiet"]) == 0
    assert len(ppvae.load(tmp_path / "run").history) == epochs + 1


def test_a_run_saved_from_python_records_named_data_and_the_cli_says_which_flag_otherwise(tmp_path, fashion, capsys):
    fit(ppvae.VAE(x_shape=(1, 28, 28), z_dim=2, network=NET), fashion[0].subset(300), out=tmp_path / "named")
    assert ppvae.load(tmp_path / "named").fit_record.data_source["dataset"] == "fashion-mnist"
    assert main(["evaluate", str(tmp_path / "named"), "--test-limit", "50", "--quiet"]) == 0  # no flag needed
    fit(small_vae(), bars(64).x, out=tmp_path / "tensor")  # a tensor has no name to record
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "tensor")]) == 2
    assert "does not record its data; pass --dataset or --data" in capsys.readouterr().err


def test_a_ctrl_c_while_an_epoch_is_written_waits_until_the_run_folder_is_whole(tmp_path, monkeypatch, default_sigint):
    import os

    import ppvae.estimator.runs as runs

    model = fit(small_vae(), bars(64))
    save = runs.save_torch_atomic

    def save_then_interrupt(obj, path):  # the signal arrives right after the checkpoint, before the weights
        save(obj, path)
        if path.name == "checkpoint.pt":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(runs, "save_torch_atomic", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        runs.write_run(model, model.fit_record, tmp_path / "run", checkpoint=model.fit_record.training_state)
    assert all(
        (tmp_path / "run" / name).exists() for name in ("spec.json", "checkpoint.pt", "weights.pt", "metrics.jsonl")
    )
    assert same_weights(weights_of(ppvae.load(tmp_path / "run")), weights_of(model))


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """A run trained from the CLI on a small array, and a few files a user could get wrong."""
    np.save(tmp_path / "x.npy", (bars(96).x.numpy() * 255).astype(np.uint8))
    np.save(tmp_path / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    torch.save(bars(96).x.double(), tmp_path / "x64.pt")
    images = tmp_path / "images"
    images.mkdir()
    from torchvision.io import write_png

    for i in range(3):
        write_png((bars(3).x[i] * 255).to(torch.uint8), str(images / f"{i}.png"))
    (images / "3.png").write_text("not an image")
    (tmp_path / "types.toml").write_text('[fit]\nlr = "fast"\n')
    for name, text in {
        "key": "model = 3",
        "datanum": "[data]\ndata = 5",
        "inf": "[fit]\nlr = inf",
        "seed": "[fit]\nseed = -1",
    }.items():
        (tmp_path / f"{name}.toml").write_text(text + "\n")
    (tmp_path / "afile").write_text("x")
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "x.npy"),
                "--z-dim",
                "2",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    return tmp_path


TRAIN = ["train", "--z-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (TRAIN + ["--data", "{d}/strings.npy", "--out", "{d}/r"], "images must be numbers"),
        (TRAIN + ["--data", "{d}/images", "--out", "{d}/r"], "3.png: not an image torchvision can decode"),
        (
            TRAIN + ["--data", "{d}/x.npy", "--spec", "{d}/types.toml", "--out", "{d}/r"],
            "lr must be a positive finite number, got 'fast'",
        ),
        (TRAIN + ["--data", "{d}/x.npy", "--out", "{d}/afile"], "is a file"),
        (TRAIN + ["--data", "{d}/x.npy", "--out", "{d}/run"], "already holds a run"),
        (TRAIN + ["--data", "{d}/x.npy", "--limit", "0", "--out", "{d}/r"], "--limit must be a positive whole number"),
        (TRAIN + ["--spec", "{d}/key.toml", "--out", "{d}/r"], "model = ... is a key; a spec's model is a table"),
        (TRAIN + ["--spec", "{d}/datanum.toml", "--out", "{d}/r"], "[data] data is a name or a path in quotes"),
        (TRAIN + ["--data", "{d}/x.npy", "--spec", "{d}/inf.toml", "--out", "{d}/r"], "lr must be a positive finite"),
        (TRAIN + ["--data", "{d}/x.npy", "--spec", "{d}/seed.toml", "--out", "{d}/r"], "seed must be a whole number"),
        (TRAIN + ["--data", "{d}/x.npy", "--num-particles", "100000000", "--out", "{d}/r"], "lower num_particles"),
        (TRAIN + ["--data", "{d}/x.npy", "--hidden", "1000000000", "--out", "{d}/r"], "choose smaller sizes"),
        (["evaluate", "{d}/run", "--device", "tpu"], "unknown device 'tpu'"),
        (["evaluate", "{d}/run", "--batch-size", "0"], "--batch-size must be a positive whole number"),
        (["sample", "{d}/run", "-n", "0"], "-n must be a positive whole number"),
    ],
)
def test_a_users_mistake_is_one_line_and_exit_code_2(folder, capsys, argv, message):
    assert main([a.format(d=folder) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "r").exists()  # nothing trained, and no empty folder left behind


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--seed", "2.5", "--out", "r"],
            "argument --seed: invalid int value: '2.5' (see ppvae train --help)",
        ),
        (["trian", "--out", "r"], "invalid choice: 'trian'"),
        (["evaluate"], "the following arguments are required: run"),
    ],
)
def test_a_flag_argparse_cannot_read_is_one_line_too(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and err.count("\n") == 1


def test_a_sweep_runs_again_into_its_folder_only_with_overwrite(folder, capsys):
    sweep = [
        "sweep",
        "--beta",
        "1",
        "2",
        "--z-dim",
        "2",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--num-samples",
        "0",
        "--quiet",
        "--data",
        str(folder / "x.npy"),
        "--out",
        str(folder / "sweep"),
    ]
    assert main(sweep) == 0
    assert main(sweep) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(sweep + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "damage",
    [b"", b"\x00garbage" * 10, "truncated", "wrong shape"],
    ids=["empty", "random bytes", "truncated", "wrong shape"],
)
def test_a_damaged_checkpoint_stops_resume_alone(folder, capsys, damage):
    run, checkpoint = folder / "run", folder / "run" / "checkpoint.pt"
    if damage == "truncated":
        damage = checkpoint.read_bytes()[:200]
    elif damage == "wrong shape":
        torch.save([1, 2, 3], checkpoint)
        damage = checkpoint.read_bytes()
    checkpoint.write_bytes(damage)
    model = ppvae.load(run)  # the weights are whole: everything but resume works
    assert model.fit_record.training_state is None and model.sample(2).shape == (2, 1, 8, 8)
    assert main(["evaluate", str(run), "--quiet"]) == 0 and main(["sample", str(run), "-n", "4"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt is damaged" in err and "weights.pt is whole" in err and err.count("\n") == 1


def test_a_run_killed_before_its_first_epoch_says_the_same_to_train_and_to_resume(folder, capsys):
    run = folder / "run"
    for name in ("weights.pt", "checkpoint.pt"):
        (run / name).unlink()  # as a kill during the first write leaves it: the spec alone
    common = ["--data", str(folder / "x.npy"), *TRAIN[1:], "--out", str(run)]
    for extra in ([], ["--resume"]):
        assert main(["train", *common, *extra]) == 2
        assert "never finished an epoch" in capsys.readouterr().err
    assert main(["train", *common, "--overwrite"]) == 0 and (run / "weights.pt").exists()


def test_resuming_into_another_architecture_or_an_em_run_is_explained(folder, capsys):
    with pytest.raises(ValueError, match=r"another model than VAE.*\(the run's z_dim=2, this model's 3\).*ppvae.load"):
        ppvae.VAE(x_shape=(1, 8, 8), z_dim=3, network=NET).fit(bars(64), out=folder / "run", resume=True)
    fa = ["train", "--model", "fa", "--data", str(folder / "x.npy"), "--dequantize", "--z-dim", "2", "--quiet"]
    assert main([*fa, "--out", str(folder / "fa")]) == 0
    assert "nats per image by EM in" in capsys.readouterr().out  # not "after 1 epochs"
    assert main(["train", "--out", str(folder / "fa"), "--resume", "--quiet"]) == 0
    assert "EM ran to convergence, so there is nothing to resume" in capsys.readouterr().out


def test_resume_refuses_other_data_than_the_run_trained_on(folder, capsys):
    run = folder / "run"
    with pytest.raises(ValueError, match=r"trained on 86 images .* hands it 64"):
        small_vae().fit(bars(64), out=run, resume=True, epochs=2, progress=False)
    x = np.load(folder / "x.npy")
    x[0, 0, 0] = 255 - x[0, 0, 0]  # the same file name, one pixel changed
    np.save(folder / "x.npy", x)
    assert main(["train", "--data", str(folder / "x.npy"), *TRAIN[1:], "--out", str(run), "--resume"]) == 2
    assert "hands it 86 (checksum" in capsys.readouterr().err


def test_temporary_files_a_killed_write_left_go_when_the_folder_is_next_claimed(folder):
    run = folder / "run"
    left = [run / ".weights.pt.abc123.tmp", run / ".checkpoint.pt.x9.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
        os.utime(path, (time.time() - 3600, time.time() - 3600))  # left an hour ago
    fresh = run / ".spec.json.live.tmp"
    fresh.write_bytes(b"another process writing now")
    (run / ".mine.tmp").write_bytes(b"a user's")
    fit(small_vae(), bars(64), out=run, overwrite=True)
    assert not any(path.exists() for path in left) and (run / ".mine.tmp").exists() and fresh.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, "seed must be a whole number from 0 to 2\\*\\*63 - 1, got -1"),
        ({"seed": 2**64}, "seed must be a whole number"),
        ({"seed": 2.5}, "seed must be a whole number .* got 2.5"),
        ({"seed": None}, "seed must be a whole number .* got None"),
        ({"lr": float("inf")}, "lr must be a positive finite number, got inf"),
    ],
)
def test_fit_options_are_checked_before_any_training(options, message):
    with pytest.raises(ValueError, match=message):
        fit(small_vae(), bars(32), **options)


def test_labels_that_are_not_class_indices_are_refused_in_one_line():
    cvae = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2, network=NET)
    x = bars(30).x
    for labels, message in [
        (torch.full((30,), float("nan")), "labels hold NaN"),
        (["a"] * 30, "unknown label 'a'; known: 0 to 2 \\(no class names\\)"),
        ([{"a": 1}] * 30, "class indices \\(whole numbers\\) or class names, one per image; got list that is neither"),
        (torch.ones(30, dtype=torch.bool), "got torch.bool"),
        (torch.full((30,), 2.5), "whole numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            fit(cvae, x, y=labels)
    with pytest.raises(ValueError, match=r"got a tuple of 2 for the images: pass the images alone .* y="):
        fit(cvae, (x, torch.arange(30) % 3))  # scikit-learn's habit
    for path in ("images.npy", Path("images.npy")):  # the command line's habit: it read a dataset as characters
        with pytest.raises(ValueError, match=r"got the path 'images.npy' for the images: .*ppvae.data.load"):
            fit(cvae, path, y=torch.arange(30) % 3)
        with pytest.raises(ValueError, match=r"got the path 'images.npy'"):
            cvae.encode(path, y=0)
    fit(cvae, x, y=torch.arange(30) % 3)
    for label in (3.7, True):
        with pytest.raises(ValueError, match="a label is a class index"):
            cvae.sample(4, y=label)
    assert cvae.sample(2, y=2.0).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, beta=float("inf"))


def test_a_link_planted_in_a_received_run_folder_redirects_no_write(folder, capsys):
    """Every file ppvae writes goes through the atomic writer, which replaces a link instead of following it;
    a linked folder the loggers would write into is refused, naming it."""
    run, elsewhere = folder / "run", folder / "elsewhere"
    elsewhere.mkdir()
    for name in ("samples.png", "scatter.png", "report.md"):
        (elsewhere / name).write_text("keep me")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(elsewhere / name)
    assert main(["sample", str(run), "-n", "4"]) == 0
    assert main(["plot", str(run), "scatter"]) == 0
    ppvae.report.run_report(ppvae.load(run), run, {"n": 1, "elbo": -1.0, "elbo_se": 0.0}, "a report")
    assert all((elsewhere / name).read_text() == "keep me" for name in ("samples.png", "scatter.png", "report.md"))
    assert not any((run / name).is_symlink() for name in ("samples.png", "scatter.png", "report.md"))
    compared = folder / "compared"
    compared.mkdir()
    (elsewhere / "comparison.md").write_text("keep me")
    (compared / "comparison.md").symlink_to(elsewhere / "comparison.md")
    assert main(["compare", str(run), "--num-samples", "5", "--quiet", "--out", str(compared)]) == 0
    assert (elsewhere / "comparison.md").read_text() == "keep me" and "| run |" in (
        compared / "comparison.md"
    ).read_text()
    logs = run / "logs"
    for child in logs.iterdir():
        child.rename(elsewhere / child.name)
    logs.rmdir()
    logs.symlink_to(elsewhere)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 2
    assert "logs is a link" in capsys.readouterr().err and (elsewhere / "csv" / "metrics.csv").exists()


def test_a_hostile_spec_is_measured_before_anything_is_allocated(folder, capsys):
    spec = json.loads((folder / "run" / "spec.json").read_text())
    spec["config"]["z_dim"] = 10**9
    (folder / "run" / "spec.json").write_text(json.dumps(spec))
    for command in (["evaluate", str(folder / "run")], ["sample", str(folder / "run")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "spec.json: VAE with these sizes has" in err and "choose smaller sizes" in err and err.count("\n") == 1


def test_sweep_values_that_print_alike_are_refused_before_training(folder, capsys):
    sweep = ["sweep", "--data", str(folder / "x.npy"), *TRAIN[1:], "--out", str(folder / "sw")]
    assert main([*sweep, "--beta", "0.1", "0.1000001"]) == 2
    assert "both print as 0.1" in capsys.readouterr().err and not (folder / "sw").exists()


def test_cuda_on_a_machine_without_one_is_a_users_mistake(folder, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["sample", str(folder / "run"), "--device", "cuda"]) == 2
    assert "torch sees no CUDA device on this machine; use 'cpu'" in capsys.readouterr().err


def test_float64_arrays_are_converted_and_debug_shows_the_traceback(folder, capsys):
    assert main(TRAIN + ["--data", str(folder / "x64.pt"), "--out", str(folder / "r64")]) == 0
    with pytest.raises(ValueError, match="unknown device"):
        main(["evaluate", str(folder / "run"), "--device", "tpu", "--debug"])


def test_an_unexpected_error_is_one_line_asking_for_a_report(folder, capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("a bug\nwith more lines")

    monkeypatch.setattr(ppvae.cli, "cmd_evaluate", broken)  # main builds its parser, and binds the command, per call
    assert main(["evaluate", str(folder / "run")]) == 1
    err = capsys.readouterr().err
    assert "unexpected error (RuntimeError: a bug)" in err and "--debug" in err and err.count("\n") == 1


# -- data at the door ------------------------------------------------------------------------------


def with_nan(x):
    x = x.clone()
    x[5, 0, 3, 3] = float("nan")
    return x


@pytest.mark.parametrize(
    "model",
    [
        lambda: small_vae(),
        lambda: small_vae(likelihood="continuous_bernoulli"),
        lambda: small_vae(likelihood={"name": "normal", "scale": "per_pixel"}),
        lambda: small_vae(likelihood={"name": "laplace", "scale": "per_pixel"}),
        lambda: ppvae.FactorAnalysis(x_shape=(1, 8, 8), z_dim=2),
    ],
    ids=["bernoulli", "continuous_bernoulli", "normal", "laplace", "factor-analysis"],
)
def test_nan_and_infinite_pixels_are_refused_for_every_likelihood(model, tmp_path):
    x = bars(64).x * 0.8 + 0.1
    options = {} if isinstance(model(), ppvae.FactorAnalysis) else {"epochs": 1, "batch_size": 32}
    for binarize in [None] if isinstance(model(), ppvae.FactorAnalysis) else ["auto", "threshold"]:
        with pytest.raises(
            ValueError, match=r"^data: 1 of 64 images hold NaN or infinite pixels \(the first at index 5\)"
        ):
            model().fit(with_nan(x), progress=False, **options, **({"binarize": binarize} if binarize else {}))
    fitted = model()
    fitted.fit(x, progress=False, **options)
    with pytest.raises(ValueError, match="^test: 1 of 64 images hold NaN"):
        model().fit(x, test=with_nan(x), progress=False, **options)
    infinite = x.clone()
    infinite[0, 0, 0, 0] = float("inf")
    for score in (fitted.evaluate, lambda d: fitted.log_evidence(d, 10, progress=False)):
        with pytest.raises(ValueError, match="1 of 64 images hold NaN or infinite pixels"):
            score(infinite)


def test_a_bad_image_far_into_a_file_read_from_disk_is_caught_when_it_is_read(tmp_path):
    x = np.random.default_rng(0).random((10_100, 8, 8)).astype(np.float32)  # past the first 10,000 checked at once
    x[10_050, 3, 3] = 3.0
    np.save(tmp_path / "x.npy", x)
    data = ppvae.data.load(tmp_path / "x.npy", lazy=True)
    with pytest.raises(ValueError, match=r"a batch read from disk holds values from .* to 3"):
        small_vae().fit(data, epochs=1, batch_size=512, progress=False)
    x[10_050, 3, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match="1 of 512 images hold NaN"):
        small_vae().fit(ppvae.data.load(tmp_path / "x.npy", lazy=True), epochs=1, batch_size=512, progress=False)


def test_torch_uint8_float64_and_float16_images_train_as_float32_in_0_1():
    x = bars(64).x
    reference = fit(small_vae(likelihood={"name": "normal", "scale": "per_pixel"}), x)
    for given in ((x * 255).to(torch.uint8), x.double(), x.half()):
        model = fit(small_vae(likelihood={"name": "normal", "scale": "per_pixel"}), given)
        assert model.history[0]["train_loss"] == reference.history[0]["train_loss"]
    fa = ppvae.FactorAnalysis(x_shape=(1, 8, 8), z_dim=2)
    fa.fit((x * 255).to(torch.uint8), progress=False)
    assert abs(fa.evaluate(x)["elbo"]) < 200  # scaled to [0, 1]: on 0-255 values it would be thousands of nats


@pytest.mark.parametrize("z_dim", [2.7, 0, -1, True, "2"])
def test_a_latent_size_that_is_not_a_positive_integer_is_refused(z_dim):
    with pytest.raises(ValueError, match="z_dim must be a positive integer"):
        ppvae.VAE(x_shape=(1, 8, 8), z_dim=z_dim)


def test_empty_data_is_a_message():
    model = fit(small_vae(), bars(64).x)
    for call, message in [
        (lambda: small_vae().fit(bars(64).x[:0], progress=False), "data: no images"),
        (lambda: small_vae().fit(bars(64).x, test=bars(64).x[:0], epochs=1, progress=False), "test: no images"),
        (lambda: model.evaluate(bars(64).x[:0]), "no images"),
        (lambda: model.log_evidence(bars(64).x[:0], 10, progress=False), "no images"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


def test_a_failed_fit_leaves_the_model_as_it_was():
    model = fit(small_vae(), bars(64).x, binarize="threshold")
    weights, config, history = weights_of(model), dict(model.fit_record.options), list(model.history)

    class Poisoned(torch.utils.data.Dataset):  # read from disk, as it were; image 40 is broken
        def __len__(self):
            return 64

        def __getitem__(self, i):
            image = bars(64).x[i]
            return image * float("nan") if i == 40 else image

    for bad in (
        lambda: fit(model, with_nan(bars(64).x), binarize="dynamic"),  # refused at the door
        lambda: fit(model, Poisoned(), binarize="dynamic", epochs=2),
    ):  # fails in the middle of training
        with pytest.raises(ValueError, match="NaN"):
            bad()
        assert (
            same_weights(weights_of(model), weights) and model.fit_record.options == config and model.history == history
        )


# -- memory and threads ------------------------------------------------------------------------------


def test_dropped_models_leave_pyro_s_parameter_store():
    x = bars(16).x
    small_vae().evaluate(x)  # whatever one-off entries the first call makes
    gc.collect()
    before = len(pyro.get_param_store().keys())
    for _ in range(100):
        model = small_vae(prior="vamp")
        model.evaluate(x)
        del model
    gc.collect()
    assert len(pyro.get_param_store().keys()) == before
    kept = small_vae()
    kept.evaluate(x)
    assert any(name.startswith(kept.pyro_name + ".") for name in pyro.get_param_store().keys())


def test_models_built_and_sampled_without_a_seed_in_another_thread_leave_a_training_as_it_is_alone():
    data = bars(512)
    alone = fit(small_vae(), data, epochs=3, seed=1)
    stop, built, errors = threading.Event(), [], []

    def build_and_sample():
        try:
            while not stop.is_set():
                model = small_vae()  # its weights drawn from torch's global stream
                model.sample(2)  # and its samples: no seed
                built.append(1)
        except Exception as error:  # pragma: no cover - what the test is about
            errors.append(error)

    thread = threading.Thread(target=build_and_sample)
    thread.start()
    try:
        trained = fit(small_vae(), data, epochs=3, seed=1)
    finally:
        stop.set()
        thread.join()
    assert not errors and len(built) >= 2
    assert same_weights(weights_of(trained), weights_of(alone))


def test_scoring_in_a_thread_while_another_trains_gives_the_numbers_each_gets_alone():
    data, other = bars(512), fit(small_vae(), bars(64).x)
    alone = fit(small_vae(), data, epochs=3, seed=1)
    scores_alone = other.evaluate(bars(64, seed=1).x, num_samples=50)

    scores, errors, training = [], [], threading.Event()

    def score_while_training():
        try:
            training.wait(30)
            while training.is_set():
                scores.append(other.evaluate(bars(64, seed=1).x, num_samples=50))
        except Exception as error:  # pragma: no cover - what the test is about
            errors.append(error)

    scorer = threading.Thread(target=score_while_training)
    scorer.start()
    trained = small_vae()
    training.set()
    try:
        fit(trained, data, epochs=3, seed=1)
    finally:
        training.clear()
        scorer.join()
    assert not errors and len(scores) >= 2

    def numbers(s):
        return {k: v for k, v in s.items() if "seconds" not in k}

    assert all(numbers(s) == numbers(scores_alone) for s in scores)
    assert same_weights(weights_of(trained), weights_of(alone))
