"""beta, KL warm-up and the reported ELBO: training weights change, the reported ELBO never does."""

import pytest
import torch

import ppvae


@pytest.mark.slow
def test_beta_sweep_trades_kl_for_reconstruction(fashion):
    train, test = fashion[0].subset(3000), fashion[1].subset(1000)
    scores = {}
    for beta in (0.5, 1.0, 4.0):
        vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=10, beta=beta)
        vae.fit(train, epochs=3, batch_size=100, progress=False, elbo="meanfield")
        scores[beta] = vae.evaluate(test)
    kl = [scores[b]["kl"] for b in (0.5, 1.0, 4.0)]
    reconstruction = [scores[b]["reconstruction"] for b in (0.5, 1.0, 4.0)]
    assert kl[0] > kl[1] > kl[2]  # a heavier KL weight buys a simpler code...
    assert reconstruction[0] > reconstruction[1] > reconstruction[2]  # ...paid for in reconstruction
    assert kl[0] > 1.5 * kl[2]


def test_kl_warmup_ramps_the_weight_and_reports_the_true_elbo():
    x = torch.bernoulli(torch.full((200, 1, 8, 8), 0.3))
    vae = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, beta=2.0, network={"name": "mlp", "hidden": [16]})
    history = vae.fit(x, epochs=4, batch_size=50, kl_warmup=2, test=x[:50], progress=False).history
    weights = [r["kl_weight"] for r in history]
    assert weights[0] == pytest.approx(1.0) and weights[1] == weights[2] == weights[3] == 2.0  # 0.5 of beta, then beta
    assert all("train_elbo" not in r for r in history)  # beta != 1: the training loss is not the ELBO
    # the test ELBO is the true ELBO whatever the weight: it equals evaluate()'s
    assert history[-1]["test_elbo"] == pytest.approx(vae.evaluate(x[:50])["elbo"])
    plain = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2, network={"name": "mlp", "hidden": [16]})
    history = plain.fit(x, epochs=3, batch_size=50, kl_warmup=2, progress=False).history
    assert ["train_elbo" in r for r in history] == [False, False, True]
    assert not hasattr(plain, "kl_annealing")  # the weight reaches the programs as an argument; the model is untouched
    with pytest.raises(ValueError, match="kl_warmup must be"):
        plain.fit(x, epochs=1, kl_warmup=-1, progress=False)
