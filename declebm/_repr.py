"""Readable reprs of hyperparameter objects (strategies, samplers, estimators).

Equinox prints every array leaf as its dtype and shape (``Langevin(step_size=weak_f32[])``).
Numeric hyperparameters are stored as 0-d arrays (traced values, see
``declebm._checks.hyperparameter``), so that repr hides the numbers a user chose. Here
small concrete arrays print as their values; large arrays, and traced ones, keep
Equinox's summary.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
import wadler_lindig as wl

# Arrays with at most this many elements print their values (a per-chain step size, a
# noise ladder); bigger ones (a replay buffer, a mass matrix of 64-D data) their summary.
MAX_SHOWN = 8


def _value(x: Any) -> wl.AbstractDoc | None:
    if not eqx.is_array(x) or isinstance(x, jax.core.Tracer) or x.size > MAX_SHOWN:
        return None
    try:
        values = np.asarray(x)
    except Exception:  # noqa: BLE001 -- an array that cannot be read on the host keeps its summary
        return None
    if values.dtype == np.bool_ or np.issubdtype(values.dtype, np.integer):
        text = repr(values.tolist())
    elif np.issubdtype(values.dtype, np.floating):
        fmt = np.vectorize(lambda v: f"{float(v):.6g}", otypes=[object])
        text = str(fmt(values).tolist()).replace("'", "") if values.ndim else f"{float(values):.6g}"
    else:
        return None
    return wl.TextDoc(text)


def hyperparameter_repr(obj: Any, *, width: int = 88) -> str:
    """``repr`` of an Equinox module of hyperparameters with the values of its small arrays:
    ``Langevin(step_size=0.1)``, ``DenoisingScoreMatching(sigmas=[0.1, 0.2], ...)``."""
    return wl.pformat(obj, width=width, custom=_value)
