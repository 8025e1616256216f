"""The declaration layer: an unnormalized density built from an energy network."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._checks import _describe, channel_axis_hint, check_number, float_dtype_of, is_floating_dtype, strong_dtypes


def check_event_shape(shape: Any, name: str = "event_shape") -> tuple[int, ...]:
    """A tuple of positive integers (the shape of one example)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
        raise TypeError(f"{name}: expected a tuple of positive integers such as (2,), got {_describe(shape)}")
    return tuple(check_number(s, f"{name}[{i}]", integer=True, low=1) for i, s in enumerate(shape))


def _event_shape_of(energy: Any) -> tuple[int, ...] | None:
    shape = getattr(energy, "event_shape", None)
    return None if shape is None else check_event_shape(tuple(shape), "energy.event_shape")


def _scalar_parameter(value: Any, name: str, dtype: Any, **limits) -> Array:
    """A checked, strongly typed 0-d parameter: an array keeps its own floating dtype,
    a Python number takes ``dtype`` (the energy's parameter dtype)."""
    if isinstance(value, jax.core.Tracer):
        return value
    number = check_number(value, name, **limits)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and is_floating_dtype(np.asarray(value).dtype):
        dtype = np.asarray(value).dtype
    return jnp.asarray(number, dtype=dtype)


def split_mapped(kwargs: dict[str, Any], batch_shape: tuple[int, ...]) -> tuple[dict, dict]:
    """Split keyword inputs into those mapped over the leading ``batch_shape`` axes
    (arrays whose leading axes equal it) and those broadcast to every example."""
    nb = len(batch_shape)
    mapped = {
        k: v
        for k, v in kwargs.items()
        if nb > 0 and hasattr(v, "shape") and len(v.shape) >= nb and tuple(v.shape[:nb]) == tuple(batch_shape)
    }
    fixed = {k: v for k, v in kwargs.items() if k not in mapped}
    return mapped, fixed


def map_over_batch(fn, x: Array, num_event_dims: int, kwargs: dict[str, Any]):
    """``jax.vmap`` ``fn(x_i, **kwargs_i)`` over every leading (batch) axis of ``x``.

    ``x`` has shape ``(*batch, *event)`` with ``len(event) == num_event_dims``. Keyword
    arrays whose leading axes equal ``batch`` are mapped alongside ``x``; anything else
    (Python numbers, 0-d arrays, arrays of another shape) is broadcast to every example.
    """
    batch_shape = x.shape[: x.ndim - num_event_dims]
    if not batch_shape:
        return fn(x, **kwargs)
    nb = len(batch_shape)
    mapped, fixed = split_mapped(kwargs, batch_shape)
    flat_x = x.reshape((-1,) + x.shape[nb:])
    flat_kw = {k: v.reshape((-1,) + v.shape[nb:]) for k, v in mapped.items()}
    out = jax.vmap(lambda xi, kw: fn(xi, **kw, **fixed))(flat_x, flat_kw)
    return jax.tree.map(lambda o: o.reshape(batch_shape + o.shape[1:]), out)


class EBM(eqx.Module):
    r"""An energy-based model: the unnormalized density

    .. math::  \log \tilde p(x) = \beta\,\bigl(-E_\theta(x) + \log b(x)\bigr),
               \qquad p(x) = \tilde p(x) / Z_\theta

    where ``E`` is any Equinox module mapping ONE unbatched example to a scalar, ``b``
    an optional *normalized* base density (anything with ``log_prob``, e.g. a NumPyro
    distribution) that keeps the model integrable (Neklyudov et al. 2021; Grathwohl
    et al. 2020), and ``beta = 1/T`` the inverse temperature (1 unless ``tempered``).

    Arguments:
        energy: the energy network, ``x -> scalar``; extra inputs such as a noise
            level are keyword arguments, ``energy(x, t=t)``.
        base: optional normalized base density with a ``log_prob`` method. A
            ``GaussianBase`` (any Equinox module) is trained by ``fit`` with the energy
            (its mean and log-scale are parameters); any other base (a NumPyro
            distribution) is held fixed.
        log_z: initial estimate of ``log Z`` (learned by NCE, left alone otherwise).
        inverse_temperature: ``beta``, a finite number > 0 (use ``tempered``).
        event_shape: shape of one example. Taken from ``energy.event_shape`` when the
            module declares it, else set by ``fit`` from the data.

    Parameter dtypes: the energy's weakly typed array leaves (``jnp.array(-2.0)``) are
    made strong (same dtype) so that compiled code never sees their type change;
    ``log_z`` and ``inverse_temperature`` given as numbers take the floating dtype of
    the energy's parameters (float64 stays float64 under ``jax_enable_x64``).

    The batched helpers (``energy_batch`` ...) map over every leading axis beyond the
    event shape; users never write batch loops.
    """

    energy_module: eqx.Module
    base: Any
    log_z: Float[Array, ""]
    inverse_temperature: Float[Array, ""]
    event_shape: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        energy: eqx.Module,
        base: Any = None,
        *,
        log_z: float | Array = 0.0,
        inverse_temperature: float | Array = 1.0,
        event_shape: tuple[int, ...] | None = None,
    ):
        if not callable(energy):
            raise TypeError(
                f"EBM(energy=...): expected a callable Equinox module x -> scalar, got {type(energy).__name__}"
            )
        if base is not None and not hasattr(base, "log_prob"):
            raise TypeError(
                f"EBM(base=...): expected a normalized density with a `log_prob` method "
                f"(e.g. a numpyro distribution), got {type(base).__name__}"
            )
        self.energy_module = strong_dtypes(energy)
        self.base = base
        dtype = float_dtype_of(energy)
        self.log_z = _scalar_parameter(log_z, "log_z", dtype)
        self.inverse_temperature = _scalar_parameter(
            inverse_temperature, "inverse_temperature", dtype, low=0.0, low_open=True
        )
        declared = _event_shape_of(energy)
        if event_shape is not None:
            event_shape = check_event_shape(event_shape)
            if declared is not None and declared != event_shape:
                raise ValueError(
                    f"EBM(event_shape={event_shape}) disagrees with the energy module's "
                    f"declared event_shape {declared}"
                )
        self.event_shape = event_shape if event_shape is not None else declared

    # ---- single example -------------------------------------------------------------
    def energy(self, x: Float[Array, "*event"], **kwargs) -> Float[Array, ""]:
        """``E(x)`` for one unbatched example."""
        return self.energy_module(x, **kwargs)

    def log_prob_unnorm(self, x: Float[Array, "*event"], **kwargs) -> Float[Array, ""]:
        r"""``log p~(x) = beta * (-E(x) + log b(x))`` for one example."""
        out = -self.energy(x, **kwargs)
        if self.base is not None:
            out = out + jnp.sum(self.base.log_prob(x))
        return self.inverse_temperature * out

    def log_prob(self, x: Float[Array, "*event"], **kwargs) -> Float[Array, ""]:
        """``log p~(x) - log_z``: normalized only as far as ``log_z`` is a good estimate."""
        return self.log_prob_unnorm(x, **kwargs) - self.log_z

    def score(self, x: Float[Array, "*event"], **kwargs) -> Float[Array, "*event"]:
        r"""``grad_x log p~(x)`` for one example."""
        return jax.grad(lambda y: self.log_prob_unnorm(y, **kwargs))(x)

    def potential_fn(self, x: Float[Array, "*event"]) -> Float[Array, ""]:
        """NumPyro bridge: the potential ``-log p~(x)``.

        ``numpyro.infer.NUTS(potential_fn=model.potential_fn)`` samples the model;
        ``numpyro.factor("ebm", model.log_prob_unnorm(x))`` uses it inside a model.
        """
        return -self.log_prob_unnorm(x)

    # ---- batched helpers ------------------------------------------------------------
    def _num_event_dims(self, x: Array) -> int:
        """The number of trailing axes of ``x`` that hold one example; a ``ValueError``
        naming both shapes when they are not the model's ``event_shape`` (checked on the
        static shape, so also inside ``jit``, at no cost at run time)."""
        if self.event_shape is None:
            return x.ndim - 1 if x.ndim > 0 else 0
        event = tuple(self.event_shape)
        shape = tuple(jnp.shape(x))
        if len(shape) < len(event):
            raise ValueError(
                f"x: expected an array of shape (*batch, {', '.join(map(str, event))}) (examples of the model's "
                f"event_shape {event}), got shape {shape}"
            )
        if shape[len(shape) - len(event):] != event:
            raise ValueError(
                f"x: the examples have shape {shape[len(shape) - len(event):]}, the model expects {event} "
                f"(its event_shape; x has shape {shape}, read as (*batch, *event_shape))" + channel_axis_hint(shape, event)
            )
        return len(event)

    def energy_batch(self, x: Float[Array, "*batch *event"], **kwargs) -> Float[Array, "*batch"]:
        """``E`` over every leading batch axis of ``x``."""
        return map_over_batch(self.energy, x, self._num_event_dims(x), kwargs)

    def log_prob_unnorm_batch(self, x: Float[Array, "*batch *event"], **kwargs) -> Float[Array, "*batch"]:
        """``log p~`` over every leading batch axis of ``x``."""
        return map_over_batch(self.log_prob_unnorm, x, self._num_event_dims(x), kwargs)

    def score_batch(self, x: Float[Array, "*batch *event"], **kwargs) -> Float[Array, "*batch *event"]:
        """``grad_x log p~`` over every leading batch axis of ``x``."""
        return map_over_batch(self.score, x, self._num_event_dims(x), kwargs)

    # ---- transformations ------------------------------------------------------------
    def tempered(self, temperature: float | Array) -> "EBM":
        r"""The same model at temperature ``T``: ``log p~_T = log p~ / T``."""
        check_number(temperature, "temperature", low=0.0, low_open=True)
        beta = self.inverse_temperature / temperature
        return eqx.tree_at(lambda m: m.inverse_temperature, self, beta.astype(self.inverse_temperature.dtype))

    def with_event_shape(self, event_shape: tuple[int, ...]) -> "EBM":
        """A copy that knows the shape of one example."""
        return EBM(
            self.energy_module,
            self.base,
            log_z=self.log_z,
            inverse_temperature=self.inverse_temperature,
            event_shape=tuple(event_shape),
        )

    @property
    def event_size(self) -> int:
        if self.event_shape is None:
            raise ValueError("this EBM does not know its event_shape yet; pass event_shape= or fit it first")
        return math.prod(self.event_shape)


def trainable_filter(model: PyTree) -> PyTree:
    """Filter spec of the parameters ``fit`` trains: every inexact array of the model,
    except the temperature (fixed by declaration) and a base density that is not an
    Equinox module (a NumPyro distribution is fixed; a ``GaussianBase`` is learned)."""
    spec = jax.tree.map(eqx.is_inexact_array, model)
    if isinstance(model, EBM):
        spec = eqx.tree_at(lambda m: m.inverse_temperature, spec, False)
        if model.base is not None and not isinstance(model.base, eqx.Module):
            spec = eqx.tree_at(
                lambda m: m.base, spec, jax.tree.map(lambda _: False, spec.base)
            )
    return spec


def check_energy(model: EBM, event_shape: tuple[int, ...], dtype=None, **kwargs) -> None:
    """Raise a clear error unless ``model.energy`` maps one example (of ``dtype``,
    default the model's parameter dtype) to a floating-point scalar."""
    if dtype is None:
        dtype = float_dtype_of(model)
    probe = jax.ShapeDtypeStruct(tuple(event_shape), dtype)
    kw = {k: (jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)) if hasattr(v, "shape") else v) for k, v in kwargs.items()}
    try:
        out = eqx.filter_eval_shape(lambda m, x, kw: m.energy(x, **kw), model, probe, kw)
    except Exception as e:  # noqa: BLE001 -- re-raised with context
        raise TypeError(
            f"energy: calling the energy module on one example of shape {tuple(event_shape)} failed "
            f"({type(e).__name__}: {e}). The energy must map ONE unbatched example to a scalar."
        ) from e
    if not hasattr(out, "shape") or tuple(out.shape) != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise TypeError(
            f"energy: must return a scalar for one example of shape {tuple(event_shape)}, "
            f"got output of shape {shape}"
        )
    if not is_floating_dtype(out.dtype):
        raise TypeError(
            f"energy: must return a floating-point scalar, got dtype {out.dtype}; an integer energy has "
            f"no gradient, so nothing would train (return e.g. jnp.asarray(e, jnp.float32))"
        )


def stop_gradient(tree: PyTree) -> PyTree:
    """``jax.lax.stop_gradient`` on every array of a pytree (e.g. a model used only to
    drive a sampler), leaving non-array leaves alone."""
    return jax.tree.map(lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, tree)
