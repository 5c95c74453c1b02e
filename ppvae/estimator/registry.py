"""The one table of model classes, filled as each class is defined: a run folder names its class, and the CLI's
names for a model (``vae``, ``factor-analysis``, ``fa``) are derived from it."""

from __future__ import annotations

import re

MODEL_CLASSES: dict[str, type] = {}


def register_model(cls: type) -> type:
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def model_class(name: object, where: str = "the spec") -> type:
    """The class a spec names, or an error that lists the known ones."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"{where} names model {name!r}; known: {', '.join(MODEL_CLASSES)}")
    return MODEL_CLASSES[name]


def kebab_case(name: str) -> str:
    """``FactorAnalysis`` -> ``factor-analysis``, ``CompletionVAE`` -> ``completion-vae``, ``CVAE`` -> ``cvae``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name).lower()


def model_names() -> dict[str, str]:
    """Every name a person may give a model, to its class name: the class name, its kebab case, and the
    short ``aliases`` a class declares (``fa``)."""
    names: dict[str, str] = {}
    for class_name, cls in MODEL_CLASSES.items():
        for name in (class_name, kebab_case(class_name), *getattr(cls, "aliases", ())):
            names[name] = class_name
    return names
