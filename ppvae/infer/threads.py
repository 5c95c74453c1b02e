"""Pyro programs run one at a time in a process.

Pyro's effect handlers (``poutine``) and its validation flag are global to the process: a program
run in one thread while another thread's program runs records into the other's trace, and both
fail. Every entry point that runs Pyro programs (a training step, scoring, evidence) holds this
re-entrant lock, so threads take turns: a model can be evaluated in one thread while another
trains, its calls slotted between training steps, and each gets the numbers it would get alone.
A training also keeps its own place in torch's random stream (`ppvae.infer.random.OwnStream`), and a model
is built under the lock, so a model built, loaded or sampled without a seed in another thread leaves the
training's noise as it is; two trainings in two threads take turns step by step, each with its own stream.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

PYRO_LOCK = threading.RLock()
"""Held while a Pyro program runs; re-entrant, so a call that scores inside a training step may take it again."""


def serialised(function: F) -> F:
    """``function`` run under `PYRO_LOCK`."""

    @functools.wraps(function)
    def locked(*args, **kwargs):
        with PYRO_LOCK:
            return function(*args, **kwargs)

    return locked  # type: ignore[return-value]
