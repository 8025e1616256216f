"""Early, named checks of user input: a clear error instead of a deep JAX traceback."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a positive (or non-negative) number. Traced arrays pass."""
    if isinstance(value, jax.core.Tracer):
        return
    if integer:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an integer, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, jax.Array)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    arr = np.asarray(value)
    bad = (arr < 0) if allow_zero else (arr <= 0)
    if not np.all(np.isfinite(arr)) or np.any(bad):
        what = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: expected a finite {what} value, got {value!r}")


def check_probability(value: Any, name: str) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")


def check_key(key: Any, name: str = "key") -> None:
    if isinstance(key, jax.core.Tracer):
        return
    if not isinstance(key, jax.Array):
        raise TypeError(f"{name}: expected a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}")
    if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))):
        raise TypeError(f"{name}: expected a JAX PRNG key (jax.random.key(seed)), got an array of dtype {key.dtype}")


def check_examples(x: Any, name: str, event_shape: tuple[int, ...] | None) -> jax.Array:
    """Validate an array of examples ``(num_examples, *event_shape)``; return it as float32."""
    if isinstance(x, jax.core.Tracer):
        return x
    try:
        arr = np.asarray(x) if not isinstance(x, jax.Array) else x
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: expected an array of examples, got {type(x).__name__}") from e
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or arr.dtype == jnp.bfloat16):
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {arr.dtype}; "
            f"convert it, e.g. {name}.astype(numpy.float32)"
        )
    if arr.ndim < 2:
        raise ValueError(
            f"{name}: expected shape (num_examples, *event_shape) with at least 2 axes, got shape {tuple(arr.shape)}"
            + ("; for 1-D data use x[:, None]" if arr.ndim == 1 else "")
        )
    if event_shape is not None and tuple(arr.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name}: each example must have the model's event_shape {tuple(event_shape)}, "
            f"got examples of shape {tuple(arr.shape[1:])}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: contains no examples")
    finite = np.isfinite(np.asarray(arr, dtype=np.float32))
    if not finite.all():
        raise ValueError(f"{name}: contains {int((~finite).sum())} NaN or infinite values")
    return jnp.asarray(arr, dtype=jnp.float32)
