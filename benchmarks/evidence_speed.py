"""Seconds to estimate log p(x) by importance sampling: ppvae's estimator against two hand-written ones.

All three estimate log p(x) for the same test images with K samples from the
same trained 784-400-20 MLP VAE (Bernoulli likelihood, statically binarised
Fashion-MNIST):

- ppvae: ``ppvae.log_evidence`` (Pyro traces of the model and the guide,
  vectorised over K, chunked to a memory budget, float64 log-sum-exp).
- direct: the same estimator as one tensor formula for this one model, with
  the same chunks: encoder once, decoder over K x N samples. Its cost is the
  decoder's matrix products and the Bernoulli log-prob, the limit for any
  estimator. Target: <= 1.1x.
- pythae's ``VAE.get_nll`` (one image at a time, K samples in chunks of
  ``--loop-chunks``, the image repeated through the encoder for every sample),
  on a pythae VAE holding the same weights, when pythae is importable
  (``pip install pythae``; it is not a ppvae dependency). Target: ppvae faster
  at any chunk size.
- a lean per-example loop: the same structure as pythae's, but the encoder run
  once per image; the best a one-image-at-a-time loop can do.

    python benchmarks/evidence_speed.py [--images 1000] [--samples 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import ppvae
from ppvae.infer.evidence import rows_per_pass


def networks(vae: ppvae.VAE):
    return vae.networks.encoder_net, vae.networks.decoder_net, vae.z_dim


def log_weights(vae: ppvae.VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for k draws per image of the flat batch x, shape (k, n)."""
    encoder, decoder, z_dim = networks(vae)
    loc, log_var = encoder(x).split(z_dim, dim=-1)
    scale = torch.exp(0.5 * log_var)
    eps = torch.randn((k,) + loc.shape)
    z = loc + scale * eps
    log_px_z = -F.binary_cross_entropy_with_logits(decoder(z), x.expand(k, *x.shape), reduction="none").sum(-1)
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    log_qz = -0.5 * (eps.pow(2) + math.log(2 * math.pi)).sum(-1) - torch.log(scale).sum(-1)
    return log_px_z + log_pz - log_qz


@torch.no_grad()
def direct(vae: ppvae.VAE, x: torch.Tensor, k: int, batch_size: int, chunk_size: int) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64)
        for done in range(0, k, chunk_size):
            total = torch.logaddexp(total, torch.logsumexp(log_weights(vae, xb, min(chunk_size, k - done)).double(), 0))
        out.append(total - math.log(k))
    return torch.cat(out)


@torch.no_grad()
def per_example_loop(vae: ppvae.VAE, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    out = []
    for i in range(x.shape[0]):
        weights = [log_weights(vae, x[i : i + 1], chunk)[:, 0] for _ in range(k // chunk)]
        out.append(torch.logsumexp(torch.cat(weights).double(), 0) - math.log(k))
    return torch.stack(out)


def pythae_twin(vae: ppvae.VAE):
    """A pythae VAE with the same networks (and weights) as ``vae``; None if pythae is not installed."""
    try:
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError:
        return None
    encoder_net, decoder_net, z_dim = networks(vae)

    class Encoder(BaseEncoder):
        def forward(self, x):
            loc, log_var = encoder_net(x.reshape(x.shape[0], -1)).split(z_dim, dim=-1)
            return ModelOutput(embedding=loc, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(decoder_net(z)).reshape(z.shape[0], 1, 28, 28))

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=z_dim, reconstruction_loss="bce")
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder()).eval()


def timed(fn) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--loop-chunks", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--train-limit", type=int, default=10000)
    args = parser.parse_args()

    torch.manual_seed(0)
    train = ppvae.data.load("fashion-mnist", split="train").subset(args.train_limit)
    test = ppvae.data.load("fashion-mnist", split="test").subset(args.images)
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20)
    vae.fit(train, epochs=1, binarize="static", progress=False)
    vae.eval()
    x = vae.prepare(test, "static")
    flat = x.reshape(x.shape[0], -1)
    k = args.samples
    chunk_size = min(k, rows_per_pass(64, 784))
    batch_size = max(1, rows_per_pass(64, 784) // chunk_size)
    print(
        f"K={k} on {x.shape[0]} Fashion-MNIST test images, {torch.get_num_threads()} threads, "
        f"chunks of {batch_size} images x {chunk_size} samples\n"
    )

    times: dict[str, list[float]] = {}
    results: dict[str, torch.Tensor] = {}
    candidates = {
        "ppvae.log_evidence": lambda: ppvae.log_evidence(
            vae, x, num_samples=k, binarize=None, progress=False, seed=None
        ),
        "direct tensor formula": lambda: direct(vae, flat, k, batch_size, chunk_size),
    }
    for round_ in range(args.rounds):  # alternate the order, so that neither always runs first
        for name, fn in list(candidates.items())[:: 1 if round_ % 2 == 0 else -1]:
            seconds, results[name] = timed(fn)
            times.setdefault(name, []).append(seconds)
    twin = pythae_twin(vae)
    for chunk in args.loop_chunks:  # slow: one round
        if twin is not None:
            name = f"pythae get_nll, chunks of {chunk}"
            with torch.no_grad():
                seconds, nll = timed(lambda chunk=chunk: twin.get_nll(x, n_samples=k, batch_size=chunk))
            results[name], times[name] = torch.tensor([nll]), [seconds]  # get_nll returns the mean log p(x)
        name = f"lean per-example loop, chunks of {chunk}"
        seconds, results[name] = timed(lambda chunk=chunk: per_example_loop(vae, flat, k, chunk))
        times[name] = [seconds]
    if twin is None:
        print("(pythae is not installed: its rows are left out)\n")

    ours = statistics.median(times["ppvae.log_evidence"])
    print("| estimator | seconds per 1000 images | ppvae / this | mean log p(x) |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        seconds = statistics.median(values)
        per_thousand = seconds * 1000 / x.shape[0]
        print(f"| {name} | {per_thousand:.2f} | {ours / seconds:.3f} | {results[name].mean():.3f} |")


if __name__ == "__main__":
    main()
