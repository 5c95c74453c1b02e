"""Which training step a fit takes: the Pyro programs, or the model's ELBO lowered to plain torch.

``compile="auto"`` (fit's default) lowers the step where the model has a lowered ELBO for the
objective (``model.lowered_elbo``: the VAE family, for ``elbo="trace"`` and ``"meanfield"`` with one
particle) and it gives the programs' loss and gradients on the first batch; ``True`` also compiles it
with ``torch.compile`` (a one-off cost of 15-25 s for the default VAE on 2 CPU cores, 2-5 s once
inductor's cache holds the graph; for the default VAE on a CPU its epochs are then no faster than the
lowered step's, both about 1.02 of a hand-written loop's: "auto" does not compile, as that cost would
fall on every short fit);
``False`` keeps the programs. A lowered step draws the programs' noise, so a seed fixes a run either
way; the two differ only by float rounding. Where a lowering that could have been taken is not, one
line says why, and the programs train.

On a GPU a lowered step is also captured in a CUDA graph (`ppvae.infer.graphed`) unless ``compile=False``:
where the training cannot be captured (several processes, clipping, another precision) one line says so.
"""

from __future__ import annotations

from typing import Any

import torch

from ppvae.infer.graphed import graph_refusal
from ppvae.infer.lowered import LoweredELBO, check_lowered, replaced_programs

COMPILE = ("auto", True, False)
STEPS = ("pyro", "lowered", "compiled")


def check_compile(value: Any) -> None:
    if value not in COMPILE or (value != "auto" and not isinstance(value, bool)):
        raise ValueError(f"compile must be 'auto', True or False, got {value!r}")


def choose_step(
    model: Any, objective: Any, options: dict[str, Any], x: Any, c: Any, arguments: dict[str, Any]
) -> tuple[Any, str, str | None]:
    """(the objective to train with, its step: one of ``STEPS``, why a lowering was not taken or None).

    The reason is None where nothing was asked that could not be done: ``compile=False``, or under
    "auto" a model or objective that has no lowered form (M2's enumerated label, IWAE, factor analysis).
    """
    wanted = options["compile"]
    if wanted is False:
        return objective, "pyro", None
    asked = wanted is True
    name = type(model).__name__
    if getattr(model, "lowered_elbo", None) is None:
        return objective, "pyro", f"{name} has no lowered ELBO: its Pyro programs are its step" if asked else None
    if options["elbo"] not in ("trace", "meanfield") or options["num_particles"] != 1:
        why = f"elbo={options['elbo']!r} with num_particles={options['num_particles']} has no lowered form"
        return objective, "pyro", f"{why} (elbo='trace' or 'meanfield' with one particle has)" if asked else None
    replaced = replaced_programs(model)
    if replaced:
        return objective, "pyro", f"{name} has its own {' and '.join(replaced)}, which its lowered ELBO does not know"
    lowered = LoweredELBO(model.lowered_elbo, analytic_kl=options["elbo"] == "meanfield", compiled=asked)
    disagreement = check_lowered(lowered, objective, model, model.model, model.guide, x, c, **arguments)
    if disagreement is not None:
        return objective, "pyro", f"the lowered ELBO of {name} was checked on the first batch and {disagreement}"
    return lowered, "compiled" if asked else "lowered", None


def choose_graph(options: dict[str, Any], accelerator: str, step: str) -> tuple[bool, str | None]:
    """(whether the loop captures its step in a CUDA graph, why not where the training is on a GPU and asked for
    a lowered step). Only a lowered step is captured: the Pyro programs' messengers decide on the host."""
    if accelerator != "cuda" or options["compile"] is False or step == "pyro":
        return False, None
    why = graph_refusal(torch.device("cuda"), options["devices"], options["clip_norm"], options["precision"])
    return why is None, why
