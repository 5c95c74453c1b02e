"""The training objectives by name: Pyro ELBO objects."""

from __future__ import annotations

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

OBJECTIVES = ("trace", "meanfield")


def make_elbo(name: str = "trace", num_particles: int = 1, max_plate_nesting: int = 1) -> ELBO:
    """``"trace"``: Trace_ELBO (Monte-Carlo KL); ``"meanfield"``: TraceMeanField_ELBO (analytic KL where one exists).

    With ``num_particles > 1`` the particles are vectorised, not looped.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    kwargs = dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    if name == "trace":
        return Trace_ELBO(**kwargs)
    if name == "meanfield":
        return TraceMeanField_ELBO(**kwargs)
    raise ValueError(f"unknown elbo {name!r}; choose one of {', '.join(OBJECTIVES)}")
