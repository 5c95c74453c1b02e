"""The one contract every model keeps, parametrised over the library's models and read through their capabilities:
no test here branches on a class name, and no machinery below the models names one."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, small_data, weights_of

import ppvae

LIBRARY_MODELS = {name: cls for name, cls in ppvae.MODELS.items() if cls.__module__.startswith("ppvae.")}
PACKAGE = Path(ppvae.__file__).parent


def data_for(model, n=200):
    """Images the model's likelihood can score (binary, or dequantised grey levels), with labels."""
    x = small_data(n)
    if not model.capabilities.binary:  # a density: continuous pixels
        x = ppvae.data.dequantize(torch.round(x * 128 + 64) / 255)
    return ppvae.data.ImageDataset(x, torch.arange(n) % 10, "images", "train")


def build(cls, layers=1):
    """The model on 8x8 images with a 2-D latent layer, or a hierarchy of ``layers`` such layers."""
    return cls(x_shape=(1, 8, 8), **({"z_dim": 2 if layers == 1 else [2] * layers} if cls.capabilities.latent else {}))


# every model, and every latent-variable model again as a hierarchy of two stochastic layers
VARIANTS = [(name, 1) for name in sorted(LIBRARY_MODELS)] + [
    (name, 2) for name in sorted(LIBRARY_MODELS) if LIBRARY_MODELS[name].capabilities.latent
]


@pytest.mark.parametrize(("name", "layers"), VARIANTS)
def test_every_model_keeps_the_contract(name, layers, tmp_path):
    """Fit into a run folder, load, resume exactly, sample, evaluate and estimate log p(x); a model that has
    one latent layer by its nature refuses a hierarchy in one line that says so."""
    cls = LIBRARY_MODELS[name]
    try:
        model = build(cls, layers)
    except ValueError as refusal:
        assert layers > 1 and "one latent layer" in str(refusal)
        return
    assert len(model.latent_sizes) == (layers if cls.capabilities.latent else 0)
    data = data_for(model)
    assert model.fit(data, out=tmp_path / "run", test=data.subset(40), progress=False) is model  # fit returns it
    history = model.history
    assert [r["epoch"] for r in history] == list(range(1, len(history) + 1)) and model.fit_record.folder is not None
    assert any(k.startswith("test_") for k in history[-1])

    def output(m):  # what the model gives for an input: its codes, or its ELBO where it has no latent
        return m.encode(data.subset(5)) if m.capabilities.latent else m.elbo_terms(data.subset(5))["elbo"]

    loaded = ppvae.load(tmp_path / "run")
    assert type(loaded) is cls and torch.equal(output(loaded), output(model))
    assert loaded.capabilities == model.capabilities and loaded.fit_record.options == model.fit_record.options
    again = build(cls, layers)
    again.fit(data, out=tmp_path / "run", resume=True, progress=False)
    assert_same_weights(weights_of(model), weights_of(again))
    labels = {"y": 1} if model.capabilities.condition == "labels" else {}
    if model.capabilities.samples_from_prior:
        assert model.sample(3, **labels).shape == (3, 1, 8, 8)
    else:
        with pytest.raises(ValueError):
            model.sample(3)
    if not model.capabilities.density:  # no p(x) to estimate: refused in one line, its own score kept
        with pytest.raises(ValueError, match="has no tractable p\\(x\\)"):
            ppvae.log_evidence(model, data.subset(7), num_samples=5, progress=False)
        assert {"n", "elbo", "reconstruction"} <= set(model.evaluate(data.subset(20)))
        return
    scores = model.evaluate(data.subset(20), num_samples=5)
    assert {"n", "elbo", "elbo_se", "reconstruction", "kl", "log_px", "gap", "bits_per_dim"} <= set(scores)
    assert scores["method"] == "is" and scores["num_samples"] == 5
    assert ppvae.log_evidence(model, data.subset(7), num_samples=5, progress=False).shape == (7,)
    if model.capabilities.exact_evidence:
        assert ppvae.log_evidence(model, data.subset(7), progress=False).shape == (7,)  # the closed form by default


@pytest.mark.parametrize("name", sorted(LIBRARY_MODELS))
def test_the_condition_hook_is_the_one_way_to_c(name):
    """Labels go in as y, a ready condition as c, and the two agree: evaluate(x, y) == evaluate(x, c=hook(x, y))."""
    model = build(LIBRARY_MODELS[name])
    data = data_for(model, 30)
    x = model.prepare(data)
    labels = data.y if model.capabilities.condition == "labels" else None
    c = model.condition(x, labels)
    assert (c is None) == (model.capabilities.condition == "none")
    latent_labels = model.capabilities.latent_labels  # scored as images unless y= gives the labels
    by_labels = model.elbo_terms(data, y=labels if latent_labels else None)["elbo"]
    assert torch.equal(model.elbo_terms(x, c=c, binarize=None)["elbo"], by_labels)
    if latent_labels:  # a labelled dataset is scored as images, as a tensor of its images is
        assert torch.equal(model.elbo_terms(data)["elbo"], model.elbo_terms(data.x)["elbo"])
        assert not torch.equal(model.elbo_terms(data)["elbo"], by_labels)
    elif model.capabilities.condition == "labels":
        with pytest.raises(ValueError, match="pass labels y"):
            model.elbo_terms(data.x)
        with pytest.raises(ValueError, match="as c="):
            model.elbo_terms(data.x, y=torch.rand(30))


def test_capabilities_are_frozen_and_set_once_per_class():
    for cls in LIBRARY_MODELS.values():
        assert isinstance(cls.capabilities, ppvae.Capabilities)
        model = build(cls)
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.capabilities.latent = False
        fields = ("latent", "samples_from_prior", "exact_evidence", "condition")
        assert all(getattr(model.capabilities, f) == getattr(cls.capabilities, f) for f in fields)
    assert not ppvae.VAE(**{"x_shape": (1, 8, 8), "guide": "delta"}).capabilities.proposal  # a part refines it
    assert not ppvae.VAE(x_shape=(1, 8, 8), likelihood="normal").capabilities.binary
    with pytest.raises(ValueError, match="condition must be one of"):
        ppvae.Capabilities(condition="pixels")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


LAYERS = ["data", "parts", "infer", "estimator", "models"]
"""The floors from the bottom; a module imports only from its own floor and those below (and ``viz``, a leaf)."""


def test_imports_point_down_the_floors_and_none_hides_behind_type_checking():
    for floor_index, floor in enumerate(LAYERS):
        above = {f"ppvae.{f}" for f in LAYERS[floor_index + 1 :]} | {"ppvae.cli", "ppvae.compare", "ppvae.latent"}
        for path in (PACKAGE / floor).glob("*.py"):
            upward = [m for m in _imports(path) if any(m == a or m.startswith(a + ".") for a in above)]
            assert not upward, f"{path.relative_to(PACKAGE)} imports from a floor above it: {upward}"
            assert "TYPE_CHECKING" not in path.read_text(), f"{path.relative_to(PACKAGE)} hides an import"


def test_the_machinery_names_no_model_class():
    names = [cls.__name__ for cls in LIBRARY_MODELS.values()]
    for path in (PACKAGE / "estimator").glob("*.py"):
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith(("#", '"', "``"))
        )
        named = [name for name in names if f"{name}(" in code or f"{name}." in code or f" {name}," in code]
        assert not named, f"estimator/{path.name} names {named}"
