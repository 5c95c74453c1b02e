"""Run specs: a model, its fit and its data described by data, from a TOML file and command-line flags.

    [model]                          # ppvae train --spec model.toml
    name = "VAE"                     # or "FactorAnalysis"
    z_dim = 20
    prior = "laplace"
    guide = "student_t"
    network = "conv"
    beta = 4.0
    [model.likelihood]
    name = "normal"
    scale = "learned"
    [fit]
    epochs = 5
    elbo = "meanfield"
    [data]
    dataset = "fashion-mnist"

Flags override the file: ``--prior mixture --prior-components 10`` sets the prior
to ``{"name": "mixture", "components": 10}``; every ``--<part>-<option> VALUE`` is
checked against the part's registered options.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ppvae.estimator import LatentVariableModel, model_names
from ppvae.estimator.memory import check_model_size
from ppvae.models import MODELS
from ppvae.parts import REGISTRIES, did_you_mean, normalize_spec

SECTIONS = ("model", "fit", "data")


def read_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    """A spec file's ``[model]``, ``[fit]`` and ``[data]`` tables; anything else is an error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"spec file {path} does not exist")
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(spec) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown tables {unknown}; a spec has [model], [fit] and [data]")
    not_tables = [section for section in SECTIONS if not isinstance(spec.get(section, {}), dict)]
    if not_tables:
        raise ValueError(
            f"{path}: {not_tables[0]} = ... is a key; a spec's {not_tables[0]} is a table, [{not_tables[0]}]"
        )
    data = spec.get("data", {})
    for key in ("dataset", "data", "root"):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"{path}: [data] {key} is a name or a path in quotes, got {data[key]!r}")
    return {section: dict(spec.get(section, {})) for section in SECTIONS}


def _value(text: str) -> Any:
    """A flag's value as JSON where it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def part_flags(model: dict[str, Any], extra: Sequence[str]) -> dict[str, Any]:
    """Apply ``--<part>-<option> VALUE...`` flags (those argparse did not know) to a model spec."""
    model = dict(model)
    i = 0
    while i < len(extra):
        flag = extra[i]
        kind, _, option = flag[2:].partition("-") if flag.startswith("--") else ("", "", "")
        if kind not in REGISTRIES or not option:
            raise ValueError(
                f"unrecognised argument {flag!r}; part options are --<part>-<option> with part one of "
                f"{', '.join(REGISTRIES)}"
            )
        values = []
        i += 1
        while i < len(extra) and not extra[i].startswith("--"):
            values.append(_value(extra[i]))
            i += 1
        if not values:
            raise ValueError(f"{flag} needs a value")
        spec = normalize_spec(model[kind] if kind in model else _default_part(model_class(model), kind), kind)
        option = option.replace("-", "_")
        allowed = REGISTRIES[kind].options(spec["name"]) if spec["name"] in REGISTRIES[kind] else {}
        if option not in allowed:
            listed = ", ".join(_part_flag(kind, k) for k in allowed) or "none"
            hint = did_you_mean(option, allowed, show=functools.partial(_part_flag, kind))
            raise ValueError(f"{kind} {spec['name']!r} has no option {option!r}{hint}; its options: {listed}")
        spec[option] = values[0] if len(values) == 1 else values
        model[kind] = spec
    return model


def _part_flag(kind: str, option: str) -> str:
    """The command-line flag of a part's option: ``--prior-components``."""
    return f"--{kind}-{option.replace('_', '-')}"


def model_class(model_spec: dict[str, Any]) -> type[LatentVariableModel]:
    """The class a ``[model]`` table names (by any of its names; VAE by default), or an error listing them."""
    name = model_spec.get("name", "VAE")
    names = model_names()
    if name not in names:
        hint = did_you_mean(name, names)
        raise ValueError(f"unknown model {name!r}{hint}; available: {', '.join(sorted(set(names.values())))}")
    return MODELS[names[name]]


def _default_part(cls: type[LatentVariableModel], kind: str) -> Any:
    """The model's own default for a part, read off its signature so that there is one source of truth."""
    parameter = inspect.signature(cls).parameters.get(kind)
    if parameter is None:
        raise ValueError(f"{cls.__name__} takes no {kind}, so it has no --{kind}-... options")
    return parameter.default


def build_model(model_spec: dict[str, Any], x_shape: Sequence[int], data: Any = None) -> LatentVariableModel:
    """The model a ``[model]`` table describes, for images of ``x_shape``; a conditional model takes its
    number of classes and their names from ``data`` unless the table gives them."""
    cls = model_class(model_spec)
    spec = {k: v for k, v in model_spec.items() if k != "name"}
    if cls.capabilities.condition == "labels" and "num_classes" not in spec:
        if getattr(data, "y", None) is None:
            raise ValueError(f"{cls.__name__} learns from labels, and this data has none")
        spec.update(num_classes=data.num_classes, classes=getattr(data, "classes", None))
    takes = [name for name in inspect.signature(cls).parameters if name != "x_shape"]
    unknown = sorted(set(spec) - set(takes))
    if unknown:
        hint = did_you_mean(unknown[0], takes) if len(unknown) == 1 else ""
        raise ValueError(
            f"{cls.__name__} has no option {', '.join(map(repr, unknown))}{hint}; its options: {', '.join(takes)}"
        )
    check_model_size(cls, {"x_shape": tuple(x_shape), **spec}, "[model]")
    try:
        return cls(x_shape=tuple(x_shape), **spec)
    except TypeError as error:
        raise ValueError(f"bad [model] spec for {cls.__name__}: {error}") from None


def _comparable(key: str, value: Any) -> Any:
    """A config value as JSON holds it, a part with every option its default does not give filled in."""
    if key in REGISTRIES and value is not None:
        part = normalize_spec(value, key)
        value = {"name": part["name"], **REGISTRIES[key].options(part["name"]), **part}
    return json.loads(json.dumps(value, default=list))


def spec_differences(
    model_spec: dict[str, Any], model: LatentVariableModel, run: LatentVariableModel
) -> dict[str, tuple[Any, Any]]:
    """key -> (``model``'s value, ``run``'s value) for each key of a ``[model]`` table where the model it
    built differs from a run's model: what a resumed run must not change."""
    if type(model) is not type(run):
        return {"name": (type(model).__name__, type(run).__name__)}
    ours, theirs = model.config(), run.config()
    differ = {}
    for key in model_spec:
        if key != "name" and _comparable(key, ours.get(key)) != _comparable(key, theirs.get(key)):
            differ[key] = (ours.get(key), theirs.get(key))
    return differ
