import json

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam

import ppvae


def test_traces_have_the_sites_and_shapes_of_the_math(binary_images):
    model = ppvae.VAE(x_shape=(1, 28, 28), z_dim=20)
    guide_trace = poutine.trace(model.guide).get_trace(binary_images)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(binary_images)
    z_q, z_p, x = guide_trace.nodes["z"], model_trace.nodes["z"], model_trace.nodes["x"]
    assert z_q["value"].shape == (64, 20) and z_q["fn"].event_shape == (20,) and z_q["fn"].batch_shape == (64,)
    assert z_p["fn"].batch_shape == (64,) and z_p["fn"].event_shape == (20,)
    assert torch.equal(z_p["value"], z_q["value"])  # the model scores the guide's z
    assert x["is_observed"] and x["fn"].event_shape == (1, 28, 28) and x["fn"].batch_shape == (64,)
    assert [f.name for f in x["cond_indep_stack"]] == ["data"]
    params = {name for name, site in model_trace.nodes.items() if site["type"] == "param"}
    assert params and all(name.startswith(model.pyro_name) for name in params)


def test_programs_work_with_plain_pyro_tools(binary_images):
    model = ppvae.VAE(z_dim=5)
    loss = Trace_ELBO().loss(model.model, model.guide, binary_images)
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    draws = Predictive(model.model, num_samples=3)(size=7)
    assert draws["x"].shape == (3, 7, 1, 28, 28) and draws["z"].shape == (3, 7, 5)


def test_pyro_svi_trains_one_model_without_touching_another(binary_images):
    a, b = ppvae.VAE(z_dim=4), ppvae.VAE(z_dim=4)
    b.fit(binary_images, epochs=1, batch_size=32, progress=False)  # both live in Pyro's one param store
    a_before = {k: v.clone() for k, v in a.state_dict().items()}
    b_before = {k: v.clone() for k, v in b.state_dict().items()}
    svi = SVI(a.model, a.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(binary_images)
    assert all(not torch.equal(a_before[k], v) for k, v in a.state_dict().items())  # SVI optimised a's own tensors
    assert all(torch.equal(b_before[k], v) for k, v in b.state_dict().items())  # and none of b's
    store = pyro.get_param_store()
    a_params = [store[n] for n in store.keys() if n.startswith(a.pyro_name)]
    assert len(a_params) == len(a_before)
    assert {id(p) for p in a_params} == {id(p) for p in a.parameters()}


def test_two_models_keep_their_own_weights(binary_images):
    a, b = ppvae.VAE(z_dim=3), ppvae.VAE(z_dim=3)
    b_weights = {k: v.clone() for k, v in b.state_dict().items()}
    a.fit(binary_images, epochs=2, batch_size=16, progress=False)
    assert all(torch.equal(b_weights[k], v) for k, v in b.state_dict().items())
    assert a.pyro_name != b.pyro_name


@pytest.mark.slow
def test_model_learns_on_fashion_mnist(fashion):
    train, test = fashion
    model = ppvae.VAE(z_dim=20)
    before = model.evaluate(test.subset(2000), binarize="static")["elbo"]
    history = model.fit(
        train.subset(10000), epochs=1, binarize="dynamic", test=test.subset(2000), progress=False
    ).history
    after = history[-1]["test_elbo"]
    assert after > before + 150, (before, after)  # from about -549 at init to about -305 nats
    assert history[-1]["test_kl"] > 1  # the latent code is used
    # the reconstruction of a binarised test image predicts its grey levels far better than the mean image
    grey = test.x[:500]
    recon_error = ((model.reconstruct(ppvae.data.binarize(grey, "static", seed=1)) - grey) ** 2).mean()
    mean_error = ((train.x[:10000].mean(0) - grey) ** 2).mean()
    assert recon_error < 0.7 * mean_error  # measured: 0.043 against 0.088


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_both_objectives_improve_the_elbo(binary_images, elbo):
    x = torch.cat([binary_images, binary_images.flip(-1)])
    model = ppvae.VAE(z_dim=4, network={"name": "mlp", "hidden": [32]})
    before = model.evaluate(x)["elbo"]
    model.fit(x, epochs=15, batch_size=32, lr=3e-3, elbo=elbo, progress=False)
    assert model.evaluate(x)["elbo"] > before + 20


def test_flat_and_image_inputs_agree(binary_images):
    model = ppvae.VAE(z_dim=6)
    flat = binary_images.reshape(64, -1)
    assert torch.equal(model.encode(flat), model.encode(binary_images))
    assert model.reconstruct(flat).shape == (64, 1, 28, 28)
    with pytest.raises(ValueError, match="do not match"):
        model.encode(torch.rand(3, 100))


def test_encode_decode_sample_shapes(binary_images):
    model = ppvae.VAE(z_dim=6)
    loc, scale = model.encode(binary_images, return_scale=True)
    assert loc.shape == scale.shape == (64, 6) and (scale > 0).all()
    images = model.decode(loc)
    assert images.shape == (64, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert model.sample(10).shape == (10, 1, 28, 28)
    assert torch.equal(model.sample(5, seed=1), model.sample(5, seed=1))


def test_save_and_load_reproduce_the_model_exactly(tmp_path, binary_images):
    model = ppvae.VAE(z_dim=5)
    model.fit(binary_images, epochs=2, batch_size=16, test=binary_images[:16], progress=False)
    model.save(tmp_path / "run")
    same = ppvae.load(tmp_path / "run")
    assert torch.equal(same.encode(binary_images), model.encode(binary_images))
    assert torch.equal(same.reconstruct(binary_images), model.reconstruct(binary_images))
    assert torch.equal(same.sample(8, seed=3), model.sample(8, seed=3))
    assert same.history == json.loads(json.dumps(model.history)) and len(same.history) == 2
    assert same.fit_record.options["binarize"] is None
    weights = torch.load(tmp_path / "run" / "weights.pt", weights_only=True)
    assert set(weights["state_dict"]) == set(model.state_dict())
    assert (tmp_path / "run" / "weights.pt").stat().st_size < 3e6  # weights and 16 preview images, no more
    for name in ("spec.json", "metrics.jsonl", "samples.png", "reconstructions.png", "loss.png"):
        assert (tmp_path / "run" / name).exists(), name


def test_checkpoint_written_every_epoch(tmp_path, binary_images):
    model = ppvae.VAE(z_dim=3)
    model.fit(binary_images, epochs=2, batch_size=32, progress=False, out=tmp_path / "ckpt")
    lines = (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["epoch"] == 2


def test_bernoulli_rejects_grey_levels_with_advice():
    model = ppvae.VAE(z_dim=2)
    with pytest.raises(ValueError, match="binarize="):
        model.fit(torch.rand(32, 1, 28, 28), epochs=1, binarize=None, progress=False)


def test_auto_binarization_is_dynamic_for_grey_data():
    model = ppvae.VAE(z_dim=2)
    model.fit(torch.rand(32, 1, 28, 28), epochs=1, progress=False)
    assert model.fit_record.options["binarize"] == "dynamic"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"z_dim": 0}, "z_dim"),
        ({"beta": 0.0}, "beta must be a positive finite number"),
        ({"prior": "gaussian-mixture-of-dreams"}, "unknown prior .* available: normal"),
        ({"likelihood": {"name": "bernoulli", "temperature": 2}}, "has no option 'temperature'"),
        ({"network": {"hidden": [10]}}, "needs a 'name' key"),
        ({"network": {"name": "mlp", "hidden": [64, 0]}}, "hidden widths must be positive, got \\[64, 0\\]"),
        ({"x_shape": (28, 28)}, "x_shape must be"),
    ],
)
def test_bad_model_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ppvae.VAE(**kwargs)


def test_bad_fit_arguments_are_explained(binary_images):
    model = ppvae.VAE(z_dim=2)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        model.fit(binary_images, epochs=0)
    with pytest.raises(ValueError, match="unknown elbo"):
        model.fit(binary_images, epochs=1, elbo="iwae-ish", progress=False)
    with pytest.raises(ValueError, match="image shape"):
        model.fit(torch.rand(4, 1, 8, 8), epochs=1, progress=False)


def test_evaluation_and_sampling_leave_the_random_stream_alone(binary_images):
    vae = ppvae.VAE(x_shape=(1, 28, 28), z_dim=4)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    vae.evaluate(binary_images[:8])
    vae.sample(4, seed=1)
    ppvae.log_evidence(vae, binary_images[:4], num_samples=3, progress=False)
    assert torch.equal(torch.rand(3), expected)  # training after an evaluation draws what it would have drawn
    assert torch.equal(vae.sample(4, seed=1), vae.sample(4, seed=1))


def test_encode_sees_images_as_evaluate_scores_them():
    grey = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = ppvae.VAE(x_shape=(1, 8, 8), z_dim=3, network={"name": "mlp", "hidden": [16]})
    model.fit(grey, epochs=1, progress=False)  # a Bernoulli model: trained on dynamic binarisations
    loc, scale = model.encode(grey, return_scale=True)
    assert torch.equal(loc, model.encode(model.prepare(grey)))  # one seeded binarisation, the one evaluate uses
    kl_by_hand = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(1).mean().item()
    assert model.evaluate(grey)["kl"] == pytest.approx(kl_by_hand, rel=1e-5)
