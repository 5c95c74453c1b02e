"""M2, the semi-supervised VAE: its label a sample site observed where known and enumerated where not, checked
against Pyro's own TraceEnum_ELBO and against quadrature; labels hidden as asked; bad input explained."""

import json
import math

import pyro
import pytest
import torch
from conftest import assert_same_weights, bars, weights_of
from pyro.infer import TraceEnum_ELBO

import ppvae
from ppvae.infer import elbo_terms, seeded

TINY = {"x_shape": (1, 8, 8), "num_classes": 3, "z_dim": 2, "network": {"name": "mlp", "hidden": [32]}}


def tiny(**options):
    return ppvae.SemiSupervisedVAE(**{**TINY, **options})


def test_the_per_example_elbo_sums_the_label_exactly_as_traceenum_elbo_does():
    """Unlabelled images: elbo_terms enumerates y like TraceEnum_ELBO; on the same draws the two agree, and the
    label's KL is KL(q(y | x) || uniform) from the classifier's probabilities."""
    model = tiny().eval()
    x = bars(12).x
    with seeded(1):
        terms = elbo_terms(model.model, model.guide, x, None, analytic_kl=False)
    with seeded(1):
        loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x, None)
    assert terms["elbo"].sum().item() == pytest.approx(-loss, rel=1e-5)
    q = model.label_posterior(x).probs
    label_kl = (q * (q.log() + math.log(3))).sum(-1)
    exact = elbo_terms(model.model, model.guide, x, None)  # analytic KL of z at each enumerated label
    assert torch.all(exact["kl"] >= label_kl - 1e-5)


def test_a_mixed_batch_is_its_labelled_and_unlabelled_bounds_with_the_classifier_term():
    """obs_mask with a masked, enumerated guide site: the loss of a batch of labelled and unlabelled images is
    the labelled bound where the label is known, the unlabelled one elsewhere, and alpha log q(y | x) on the
    labelled: the known labels are neither counted once per class nor summed over."""
    model = tiny(classifier_weight=5.0).eval()
    data = bars(6)
    known = torch.tensor([True, True, False, True, False, False])
    c = model.condition(None, torch.where(known, data.y, -1))
    elbo = TraceEnum_ELBO(
        max_plate_nesting=1, num_particles=4000, vectorize_particles=True, strict_enumeration_warning=False
    )

    def loss(rows, **arguments):
        return elbo.loss(model.model, model.guide, data.x[rows], c[rows], **arguments)

    with torch.no_grad():
        mixed = loss(slice(None), classifier_weight=5.0)
        parts = loss(known) + loss(~known)
        classifier = -5.0 * model.label_posterior(data.x[known]).log_prob(data.y[known]).sum().item()
    assert mixed == pytest.approx(parts + classifier, abs=1.0)


def test_log_px_sums_log_p_x_y_over_the_classes_and_matches_quadrature():
    """log p(x) = log sum_y p(x, y): importance sampling with the label summed out agrees with quadrature over
    z for each class, and is above log p(x, y) at every label."""
    model = tiny().fit(bars(60), epochs=3, progress=False)
    x = bars(6, seed=1).x
    exact = ppvae.log_evidence(model, x, method="quadrature", progress=False)
    sampled = ppvae.log_evidence(model, x, num_samples=3000, progress=False)
    assert torch.allclose(sampled, exact, atol=0.1)
    joint = torch.stack(
        [ppvae.log_evidence(model, x, method="quadrature", y=torch.full((6,), k), progress=False) for k in range(3)]
    )
    assert torch.allclose(torch.logsumexp(joint, 0), exact, atol=1e-6)
    assert torch.all(joint < exact[None])
    estimate = ppvae.log_evidence(model, x, method="ais", chains=8, steps=100, diagnostics=True, progress=False)
    assert torch.allclose(estimate.log_evidence, exact, atol=0.2)
    assert estimate.log_weights.shape == (8, 6) and torch.all(estimate.standard_error < 0.5)


def test_m2_learns_classes_from_a_few_labels_and_many_images(fashion):
    """40 labels among 3,000 Fashion-MNIST images: the classifier learns far above chance, and the images scored
    as images give an ELBO and log p(x) like any VAE's, with the accuracy beside them."""
    train, test = fashion
    model = ppvae.SemiSupervisedVAE(z_dim=10, num_classes=10).fit(
        train.subset(3000), labelled=40, epochs=3, test=test.subset(500), progress=False
    )
    assert len(model.history) == 3
    assert model.history[-1]["test_accuracy"] > 0.4
    assert model.score(test.subset(500)) == pytest.approx(model.history[-1]["test_accuracy"])
    scores = model.evaluate(test.subset(100), num_samples=10)
    assert scores["log_px"] > scores["elbo"] and 0.3 < scores["accuracy"] <= 1
    proba = model.predict_proba(test.subset(5))
    assert proba.shape == (5, 10) and torch.allclose(proba.sum(-1), torch.ones(5))
    assert torch.equal(model.predict(test.subset(5)), proba.argmax(-1))
    samples = model.class_samples(2)
    assert samples.shape == (10, 2, 1, 28, 28)


def test_labelled_keeps_a_balanced_seeded_share_and_the_run_records_it(tmp_path):
    data = bars(60)
    model = tiny().fit(data, labelled=9, epochs=2, out=tmp_path / "run", progress=False)
    assert model.fit_record.options["labelled"] == 9
    again = tiny().fit(data, labelled=9, epochs=1, out=tmp_path / "again", progress=False)
    again.fit(data, labelled=9, epochs=2, out=tmp_path / "again", resume=True, progress=False)
    assert_same_weights(weights_of(model), weights_of(again))
    kept = ppvae.estimator.labels.keep_labels(data, 9, 3, seed=0)
    assert torch.equal(torch.bincount(kept.y[kept.y >= 0]), torch.tensor([3, 3, 3]))
    assert torch.equal(kept.y[kept.y >= 0], data.y[kept.y >= 0])
    other = ppvae.estimator.labels.keep_labels(data, 9, 3, seed=1)
    assert not torch.equal(kept.y, other.y)
    resumed = tiny()
    with pytest.raises(ValueError, match="labelled=9, and this call asks for labelled=12"):
        resumed.fit(data, labelled=12, epochs=3, out=tmp_path / "run", resume=True, progress=False)
    mask = torch.zeros(60, dtype=torch.bool)
    mask[:5] = True
    assert tiny().fit(data, labelled=mask, epochs=1, progress=False).fit_record.options["labelled"] == (
        "5 chosen images"
    )


def test_labelled_share_repeats_the_labelled_images_to_that_share_of_every_epoch(tmp_path):
    data = ppvae.estimator.labels.keep_labels(bars(300), 6, 3, seed=0)  # 6 labelled, 294 not
    repeated = ppvae.estimator.labels.repeat_labelled(data, 0.25)
    known = repeated.y >= 0
    assert int((~known).sum()) == 294 and int(known.sum()) == 6 * 16  # 96 / 390: about a quarter
    assert torch.equal(repeated.x[:300], data.x) and torch.equal(repeated.y[:300], data.y)
    assert torch.equal(repeated.x[300:306], data.x[data.y >= 0]) and torch.equal(
        repeated.y[300:306], data.y[data.y >= 0]
    )
    assert ppvae.estimator.labels.repeat_labelled(data, None) is data
    assert ppvae.estimator.labels.repeat_labelled(data, 0.01) is data  # 2% labelled already
    model = tiny().fit(
        bars(300), labelled=6, labelled_share=0.25, batch_size=30, epochs=1, out=tmp_path / "run", progress=False
    )
    assert model.fit_record.options["labelled_share"] == 0.25
    straight = tiny().fit(bars(300), labelled=6, labelled_share=0.25, batch_size=30, epochs=2, progress=False)
    model.fit(
        bars(300),
        labelled=6,
        labelled_share=0.25,
        batch_size=30,
        epochs=2,
        out=tmp_path / "run",
        resume=True,
        progress=False,
    )
    assert_same_weights(weights_of(model), weights_of(straight))
    with pytest.raises(ValueError, match="labelled_share=0.25, and this call asks for labelled_share=0.5"):
        tiny().fit(
            bars(300), labelled=6, labelled_share=0.5, epochs=3, out=tmp_path / "run", resume=True, progress=False
        )


def test_m2_repeats_its_labelled_images_to_half_of_each_epoch_and_weighs_z_by_3_unless_told(tmp_path):
    """The defaults measured in docs/results.md: beta 3 and labelled_share "auto" (0.5 for a latent label); 0 shows
    each image once; a VAE has nothing to repeat; a run resumed without the option keeps its own."""
    assert tiny().beta == 3.0
    auto = tiny().fit(bars(300), labelled=6, batch_size=30, epochs=1, out=tmp_path / "run", progress=False)
    once = tiny().fit(bars(300), labelled=6, labelled_share=0, batch_size=30, epochs=1, progress=False)
    assert auto.fit_record.options["labelled_share"] == 0.5 and once.fit_record.options["labelled_share"] is None
    assert auto.history[0]["seconds"] > 0 and len(auto.fit_record.training_state) > 0
    steps = auto.fit_record.training_state["global_step"], once.fit_record.training_state["global_step"]
    assert steps == (20, 10)  # 294 hidden + 6 labelled repeated 49 times = 588 images, against 300
    vae = ppvae.VAE(x_shape=(1, 8, 8), z_dim=2).fit(bars(30).x, epochs=1, progress=False)
    assert vae.fit_record.options["labelled_share"] is None
    resumed = tiny().fit(bars(300), labelled=6, epochs=2, out=tmp_path / "run", resume=True, progress=False)
    assert resumed.fit_record.options["labelled_share"] == 0.5


def test_the_enumeration_can_be_turned_off_and_the_classifier_term_left_out():
    data = bars(30)
    sampled = tiny(enumerate_labels=False).fit(data, labelled=6, epochs=1, progress=False)
    assert math.isfinite(sampled.history[-1]["train_loss"])
    pure = tiny(classifier_weight=0, beta=1).fit(data.x, epochs=1, progress=False)  # no label at all: a mixture
    assert "train_elbo" in pure.history[-1]  # with no classifier term (and beta 1) the loss is the ELBO
    assert "train_elbo" not in sampled.history[-1]


def test_the_classifier_takes_its_own_network_and_a_run_keeps_it(tmp_path):
    """q(y | x) on a conv network beside MLP encoder and decoder: it trains, its run folder rebuilds it with the same
    weights, the CLI flag sets it; a run of format 3, before the option, rebuilds its classifier from the model's
    network."""
    from ppvae.cli import main

    model = tiny(classifier_network="conv").fit(bars(60), labelled=9, epochs=2, out=tmp_path / "run", progress=False)
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.classifier.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.networks.modules())
    assert "classifier_network=conv" in repr(model) and "classifier_network" not in repr(tiny())
    loaded = ppvae.load(tmp_path / "run")
    assert loaded.classifier_network == {"name": "conv"}
    assert_same_weights(weights_of(loaded), weights_of(model))
    old = tiny().fit(bars(60), labelled=9, epochs=1, out=tmp_path / "old", progress=False)
    spec_file = tmp_path / "old" / "spec.json"
    spec = json.loads(spec_file.read_text())
    assert spec["config"].pop("classifier_network") == TINY["network"]
    spec_file.write_text(json.dumps({**spec, "format": 3}))
    assert_same_weights(weights_of(ppvae.load(tmp_path / "old")), weights_of(old))
    assert tiny().classifier_network == TINY["network"]
    args = ["train", "--model", "m2", "--labels", "20", "--z-dim", "2", "--limit", "200", "--test-limit", "20"]
    assert (
        main([*args, "--classifier-network", "linear", "--epochs", "1", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    )
    assert ppvae.load(tmp_path / "cli").classifier_network == {"name": "linear"}
    pyro.clear_param_store()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, d: m.fit(d, labelled=10, epochs=1, progress=False), "cannot be split evenly among 3 classes"),
        (lambda m, d: m.fit(d, labelled=90, epochs=1, progress=False), "takes 30 images of each class"),
        (lambda m, d: m.fit(d.x, epochs=1, progress=False), "no training image has a label"),
        (lambda m, d: m.fit(d, y=d.y + 3, epochs=1, progress=False), r"labels must lie in 0..2 or -1"),
        (lambda m, d: m.fit(d, labelled=[0, 99], epochs=1, progress=False), r"indices must lie in 0..59"),
        (lambda m, d: m.fit(d, elbo="iwae", epochs=1, progress=False), "enumerates it"),
        (lambda m, d: m.log_evidence(d, y=torch.tensor([0, -1] * 30)), "give every image's label"),
        (lambda m, d: ppvae.VAE(x_shape=(1, 8, 8)).fit(d, labelled=9, progress=False), "reads every label|takes none"),
        (lambda m, d: tiny(classifier_weight=-1), "classifier_weight must be"),
        (
            lambda m, d: m.fit(d, labelled=9, labelled_share=1.5, progress=False),
            r"labelled_share is the share .* in \[0, 1\) \(0: each image once\), or 'auto' \(0.5 for M2\)",
        ),
        (lambda m, d: ppvae.CVAE(x_shape=(1, 8, 8), num_classes=3).fit(d, labelled_share=0.1), "M2, --model m2"),
    ],
)
def test_bad_input_gets_one_clear_line(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny(), bars(60))


def test_the_cli_trains_m2_with_a_label_count_and_evaluate_reports_accuracy(tmp_path, capsys, fashion):
    from ppvae.cli import main

    out = tmp_path / "m2"
    args = ["train", "--model", "m2", "--labels", "20", "--z-dim", "4", "--limit", "600", "--test-limit", "100"]
    assert main([*args, "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert ppvae.load(out).fit_record.options["labelled"] == 20
    assert main([*args, "--epochs", "2", "--out", str(out), "--resume", "--quiet"]) == 0
    assert len(ppvae.load(out).history) == 2
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "5", "--quiet"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["train", "--labels", "20", "--limit", "100", "--epochs", "1", "--out", str(tmp_path / "v")]) == 2
    assert "labelled=" in capsys.readouterr().err
    spec = tmp_path / "m2.toml"  # a spec file carries the model, its alpha and the label count
    spec.write_text(
        '[model]\nname = "m2"\nz_dim = 4\nclassifier_weight = 10.0\n[fit]\nlabelled = 30\nepochs = 1\n'
        "[data]\nlimit = 300\ntest_limit = 50\n"
    )
    assert main(["train", "--spec", str(spec), "--out", str(tmp_path / "spec"), "--quiet"]) == 0
    from_spec = ppvae.load(tmp_path / "spec")
    assert from_spec.classifier_weight == 10.0 and from_spec.fit_record.options["labelled"] == 30
    pyro.clear_param_store()
