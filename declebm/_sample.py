"""``sample``: draw from a model with any sampler."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_examples, check_key, check_positive, float_dtype_of, strong_dtypes
from ._devices import check_divides, make_mesh, place, replicate_model, split
from ._diagnostics import ChainDiagnostics, chain_diagnostics, check_trace_every, run_with_trace
from ._ebm import EBM, check_energy
from ._programs import make_room_for_programs
from ._sampler import AbstractSampler, SamplerInfo


def initial_positions(model: EBM, num_samples: int, key: PRNGKeyArray) -> Float[Array, "n *event"]:
    """Default chain start: draws from the model's base density when it can sample,
    else a standard normal of the model's event shape; in the model's parameter dtype."""
    if model.event_shape is None:
        raise ValueError(
            "model: its event_shape is unknown, so there is no default start; pass init= "
            "or declare the shape (EBM(energy, event_shape=...) or an energy with event_shape)"
        )
    dtype = float_dtype_of(model.energy_module)
    base = model.base
    if base is not None and hasattr(base, "sample"):
        x = base.sample(key, (num_samples,))
        return jnp.reshape(x, (num_samples,) + tuple(model.event_shape)).astype(dtype)
    return jax.random.normal(key, (num_samples,) + tuple(model.event_shape), dtype)


def fit_noise(data: Float[Array, "n *event"], kind: str = "gaussian") -> tuple[Array, Array]:
    """A per-coordinate start distribution fitted to ``data``: ``(loc, scale)`` with
    ``"gaussian"`` = (mean, std) and ``"uniform"`` = (centre, half-width) of the
    bounding box. Draw from it with ``draw_noise``.

    Eager on purpose, like ``draw_noise``: compiled, the reductions round differently
    (1e-7), and training from chains started there is chaotic enough that those last bits
    moved ``examples/toy2d.py``'s test NLL from 2.893 to 2.942 (seed 0) and 2.885 to 2.955
    (seed 1), so jitting them would silently change every documented result."""
    if kind == "gaussian":
        return jnp.mean(data, 0), jnp.std(data, 0) + 1e-6
    lo, hi = jnp.min(data, 0), jnp.max(data, 0)
    return 0.5 * (lo + hi), 0.5 * (hi - lo) + 1e-6


def draw_noise(loc: Array, scale: Array, kind: str, n: int, key: PRNGKeyArray) -> Float[Array, "n *event"]:
    """``n`` draws of ``loc + scale * z``, ``z ~ N(0, I)`` or ``U(-1, 1)``, in ``loc``'s dtype
    (float64 chains stay float64, float32 stay float32 whatever JAX's default)."""
    shape = (n,) + loc.shape
    if kind == "gaussian":
        z = jax.random.normal(key, shape, loc.dtype)
    else:
        z = jax.random.uniform(key, shape, loc.dtype, minval=-1.0, maxval=1.0)
    return (loc + scale * z).astype(loc.dtype)


@eqx.filter_jit
def _run(sampler, model, x, num_steps, key, kwargs):
    return sampler.run(model, x, num_steps, key, **kwargs)


@eqx.filter_jit
def _tune(sampler, model, x, key, kwargs):
    return sampler.tuned(model, x, key, **kwargs)


def sample(
    model: EBM,
    sampler: AbstractSampler,
    *,
    num_steps: int,
    key: PRNGKeyArray,
    num_samples: int | None = None,
    init: Any = None,
    return_info: bool = False,
    devices: Any = None,
    return_diagnostics: bool = False,
    trace_every: int | None = None,
    **kwargs,
) -> Float[Array, "n *event"] | tuple[Float[Array, "n *event"], SamplerInfo | ChainDiagnostics]:
    """Run ``num_samples`` independent chains of ``sampler`` for ``num_steps`` steps on
    ``model`` and return their final positions.

    Chains start at ``init`` (shape ``(n, *event_shape)``) or, when it is omitted, at
    draws from the model's base density (a standard normal if it has none). Extra
    keyword arguments go to the energy (e.g. a noise level). With ``return_info=True``
    also returns the per-step ``SamplerInfo`` averaged over chains.

    The chains keep ``init``'s floating dtype (default start: the model's parameter
    dtype). The model's weakly typed parameters are made strong first
    (``strong_dtypes``), and the sampler's numeric hyperparameters are traced, so
    sampling again with another step size or another model of the same structure
    reuses the compiled program.

    ``devices`` (a list of devices or a one-axis ``Mesh`` named ``"data"``) splits the
    chains over several devices, as ``fit`` does; the number of chains must be a multiple
    of the number of devices, and the result does not depend on it.

    With ``return_diagnostics=True`` returns ``(x, ChainDiagnostics)`` instead: the
    positions every ``trace_every`` steps (default: about 1000 draws per chain), the
    per-step acceptance, and the bulk ESS and rank-normalised split R-hat of every
    coordinate across the chains (BlackJAX's estimators) on the second half of the
    trace. ``x`` is the same as without it (same keys). Use several chains from
    dispersed starts for R-hat to mean something.

    A sampler that needs tuning first (``sampler.needs_tuning``: ``MCLMC()`` without
    ``L`` and ``step_size``) is tuned on the model from the start (``sampler.tuned``)
    with a key split from ``key``, then runs ``num_steps`` steps.
    """
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(f"sampler: expected a sampler such as MALA(step_size=...), got {type(sampler).__name__}")
    check_positive(num_steps, "num_steps", integer=True)
    check_key(key)
    make_room_for_programs()
    model = strong_dtypes(model)
    k_init, k_run = jax.random.split(key)
    if init is None:
        if num_samples is None:
            raise ValueError("num_samples: give num_samples or init")
        check_positive(num_samples, "num_samples", integer=True)
        x = initial_positions(model, num_samples, k_init)
    else:
        x = check_examples(init, "init", model.event_shape)
        if num_samples is not None and num_samples != x.shape[0]:
            raise ValueError(f"num_samples: {num_samples} disagrees with init's {x.shape[0]} chains")
        if model.event_shape is None:
            model = model.with_event_shape(x.shape[1:])
    check_energy(model, model.event_shape, x.dtype)
    mesh = make_mesh(devices)
    if mesh is not None:
        check_divides(mesh, x.shape[0], "the number of chains (num_samples)")
        model = replicate_model(model, mesh)
        x = place(x, split(mesh))
    if sampler.needs_tuning:
        k_tune, k_run = jax.random.split(k_run)
        sampler = _tune(sampler, model, x, k_tune, kwargs)
    if return_diagnostics:
        every = check_trace_every(trace_every, num_steps)
        x, info, trace = run_with_trace(sampler, model, x, num_steps, k_run, every, kwargs)
        return x, chain_diagnostics(trace, info)
    x, info = _run(sampler, model, x, num_steps, k_run, kwargs)
    return (x, info) if return_info else x
