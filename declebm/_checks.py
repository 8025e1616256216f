"""Early, named checks of user input: a clear error instead of a deep JAX traceback.

Every public entry point checks its arguments with these helpers, so the messages have
one form: ``"<argument>: expected <what>, got <what was given>"``, as a ``TypeError``
(wrong kind of object) or a ``ValueError`` (right kind, wrong value: out of range, not
finite, wrong shape). Traced values (inside ``jit``/``vmap``) skip the value checks.

The dtype rules live here too:

- **Data keep their floating dtype** (``float16``, ``bfloat16``, ``float32``, ``float64``);
  ``float64`` becomes ``float32`` only when JAX's x64 mode is off (JAX's own rule).
  Integer, boolean and object arrays are refused rather than silently cast.
- **Parameters are strongly typed.** A parameter written ``jnp.array(-2.0)`` is
  *weakly* typed; after one optimizer update it becomes strong and its abstract value
  changes, which retraces anything compiled for it. ``strong_dtypes`` fixes the dtype
  of every weak array leaf (same dtype, ``weak_type=False``) before tracing.
- **Hyperparameters are traced 0-d arrays** (``hyperparameter``), weakly typed on
  purpose, so that ``step_size * grad`` keeps the data's dtype and a sweep over step
  sizes reuses one compiled program.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

# ---------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _describe(value: Any) -> str:
    """A short description of what was given, for error messages."""
    if isinstance(value, (jax.Array, np.ndarray)) and not _is_traced(value):
        if value.ndim == 0:
            return f"{value.item()!r} ({value.dtype})"
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}" if isinstance(value, (str, bytes)) else text


def _range_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_number(
    value: Any,
    name: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """Check that ``value`` is one finite real number (an integer with ``integer=True``)
    in the range given by ``low``/``high`` (closed ends unless ``low_open``/``high_open``),
    and return it as a Python ``float`` (``int``). Python numbers, NumPy scalars and 0-d
    arrays are accepted; ``bool``, strings, ``None`` and arrays with elements are not.
    A traced value is returned unchanged (its value is unknown).

    Raises ``TypeError`` for the wrong kind of object and ``ValueError`` for a value
    that is not finite or out of range; both messages start with ``name``.
    """
    if _is_traced(value):
        return value
    kind = "an integer" if integer else "a number"
    rng = _range_text(low, high, low_open, high_open)
    expected = f"{kind} {rng}".strip() if rng else kind
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.ndim != 0:
            raise TypeError(f"{name}: expected {expected} (a scalar), got {_describe(value)}")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == jnp.bfloat16):
            raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{name}: expected a real number, got {_describe(value)}")
        if integer and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
        number = int(arr) if np.issubdtype(arr.dtype, np.integer) else float(arr)
    elif integer:
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
        number = int(value)
    else:
        if not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected {expected}, got {_describe(value)}")
        number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite {expected[2:] if expected.startswith('a ') else expected}, got {number!r}")
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and (number >= high if high_open else number > high)
    if bad_low or bad_high:
        raise ValueError(f"{name}: expected {expected}, got {number!r}")
    return number


def check_positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """``check_number`` for a positive (``allow_zero``: non-negative) number."""
    return check_number(value, name, integer=integer, low=0, low_open=not allow_zero)


def check_probability(value: Any, name: str) -> Any:
    """``check_number`` for a probability in ``[0, 1]``."""
    return check_number(value, name, low=0.0, high=1.0)


def check_flag(value: Any, name: str) -> bool:
    """``value`` must be ``True`` or ``False`` (not a number or a string that looks like one)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {_describe(value)}")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, type(choices[0])) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {_describe(value)}")
    return value


def check_callable(value: Any, name: str, what: str = "a callable") -> Any:
    if not callable(value):
        raise TypeError(f"{name}: expected {what}, got {_describe(value)}")
    return value


def hyperparameter(name: str, **limits) -> Callable[[Any], Array]:
    """A converter for ``eqx.field(converter=...)``: check the value with
    ``check_number(value, name, **limits)`` and store it as a weakly typed 0-d array.

    A hyperparameter stored as an array is a *traced* value under ``eqx.filter_jit``
    (a Python float would be a compile-time constant, and each new value would compile
    the program again). Weakly typed so that it takes the dtype of the data it
    multiplies (float32 data stay float32, float64 stay float64).
    """

    def convert(value: Any) -> Array:
        if _is_traced(value):
            return value
        return jnp.asarray(float(check_number(value, name, **limits)))

    convert.__name__ = f"check_{name}"
    return convert


def optional_term(name: str) -> Callable[[Any], Any]:
    """A converter for the weight of an optional loss term (``energy_reg``, ``kl_weight``):
    a non-negative number. ``0`` stays the Python float ``0.0``, a compile-time constant
    that leaves the term out of the program (``is_on`` is false); any other value is a
    traced 0-d array (``hyperparameter``), so weights can be swept without recompiling."""
    to_array = hyperparameter(name, low=0.0)

    def convert(value: Any) -> Any:
        if _is_traced(value):
            return value
        if check_number(value, name, low=0.0) == 0.0:
            return 0.0
        return to_array(value)

    convert.__name__ = f"check_{name}"
    return convert


def is_on(weight: Any) -> bool:
    """Whether an ``optional_term`` weight switches its term on (static: the decision is
    made from the pytree's structure, never from a traced value)."""
    return eqx.is_array(weight)


# ---------------------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------------------


def _as_array(x: Any, name: str, what: str) -> Any:
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    if isinstance(x, (str, bytes, dict, set)) or x is None or callable(x):
        raise TypeError(f"{name}: expected {what}, got {_describe(x)}")
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001 -- e.g. ragged nested lists
        raise TypeError(f"{name}: expected {what}, got {type(x).__name__} that is not an array ({e})") from e
    if arr.dtype == object:
        raise TypeError(f"{name}: expected {what}, got {type(x).__name__} that is not a rectangular numeric array")
    return arr


def is_floating_dtype(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int, ...] | None = None,
    finite: bool = True,
    positive: bool = False,
    min_size: int = 0,
) -> Array:
    """A floating-point array: right number of axes (``ndim``) or ``shape``, finite
    (unless ``finite=False``), every element ``> 0`` with ``positive=True``, at least
    ``min_size`` elements. Returns it as a JAX array of its own floating dtype."""
    if _is_traced(x):
        return x
    arr = _as_array(x, name, "a floating-point array")
    if not is_floating_dtype(arr.dtype):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name}: expected an array with {' or '.join(map(str, allowed))} axes, got shape {tuple(arr.shape)}"
            )
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got shape {tuple(arr.shape)}")
    if arr.size < min_size:
        raise ValueError(f"{name}: expected at least {min_size} elements, got shape {tuple(arr.shape)}")
    values = np.asarray(arr, dtype=np.float64)
    if finite and not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: contains {int((~np.isfinite(values)).sum())} NaN or infinite values")
    if finite:
        check_representable(values, arr.dtype, name)
    if positive and np.any(values <= 0):
        raise ValueError(f"{name}: expected every element > 0, got minimum {values.min():g}")
    return jnp.asarray(arr)


def check_representable(values: np.ndarray, dtype: Any, name: str) -> None:
    """Refuse finite ``values`` (of floating ``dtype``) that JAX's cast makes infinite.

    JAX stores an array in ``jax.dtypes.canonicalize_dtype(dtype)``: float64 becomes
    float32 while x64 mode is off, and a magnitude beyond float32's largest finite value
    (3.4e38) becomes ``inf`` there, to surface much later as a "divergence". Said here, at
    the argument, instead."""
    target = jax.dtypes.canonicalize_dtype(dtype)
    if target == np.dtype(dtype):
        return
    largest = float(jnp.finfo(target).max)
    over = np.abs(values) > largest
    if over.any():
        count = int(over.sum())
        raise ValueError(
            f"{name}: {count} value{'s exceed' if count > 1 else ' exceeds'} {target}'s range (largest finite "
            f"{largest:.2g}): JAX casts {np.dtype(dtype)} to {target} while x64 mode is off, and there the largest "
            f"magnitude given, {float(np.abs(values).max()):.3g}, would become inf; rescale the data (e.g. "
            f"standardise them) or enable x64 (jax.config.update('jax_enable_x64', True))"
        )


def channel_axis_hint(shape: tuple[int, ...], event_shape: tuple[int, ...], name: str = "x") -> str:
    """A hint for the commonest image mistake, a batch of grey images ``(n, H, W)`` given to
    a model of event shape ``(1, H, W)``: the text to add to the shape error, or ``""``."""
    shape, event_shape = tuple(shape), tuple(event_shape)
    if len(event_shape) == 3 and event_shape[0] == 1 and len(shape) >= 2 and shape[-2:] == event_shape[1:]:
        if len(shape) < 3 or shape[-3] != 1:
            return (
                f"; the images lack the channel axis: add it with {name}[:, None] "
                f"(a batch (n, H, W) becomes (n, 1, H, W))"
            )
    return ""


def check_examples(
    x: Any, name: str, event_shape: tuple[int, ...] | None, *, min_examples: int = 1
) -> Array:
    """Validate an array of examples ``(num_examples, *event_shape)``: floating point,
    finite, at least ``min_examples`` examples, each of shape ``event_shape`` (when
    known) and with at least one number, and within the range of the dtype JAX stores it
    in (``check_representable``). Returns it as a JAX array of the same floating dtype (see
    the module docstring for the dtype rule)."""
    if _is_traced(x):
        return x
    arr = _as_array(x, name, "an array of examples (num_examples, *event_shape)")
    if not (is_floating_dtype(arr.dtype)):
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {arr.dtype}; "
            f"convert it, e.g. {name.split()[0]}.astype(numpy.float32)"
        )
    if arr.ndim < 2:
        raise ValueError(
            f"{name}: expected shape (num_examples, *event_shape) with at least 2 axes, got shape {tuple(arr.shape)}"
            + ("; for 1-D data use x[:, None]" if arr.ndim == 1 else "")
        )
    if event_shape is not None and tuple(arr.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name}: each example must have the model's event_shape {tuple(event_shape)}, "
            f"got examples of shape {tuple(arr.shape[1:])}" + channel_axis_hint(arr.shape, event_shape, name.split()[0])
        )
    if math.prod(arr.shape[1:]) == 0:
        raise ValueError(f"{name}: each example must hold at least one number, got examples of shape {tuple(arr.shape[1:])}")
    if arr.shape[0] < min_examples:
        raise ValueError(
            f"{name}: expected at least {min_examples} example{'s' if min_examples > 1 else ''}, got {arr.shape[0]}"
        )
    values = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{name}: contains {int((~finite).sum())} NaN or infinite values")
    check_representable(values, arr.dtype, name)
    return jnp.asarray(arr)


def check_key(key: Any, name: str = "key") -> None:
    if _is_traced(key):
        return
    if not isinstance(key, jax.Array):
        raise TypeError(f"{name}: expected a JAX PRNG key (jax.random.key(seed)), got {_describe(key)}")
    if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))):
        raise TypeError(f"{name}: expected a JAX PRNG key (jax.random.key(seed)), got an array of dtype {key.dtype}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape != ():
        raise ValueError(f"{name}: expected one PRNG key (shape ()), got a batch of keys of shape {key.shape}")


def check_memory(num_elements: int, name: str, *, what: str, bytes_per_element: int = 4, limit_gib: float = 2.0) -> None:
    """Refuse a request whose array of ``num_elements`` would exceed ``limit_gib``."""
    need = num_elements * bytes_per_element
    if need > limit_gib * 2**30:
        raise ValueError(
            f"{name}: {what} would need {num_elements:.3g} values ({need / 2**30:.3g} GiB), "
            f"more than the {limit_gib:g} GiB this function allows; use a smaller {name}"
        )


# ---------------------------------------------------------------------------------------
# dtypes of parameters
# ---------------------------------------------------------------------------------------


def strong_dtypes(tree: PyTree) -> PyTree:
    """Every weakly typed JAX array leaf of ``tree`` made strong, with the same dtype
    and value (``jnp.array(-2.0)`` is weak; ``jnp.array(-2.0, dtype=jnp.float32)`` is
    not). A weak parameter becomes strong after its first update, so a model must be
    canonicalised before anything is compiled for it, or the carry's type changes
    between the first and second call (``fit``'s "can only be traced 1 times"
    error). Other leaves are returned unchanged."""

    def fix(leaf):
        if isinstance(leaf, jax.Array) and getattr(leaf, "weak_type", False):
            return jax.lax.convert_element_type(leaf, leaf.dtype)
        return leaf

    return jax.tree.map(fix, tree)


def float_dtype_of(tree: PyTree) -> Any:
    """The floating dtype of the parameters of ``tree`` (the widest among its floating
    array leaves), or JAX's default float dtype (float32, or float64 under x64) if it
    has none."""
    dtypes = [leaf.dtype for leaf in jax.tree.leaves(tree) if eqx.is_inexact_array(leaf) and is_floating_dtype(leaf.dtype)]
    if not dtypes:
        return jnp.result_type(float)
    return jnp.result_type(*dtypes)


def tree_hash(tree: PyTree) -> int:
    """A hash of a pytree of hyperparameters that also covers its array leaves (by
    dtype, shape and bytes; JAX arrays themselves are unhashable), so samplers and
    strategies that store traced hyperparameters still hash equal when equal."""
    leaves, treedef = jax.tree.flatten(tree)

    def key(leaf):
        if isinstance(leaf, (jax.Array, np.ndarray)) and not _is_traced(leaf):
            arr = np.asarray(leaf)
            return ("array", str(arr.dtype), arr.shape, arr.tobytes())
        return leaf

    return hash((treedef, tuple(key(leaf) for leaf in leaves)))


def _aval_text(leaf: Any) -> str:
    if isinstance(leaf, (jax.Array, np.ndarray)) or isinstance(leaf, jax.ShapeDtypeStruct):
        weak = " (weak)" if getattr(leaf, "weak_type", False) else ""
        return f"{leaf.dtype}{list(leaf.shape)}{weak}"
    return f"{type(leaf).__name__} {leaf!r}"[:60]


def type_change(old: PyTree, new: PyTree) -> str | None:
    """One line naming the first leaf whose structure, shape, dtype or weak type differs
    between two pytrees (e.g. a training carry before and after a step), or ``None`` if
    they have the same types: what to say when compiled code would be traced again."""
    old_leaves, old_def = jax.tree_util.tree_flatten_with_path(old)
    new_leaves, new_def = jax.tree_util.tree_flatten_with_path(new)
    if old_def != new_def:
        return f"the pytree structure changed: {old_def} -> {new_def}"[:300]
    for (path, a), (_, b) in zip(old_leaves, new_leaves):
        if eqx.is_array(a) or eqx.is_array(b):
            same = (
                eqx.is_array(a) and eqx.is_array(b) and a.shape == b.shape and a.dtype == b.dtype
                and getattr(a, "weak_type", False) == getattr(b, "weak_type", False)
            )
        else:
            same = type(a) is type(b)
        if not same:
            return f"{jax.tree_util.keystr(path)} changed from {_aval_text(a)} to {_aval_text(b)}"
    return None
