"""Started by torchrun in tests/test_data_parallel.py: fit(devices=2) joins the two processes torchrun made.

Each rank saves its final weights to OUT/weights-RANK.pt; rank 0 writes the run folder OUT/run.
"""

import os
import sys

import torch

import ppvae

if __name__ == "__main__":
    out = sys.argv[1]
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(256, 1, 8, 8, generator=g) * 0.6 + 0.2, generator=g)
    vae = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [32]})
    vae.fit(
        x, epochs=2, batch_size=32, devices=2, accelerator="cpu", out=os.path.join(out, "run"), progress=False, seed=3
    )
    torch.save(
        torch.cat([p.detach().flatten() for p in vae.parameters()]),
        os.path.join(out, f"weights-{os.environ['RANK']}.pt"),
    )
