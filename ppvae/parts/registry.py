"""Name -> part registries, so that a model is fully described by data.

A part is named by a string (``"laplace"``) or a small dict with options
(``{"name": "normal", "scale": "learned"}``). Unknown names and options are
rejected with a message that lists what exists.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

PartSpec = str | Mapping[str, Any]


def positive(name: str, value: float, integer: bool = False) -> float | int:
    """A part's option checked once, with a message that names it: ``positive("df", 0)`` raises."""
    number = int(value) if integer else float(value)
    if not number > 0 or (integer and number != value):
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value}")
    return number


def did_you_mean(word: str, choices: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """`` (did you mean 'laplace'?)`` for a near miss among ``choices`` (written by ``show``), else nothing: the
    tail of a message that refuses an unknown name."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.75)
    return f" (did you mean {show(close[0])}?)" if close else ""


def normalize_spec(spec: PartSpec, kind: str) -> dict[str, Any]:
    """``"x"`` -> ``{"name": "x"}``; a dict is copied and must carry a ``"name"``."""
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"a {kind} given as a dict needs a 'name' key, got {dict(spec)}")
        return dict(spec)
    raise TypeError(f"a {kind} is a name or a dict with a 'name' key, got {type(spec).__name__}")


class Registry:
    """Parts of one kind (priors, likelihoods, ...), each built from a spec plus the model's context.

    The context (``z_dim``, ``x_shape``, ...) comes from the model; the user's
    options are the remaining keyword arguments of the part's constructor.
    """

    def __init__(self, kind: str, context: tuple[str, ...]):
        self.kind = kind
        self.context = context
        self._parts: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            if name in self._parts:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._parts[name] = cls
            cls.registry_name = name
            return cls

        return decorator

    def names(self) -> list[str]:
        return list(self._parts)

    def __contains__(self, name: str) -> bool:
        return name in self._parts

    def options(self, name: str) -> dict[str, Any]:
        """The user-settable options of part ``name`` and their defaults."""
        parameters = list(inspect.signature(self._parts[name].__init__).parameters.values())[1:]
        settable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in parameters
            if p.kind in settable and p.name not in self.context
        }

    def describe(self) -> list[tuple[str, dict[str, Any], str]]:
        """(name, options, one-line description) for every part, for ``ppvae parts``."""
        rows = []
        for name, cls in self._parts.items():
            doc = (inspect.getdoc(cls) or "").split("\n")[0]
            rows.append((name, self.options(name), doc))
        return rows

    def build(self, spec: PartSpec, **context: Any):
        options = normalize_spec(spec, self.kind)
        name = options.pop("name")
        if name not in self._parts:
            hint = did_you_mean(name, self._parts)
            raise ValueError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self._parts)}")
        allowed = self.options(name)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            listed = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
            hint = did_you_mean(unknown[0], allowed) if len(unknown) == 1 else ""
            raise ValueError(
                f"{self.kind} {name!r} has no option {', '.join(map(repr, unknown))}{hint}; its options: {listed}"
            )
        accepted = inspect.signature(self._parts[name].__init__).parameters
        context = {k: v for k, v in context.items() if k in accepted}  # each part takes the context it needs
        try:
            return self._parts[name](**context, **options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"bad options for {self.kind} {name!r}: {error}") from error
