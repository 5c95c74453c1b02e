"""The reliability probes, run as a user would: each probe runs the CLI (or a few lines of Python) on Fashion-MNIST
and classes the outcome as good (the right behaviour, or one clear line with exit 2, nothing lost) or poor.

Not part of the test suite (about 15 minutes; each class it probes has its test in tests/): run it by hand
after changing run folders, resume or input checks, and read the POOR lines.

    python tests/scripts/probes.py            # every probe, in a fresh folder under the system's temp dir
    python tests/scripts/probes.py hostile    # only probes whose name holds a word, in the same folder
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(tempfile.gettempdir()) / "ppvae-probes"
PY = sys.executable
SMALL = ["--limit", "300", "--test-limit", "100", "--epochs", "1", "--quiet"]
results: list[tuple[str, bool, str]] = []


def run(*args, timeout=600, env=None, input=None):
    p = subprocess.run(
        [PY, "-m", "ppvae", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=input,
    )
    return p.returncode, p.stdout, p.stderr


def python(code: str, timeout=600):
    p = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


def one_line_error(rc, out, err, *words) -> tuple[bool, str]:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    ok = rc == 2 and len(lines) == 1 and "please report" not in err and "Traceback" not in err
    ok = ok and all(w.lower() in err.lower() for w in words)
    return ok, f"rc={rc} err={err.strip()[:300]!r}"


ONLY = sys.argv[1:]


def probe(name):
    def wrap(fn):
        if ONLY and not any(word in name for word in ONLY):
            return fn
        started = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as e:  # the probe itself broke: poor, with the reason
            ok, detail = False, f"probe raised {type(e).__name__}: {e}"
        results.append((name, ok, detail))
        print(
            f"{'GOOD' if ok else 'POOR'}  {name}  ({time.perf_counter() - started:.0f} s)  {detail[:400]}", flush=True
        )
        return fn

    return wrap


def train(out, *extra, timeout=600):
    return run("train", *SMALL, "--out", out, *extra, timeout=timeout)


def main():
    if not ONLY:
        shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True, exist_ok=True)
    for name, extra in (("vae", ()), ("ae", ("--guide", "delta"))):
        if not (ROOT / name / "weights.pt").exists():
            assert train(name, *extra)[0] == 0, f"the probes' {name} run did not train"

    # ---- 1. autoencoder runs in compare, sweep, evaluate
    @probe("compare an autoencoder beside a VAE")
    def _():
        rc, out, err = run("compare", "ae", "vae", "--test-limit", "50", "--num-samples", "10", "--quiet")
        return rc == 0 and "ae" in out, f"rc={rc} {err.strip()[-200:]}"

    @probe("sweep --guide delta over beta")
    def _():
        rc, out, err = run("sweep", "--guide", "delta", "--beta", "1", "4", *SMALL, "--out", "sweep_ae")
        return rc == 0, f"rc={rc} {err.strip()[-200:]}"

    @probe("compare --num-samples 0")
    def _():
        rc, out, err = run("compare", "vae", "vae", "--test-limit", "50", "--num-samples", "0", "--quiet")
        return rc in (0, 2) and "please report" not in err and "KeyError" not in err, f"rc={rc} {err.strip()[-200:]}"

    @probe("evaluate an autoencoder does not call its loss an ELBO")
    def _():
        rc, out, err = run("evaluate", "ae", "--test-limit", "50", "--quiet")
        return rc == 0 and "ELBO" not in out.replace("no ELBO", ""), out.strip()[:300]

    # ---- 2. resume with the command it resumes
    @probe("--resume with the training command repeated, --epochs grown")
    def _():
        train("r1", "--seed", "3")
        rc, out, err = run(
            "train",
            "--limit",
            "300",
            "--test-limit",
            "100",
            "--epochs",
            "2",
            "--quiet",
            "--out",
            "r1",
            "--seed",
            "3",
            "--resume",
        )
        epochs = len((ROOT / "r1" / "metrics.jsonl").read_text().splitlines()) if rc == 0 else None
        return rc == 0, f"rc={rc} metrics lines={epochs} {err.strip()[-200:]}"

    @probe("--resume with a differing option names it and both values")
    def _():
        return one_line_error(*run("train", *SMALL, "--out", "r1", "--z-dim", "7", "--resume"), "z", "7", "20")

    @probe("plain --resume trains to the recorded epochs, not the default")
    def _():
        train("r2", "--epochs", "2")  # SMALL's --epochs 1 comes first; the later flag wins
        (ROOT / "r2" / "checkpoint.pt").exists()
        rc, out, err = run("train", "--out", "r2", "--resume", "--quiet")
        return rc == 0, f"rc={rc} {err.strip()[-200:]} {out.strip()[-200:]}"

    @probe("--resume may lower --lr and add --clip-norm, recorded")
    def _():
        rc, out, err = run(
            "train", *SMALL, "--epochs", "5", "--out", "r1", "--resume", "--lr", "1e-4", "--clip-norm", "5"
        )
        spec = (ROOT / "r1" / "spec.json").read_text()
        return rc == 0 and "0.0001" in spec, f"rc={rc} {err.strip()[-200:]}"

    # ---- 3. README python blocks: tests/test_docs.py; plot training on the README's run
    @probe("plot training on a run without snapshots")
    def _():
        rc, out, err = run("plot", "vae", "training", "--test-limit", "50")
        return rc == 0 or one_line_error(rc, out, err)[0], f"rc={rc} {err.strip()[-200:]}"

    # ---- 5. logs to a file hold no progress frames
    @probe("evaluate into a pipe writes a few plain lines")
    def _():
        rc, out, err = run("evaluate", "vae", "--test-limit", "100", "--num-samples", "100")
        frames = (out + err).count("\r")
        lines = len((out + err).splitlines())
        return rc == 0 and frames == 0 and lines < 40, f"rc={rc} carriage returns={frames} lines={lines}"

    # ---- Security: links planted in a received run
    @probe("a link at RUN/samples.png is not written through")
    def _():
        shutil.copytree(ROOT / "vae", ROOT / "linked", dirs_exist_ok=True)
        target = ROOT / "outside.png"
        target.write_bytes(b"mine")
        (ROOT / "linked" / "samples.png").unlink(missing_ok=True)
        (ROOT / "linked" / "samples.png").symlink_to(target)
        rc, out, err = run("sample", "linked")
        return target.read_bytes() == b"mine", f"rc={rc} {err.strip()[-200:]}"

    @probe("a link at RUN/KIND.png is not written through")
    def _():
        target = ROOT / "outside2.png"
        target.write_bytes(b"mine")
        (ROOT / "linked" / "scatter.png").symlink_to(target)
        rc, out, err = run("plot", "linked", "scatter", "--test-limit", "50")
        return target.read_bytes() == b"mine", f"rc={rc} {err.strip()[-200:]}"

    @probe("RUN/logs a link: --resume writes nothing there")
    def _():
        train("logs_run")
        elsewhere = ROOT / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "keep.txt").write_text("x")
        logs = ROOT / "logs_run" / "logs"
        if logs.exists():
            shutil.rmtree(logs)
        logs.symlink_to(elsewhere)
        rc, out, err = run("train", *SMALL, "--epochs", "2", "--out", "logs_run", "--resume")
        return sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"], f"rc={rc} {err.strip()[-200:]}"

    @probe("compare --out through a planted link")
    def _():
        (ROOT / "cmp").mkdir()
        target = ROOT / "outside3.md"
        target.write_text("mine")
        for name in ("comparison.md", "report.md", "compare.md", "table.md"):
            (ROOT / "cmp" / name).symlink_to(target)
        rc, out, err = run(
            "compare", "vae", "vae", "--test-limit", "50", "--num-samples", "10", "--out", "cmp", "--quiet"
        )
        return target.read_text() == "mine", f"rc={rc} {err.strip()[-200:]}"

    # ---- Data loss
    @probe("model.save over a run without overwrite is refused")
    def _():
        rc, out, err = python("""
            import ppvae
            m = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20)
            try:
                m.save("vae")
                print("SAVED")
            except Exception as e:
                print("REFUSED", type(e).__name__, e)
        """)
        return "REFUSED" in out and (ROOT / "vae" / "checkpoint.pt").exists(), out.strip()[:300]

    @probe("--overwrite keeps the user's own files")
    def _():
        train("ow")
        (ROOT / "ow" / "mine.png").write_bytes(b"user")
        (ROOT / "ow" / "notes.txt").write_text("user")
        rc, out, err = train("ow", "--overwrite")
        kept = (ROOT / "ow" / "mine.png").exists() and (ROOT / "ow" / "notes.txt").exists()
        return rc == 0 and kept, f"rc={rc} kept={kept}"

    @probe("an --overwrite that fails at once leaves the old run")
    def _():
        rc, out, err = train("ow", "--overwrite", "--lr", "1e30")
        alive = run("evaluate", "ow", "--test-limit", "20", "--quiet")[0] == 0
        return alive, f"rc={rc} old run evaluates={alive} {err.strip()[-150:]}"

    @probe("demo --out over a folder with the user's files")
    def _():
        (ROOT / "demo_out").mkdir()
        (ROOT / "demo_out" / "mine.png").write_bytes(b"user")
        rc, out, err = run("demo", "--out", "demo_out")
        return (ROOT / "demo_out" / "mine.png").exists() and rc == 2, f"rc={rc} {err.strip()[-200:]}"

    # ---- A damaged checkpoint
    for kind, payload in {
        "truncated": None,
        "empty": b"",
        "random bytes": os.urandom(5000),
    }.items():

        @probe(f"a {kind} checkpoint.pt: evaluate, sample, load work; resume says why")
        def _(kind=kind, payload=payload):
            folder = ROOT / f"ck_{kind.replace(' ', '_')}"
            shutil.copytree(ROOT / "vae", folder)
            ck = folder / "checkpoint.pt"
            ck.write_bytes(ck.read_bytes()[:1000] if payload is None else payload)
            ev = run("evaluate", folder.name, "--test-limit", "20", "--quiet")[0]
            sa = run("sample", folder.name)[0]
            lo = python(f"import ppvae; ppvae.load({folder.name!r}); print('ok')")[1].strip() == "ok"
            rc, out, err = run("train", *SMALL, "--epochs", "2", "--out", folder.name, "--resume")
            resumed_msg = one_line_error(rc, out, err, "checkpoint")[0]
            return (
                ev == 0 and sa == 0 and lo and resumed_msg,
                f"evaluate={ev} sample={sa} load={lo} resume: {err.strip()[:200]}",
            )

    # ---- Resume that does something else
    @probe("fit(resume=True) with other options or other data is refused")
    def _():
        rc, out, err = python("""
            import torch, ppvae
            d = ppvae.data.load("fashion-mnist", split="train").subset(300)
            m = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20)
            m.fit(d, epochs=1, out="fitres", progress=False)
            for kw in ({"batch_size": 17}, {"elbo": "meanfield"}):
                try:
                    m.fit(d, epochs=2, out="fitres", resume=True, progress=False, **kw)
                    print("ACCEPTED", kw)
                except ValueError as e:
                    print("REFUSED", kw, e)
            noise = torch.rand(300, 1, 28, 28)
            try:
                m.fit(noise, epochs=2, out="fitres", resume=True, progress=False)
                print("ACCEPTED noise")
            except ValueError as e:
                print("REFUSED noise", e)
        """)
        return out.count("REFUSED") == 3, out.strip()[:600] + err.strip()[-300:]

    @probe("--resume on a --data file whose contents changed")
    def _():
        import numpy as np

        rng = np.random.default_rng(0)
        np.save(ROOT / "d.npy", rng.random((300, 1, 8, 8), dtype=np.float32))
        run("train", "--data", "d.npy", "--epochs", "1", "--quiet", "--out", "drun")
        np.save(ROOT / "d.npy", rng.random((300, 1, 8, 8), dtype=np.float32))
        return one_line_error(
            *run("train", "--data", "d.npy", "--epochs", "2", "--quiet", "--out", "drun", "--resume"), "data"
        )

    @probe("a run killed during its first write: train and --resume agree")
    def _():
        (ROOT / "k0").mkdir()
        shutil.copy(ROOT / "vae" / "spec.json", ROOT / "k0" / "spec.json")
        a = run("train", *SMALL, "--out", "k0")
        b = run("train", *SMALL, "--out", "k0", "--resume")
        return a[0] == 2 and b[0] == 2 and a[2].strip() == b[2].strip(), f"{a[2].strip()[:150]} | {b[2].strip()[:150]}"

    @probe("hidden .tmp files from a killed write go")
    def _():
        folder = ROOT / "tmps"
        shutil.copytree(ROOT / "vae", folder)
        stale = folder / ".checkpoint.pt.1234.tmp"
        stale.write_bytes(b"x" * 1000)
        old = time.time() - 3600
        os.utime(stale, (old, old))
        run("train", *SMALL, "--epochs", "2", "--out", "tmps", "--resume")
        return not stale.exists(), f"left: {[p.name for p in folder.iterdir() if p.name.endswith('.tmp')]}"

    @probe("fit(resume=True) into another architecture")
    def _():
        rc, out, err = python("""
            import ppvae
            d = ppvae.data.load("fashion-mnist", split="train").subset(300)
            m = ppvae.VAE(x_shape=(1, 28, 28), z_dim=5)
            try:
                m.fit(d, epochs=2, out="vae", resume=True, progress=False)
                print("ACCEPTED")
            except ValueError as e:
                print("REFUSED", e)
        """)
        return "REFUSED" in out and "state_dict" not in out, out.strip()[:300] + err.strip()[-200:]

    @probe("--resume on an EM factor-analysis run")
    def _():
        run("train", "--model", "fa", "--limit", "300", "--test-limit", "100", "--quiet", "--out", "fa_em")
        rc, out, err = run(
            "train", "--model", "fa", "--limit", "300", "--test-limit", "100", "--quiet", "--out", "fa_em", "--resume"
        )
        return (rc == 0 and "nothing to resume" in out) or one_line_error(rc, out, err, "EM")[0], out + err

    @probe("an evaluation made during a training goes when the weights change")
    def _():
        train("ev", "--epochs", "1")
        run("evaluate", "ev", "--test-limit", "20", "--quiet")
        before = (ROOT / "ev" / "evaluation.json").exists()
        run("train", *SMALL, "--epochs", "2", "--out", "ev", "--resume")
        return before and not (ROOT / "ev" / "evaluation.json").exists(), f"written={before}"

    @probe("conv runs: same seed twice gives the same weights and BatchNorm statistics")
    def _():
        train("conv1", "--network", "conv", "--seed", "1", "--epochs", "2")
        run("train", *SMALL, "--network", "conv", "--seed", "1", "--out", "conv2")
        run("train", *SMALL, "--network", "conv", "--seed", "1", "--epochs", "2", "--out", "conv2", "--resume")
        rc, out, err = python("""
            import torch
            a = torch.load("conv1/weights.pt", weights_only=True)
            b = torch.load("conv2/weights.pt", weights_only=True)
            a = a.get("state_dict", a); b = b.get("state_dict", b)
            def flat(d, p=""):
                for k, v in d.items():
                    if isinstance(v, dict): yield from flat(v, p + k + ".")
                    elif torch.is_tensor(v): yield p + k, v
            fa, fb = dict(flat(a)), dict(flat(b))
            print(len(fa), all(torch.equal(fa[k], fb[k]) for k in fa))
        """)
        return out.strip().endswith("True"), out.strip() + err.strip()[-300:]

    # ---- Bounds
    for field, value in {"z_dim": 10**9, "hidden": [10**9], "x_shape": [1, 10**5, 10**5]}.items():

        @probe(f"a hostile spec.json ({field}={value}) is measured before allocating")
        def _(field=field, value=value):
            folder = ROOT / f"hostile_{field}"
            shutil.copytree(ROOT / "vae", folder)
            spec = json.loads((folder / "spec.json").read_text())
            if field == "hidden":
                spec["config"]["network"]["hidden"] = value
            else:
                spec["config"][field] = value
            (folder / "spec.json").write_text(json.dumps(spec))
            return one_line_error(*run("evaluate", folder.name, "--test-limit", "20", "--quiet", timeout=120))

    @probe("--num-particles 100000 is refused before training (memory)")
    def _():
        return one_line_error(*train("np", "--num-particles", "100000", timeout=300))

    @probe("--z-dim 1000000 is one line")
    def _():
        return one_line_error(*train("zd", "--z-dim", "1000000", timeout=300))

    # ---- Inputs passed to torch unchecked
    @probe("Bernoulli on values above 1")
    def _():
        import numpy as np

        np.save(ROOT / "big.npy", np.full((50, 1, 8, 8), 3.0, dtype=np.float32))
        return one_line_error(
            *run("train", "--data", "big.npy", "--binarize", "None", "--epochs", "1", "--quiet", "--out", "big")
        )

    toml_cases = {
        "model = 3": ("[model]\nmodel = 3\n", "model"),
        "[data] data = 5": ("[data]\ndata = 5\n", "data"),
        'seed = "x"': ('[fit]\nseed = "x"\n', "seed"),
        'z_dim = "four"': ('[model]\nz_dim = "four"\n', "z_dim"),
        "lr = inf": ("[fit]\nlr = inf\n", "lr"),
        "beta = inf": ("[model]\nbeta = inf\n", "beta"),
    }
    for label, (text, word) in toml_cases.items():

        @probe(f"TOML {label}")
        def _(text=text, word=word, label=label):
            path = ROOT / f"spec_{abs(hash(label))}.toml"
            path.write_text(text)
            return one_line_error(*train(f"toml_{abs(hash(label))}", "--spec", path.name), word)

    for seed in ("-1", str(2**64), "2.5", "None"):

        @probe(f"--seed {seed}")
        def _(seed=seed):
            return one_line_error(*train(f"seed_{seed}", "--seed", seed), "seed")

    @probe("fit(seed=None / 2.5 / -1) from Python")
    def _():
        rc, out, err = python("""
            import ppvae
            d = ppvae.data.load("fashion-mnist", split="train").subset(50)
            for s in (2.5, -1, 2**64, "x"):
                m = ppvae.VAE(x_shape=(1, 28, 28), z_dim=2)
                try:
                    m.fit(d, epochs=1, seed=s, progress=False)
                    print("ACCEPTED", s)
                except (ValueError, TypeError) as e:
                    print("REFUSED", s, str(e).splitlines()[0][:80])
        """)
        return out.count("REFUSED") == 4, out.strip()

    @probe("CVAE labels 2.5, NaN, strings; sample(4, y=3.7)")
    def _():
        rc, out, err = python("""
            import torch, ppvae, numpy as np
            x = torch.rand(20, 1, 8, 8)
            for y in (torch.full((20,), 2.5), torch.full((20,), float("nan")), np.array(["a"] * 20)):
                m = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2)
                try:
                    m.fit(x, y=y, epochs=1, progress=False)
                    print("ACCEPTED")
                except (ValueError, TypeError) as e:
                    print("REFUSED", str(e).splitlines()[0][:100])
            m = ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3, z_dim=2)
            try:
                m.sample(4, y=3.7)
                print("ACCEPTED")
            except (ValueError, TypeError) as e:
                print("REFUSED", str(e).splitlines()[0][:100])
        """)
        good = out.count("REFUSED") == 4 and "9.2e18" not in out and "Traceback" not in err
        return good, out.strip()[:500] + err.strip()[-300:]

    @probe("lazy .npy with a bad image past the first 10,000")
    def _():
        import numpy as np

        arr = np.lib.format.open_memmap(ROOT / "lazy.npy", mode="w+", dtype=np.float32, shape=(12000, 1, 8, 8))
        arr[:] = 0.5
        arr[11000] = 3.0
        arr.flush()
        del arr
        return one_line_error(
            *run(
                "train",
                "--data",
                "lazy.npy",
                "--binarize",
                "None",
                "--likelihood",
                "continuous_bernoulli",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                "lazy",
            )
        )

    @probe("sweep values that print alike are refused")
    def _():
        return one_line_error(*run("sweep", "--beta", "0.1", "0.1000001", *SMALL, "--out", "alike"))

    # ---- Concurrency and kills
    @probe("two trainings into one folder at once: one refused, the other whole")
    def _():
        args = [
            PY,
            "-m",
            "ppvae",
            "train",
            "--limit",
            "2000",
            "--test-limit",
            "100",
            "--epochs",
            "2",
            "--quiet",
            "--out",
            "race",
        ]
        a = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        b = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ra, rb = a.wait(), b.wait()
        ea, eb = a.stderr.read(), b.stderr.read()
        alive = run("evaluate", "race", "--test-limit", "20", "--quiet")[0] == 0
        return sorted([ra, rb]) == [0, 2] and alive, f"rc={ra},{rb} evaluates={alive} {(ea + eb).strip()[:200]}"

    rng = random.Random(27)
    for trial in range(4):

        @probe(f"SIGKILL at a random moment, then --resume (trial {trial})")
        def _(trial=trial):
            folder = f"kill{trial}"
            command = ["train", "--limit", "3000", "--test-limit", "100", "--epochs", "3", "--quiet", "--seed", "5"]
            command += ["--out", folder]
            p = subprocess.Popen(
                [PY, "-m", "ppvae", *command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            delay = rng.uniform(4, 25)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.wait()
            rc, out, err = run(*command, "--resume")
            if rc == 2 and "never finished an epoch" in err:
                rc, out, err = run(*command, "--overwrite")
            ev = run("evaluate", folder, "--test-limit", "20", "--quiet")[0]
            return rc == 0 and ev == 0, f"killed after {delay:.1f} s; resume rc={rc} {err.strip()[:200]}; evaluate={ev}"

    good = sum(ok for _, ok, _ in results)
    print(f"\n{good} of {len(results)} probes good")
    for name, ok, detail in results:
        if not ok:
            print(f"POOR: {name}: {detail}")


if __name__ == "__main__":
    main()
