import os
import signal

import pytest
import torch

import ppvae


def fa_data(n, d=15, k=3, seed=0, test_size=1000):
    """(train, test) drawn from a random factor-analysis model with d dims and k factors."""
    g = torch.Generator().manual_seed(seed)
    W, mu, psi = torch.randn(d, k, generator=g), torch.randn(d, generator=g), torch.rand(d, generator=g) * 0.5 + 0.1

    def draw(m):
        return torch.randn(m, k, generator=g) @ W.T + mu + torch.randn(m, d, generator=g) * psi.sqrt()

    return draw(n), draw(test_size)


def bars(n=96, seed=0):
    """Three labelled kinds of 8x8 binary images: bright top rows, bright bottom rows, or bright left columns."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    p = torch.full((n, 1, 8, 8), 0.1)
    p[y == 0, :, :4] = 0.9
    p[y == 1, :, 4:] = 0.9
    p[y == 2, :, :, :4] = 0.9
    return ppvae.data.ImageDataset(torch.bernoulli(p, generator=g), y, "bars", "train", ["top", "bottom", "left"])


SMALL = {"x_shape": (1, 8, 8), "z_dim": 2, "network": {"name": "mlp", "hidden": [32]}}
"""A VAE small enough to train in a fraction of a second on 8x8 images."""


def small_data(n=256, seed=0):
    """``n`` binary 8x8 images, each pixel on with its own probability in [0.2, 0.8]."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, 1, 8, 8, generator=g) * 0.6 + 0.2, generator=g)


def weights_of(model):
    """A copy of the model's state (parameters and buffers), to compare after it trains on."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_weights(a, b):
    assert same_weights(a, b), (a.keys() ^ b.keys()) or [k for k in a if not torch.equal(a[k], b[k])]


def pytest_configure(config):
    """Under pytest-xdist (``-n``), the workers share the cores: each takes its share of threads, and so do the
    processes it starts (data-parallel runs, notebook kernels), as too many threads on a core slow torch badly."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def sigint_changed() -> str | None:
    """How this process's Ctrl-C handling differs from a fresh Python's, or None: a handler other than
    Python's default, or SIGINT blocked in the main thread (which a child process inherits)."""
    handler = signal.getsignal(signal.SIGINT)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    if handler is signal.default_int_handler and not blocked:
        return None
    return f"SIGINT handler {handler!r}" + (", SIGINT blocked" if blocked else "")


SIGINT_CHANGED_BY: list[str] = []
"""The first test after which Ctrl-C handling was changed (see `sigint_changed`), reported at the end of the run.
The suite's Ctrl-C tests failed once in a full run under heavy load and passed alone; this says who to look at."""


@pytest.fixture(autouse=True)
def _watch_sigint(request):
    yield
    if not SIGINT_CHANGED_BY:
        changed = sigint_changed()
        if changed is not None:
            SIGINT_CHANGED_BY.append(f"{request.node.nodeid}: {changed}")


def pytest_terminal_summary(terminalreporter):
    if SIGINT_CHANGED_BY:
        terminalreporter.write_line(f"Ctrl-C handling changed after {SIGINT_CHANGED_BY[0]}")


@pytest.fixture
def default_sigint():
    """Ctrl-C handled as in a fresh process (Python's handler, SIGINT unblocked) for the test, then as before."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    signal.signal(signal.SIGINT, handler)


@pytest.fixture(scope="session")
def fashion():
    """Real Fashion-MNIST (train, test); `make test` puts it on disk first."""
    try:
        return ppvae.data.load("fashion-mnist", split="train", download=False), ppvae.data.load(
            "fashion-mnist", split="test", download=False
        )
    except ppvae.data.DatasetNotFoundError as error:
        pytest.skip(f"Fashion-MNIST not on disk (run `make data`): {error}")


@pytest.fixture
def binary_images():
    """64 random binary 28x28 images."""
    return torch.bernoulli(torch.full((64, 1, 28, 28), 0.3))


# The parts grid: every registered prior, likelihood, guide and network once (tests/test_step.py holds it to the
# registry), with options that exercise them: a learned scale, a mixture, a flow.
PRIORS_GRID = ["normal", "laplace", {"name": "student_t", "df": 4.0}, {"name": "mixture", "components": 3}]
PRIORS_GRID += [{"name": "vamp", "components": 4}, {"name": "flow", "transform": "affine_coupling"}]
LIKELIHOODS_GRID = ["bernoulli", "continuous_bernoulli", {"name": "normal", "scale": "learned"}]
LIKELIHOODS_GRID += [{"name": "normal", "scale": "per_pixel"}, {"name": "laplace", "scale": "decoder"}]
GUIDES_GRID = ["normal", "laplace", "student_t", "logistic", "delta", {"name": "flow", "transform": "affine_coupling"}]
NETWORKS_GRID = [{"name": "mlp", "hidden": [16]}, "linear", {"name": "conv", "channels": [4, 8], "hidden": 16}]


def name_of(spec) -> str:
    """A part's name, from a spec that is a name or a dict."""
    return spec if isinstance(spec, str) else spec["name"]


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny models: with two, a busy second core made them 7x slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
