"""The model classes by name, filled as each class is defined, so that a run folder can name its class."""

from __future__ import annotations

MODEL_CLASSES: dict[str, type] = {}


def register_model(cls: type) -> type:
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def model_class(name: object, where: str = "the spec") -> type:
    """The class a spec names, or an error that lists the known ones."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"{where} names model {name!r}; known: {', '.join(MODEL_CLASSES)}")
    return MODEL_CLASSES[name]
