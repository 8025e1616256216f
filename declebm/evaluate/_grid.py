"""Exact normalisation by quadrature on a grid, for 1-D and 2-D models."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import (
    _describe,
    check_examples,
    check_flag,
    check_memory,
    check_number,
    float_dtype_of,
    strong_dtypes,
)
from .._ebm import EBM, check_energy

Bounds = tuple[float, float] | Sequence[tuple[float, float]]

DEFAULT_BOUNDS = (-5.0, 5.0)
# Points evaluated per batch (data) and per chunk (grids): bounds the memory of the
# energy's activations.
_POINTS_PER_BATCH = 65_536
# The memory a grid evaluation may need: everything its compiled program holds at once,
# measured by XLA (arguments, outputs and temporaries: a chunk's points, the energy's
# activations on them, the per-chunk reductions, and the grid of values when it is
# returned), at most 2 GiB.
_MAX_GIB = 2.0
# Grid points are numbered by int32 flat indices (the last chunk runs past the end).
_MAX_POINTS = 2**31 - 1 - _POINTS_PER_BATCH
# The outermost ring of cells may hold at most this fraction of the model's mass. A
# density that has not decayed at the edge continues outside the box: if it decays over
# a length l beyond the edge, the mass cut off is about edge_mass * l / h (h the cell
# width), and log Z (so the NLL) is off by about that many nats. 1e-3 keeps the error
# below ~0.01 nats for decay lengths up to 10 cells; a well-placed box around a model
# whose tails decay (the Gaussians in the tests: ~1e-12) is far below it.
EDGE_MASS_LIMIT = 1e-3


@eqx.filter_jit
def _log_prob_unnorm(model: EBM, x: Array) -> Array:
    return jax.lax.map(model.log_prob_unnorm, x, batch_size=_POINTS_PER_BATCH)


def _check_model(model: Any, example_shape: tuple[int, ...] | None = None) -> int:
    """The model's dimension, 1 or 2; ``example_shape`` (the data's) goes into the message
    when the model does not know its event shape."""
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    shape = model.event_shape
    if shape is None:
        example = f"event_shape={tuple(example_shape)}" if example_shape is not None else "event_shape=(1,) or (2,)"
        raise ValueError(
            f"model: its event_shape is unknown (the energy module declares none), and grid quadrature needs "
            f"it; declare it: EBM(energy, {example})"
        )
    if len(shape) != 1 or shape[0] not in (1, 2):
        raise ValueError(
            f"model: grid quadrature is limited to 1-D and 2-D models (event_shape (1,) or (2,)), "
            f"got event_shape {shape}"
        )
    return shape[0]


def _check_bounds(bounds: Any, dim: int) -> np.ndarray:
    """``(low, high)`` for every axis, or one per axis: finite, ``low < high``."""
    if isinstance(bounds, (str, bytes, dict)) or bounds is None:
        raise TypeError(f"bounds: expected (low, high) or one (low, high) per dimension, got {_describe(bounds)}")
    try:
        b = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"bounds: expected (low, high) or one (low, high) per dimension, got {bounds!r}") from e
    if b.shape == (2,):
        b = np.tile(b, (dim, 1))
    if b.shape != (dim, 2):
        raise ValueError(f"bounds: expected (low, high) or {dim} pairs (low, high), got {bounds!r}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"bounds: expected finite numbers, got {bounds!r}")
    if not np.all(b[:, 1] > b[:, 0]):
        raise ValueError(f"bounds: expected low < high on every axis, got {bounds!r}")
    return b


def _check_resolution(resolution: Any, dim: int) -> int:
    """At least 2, and few enough points to number (the memory is checked on the
    compiled evaluation, ``_evaluate``)."""
    resolution = check_number(resolution, "resolution", integer=True, low=2)
    if resolution**dim > _MAX_POINTS:
        raise ValueError(
            f"resolution: a {resolution}^{dim} grid has {resolution**dim:.3g} points, more than the "
            f"{_MAX_POINTS:.3g} this function numbers; use a smaller resolution"
        )
    return resolution


def data_bounds(x: Float[Array, "n d"]) -> np.ndarray:
    """The default box around data ``x``: on each axis the data's range ``[min, max]``
    widened on both sides by 10% of its width plus 10% of the widest axis's width
    (1 when all the data are one point)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(0), x.max(0)
    width = hi - lo
    margin = 0.1 * width.max() if width.max() > 0 else 1.0
    pad = 0.1 * width + margin
    return np.stack([lo - pad, hi + pad], -1)


def _axes(model: EBM, bounds: Any, resolution: Any) -> list[Array]:
    dim = _check_model(model)
    resolution = _check_resolution(resolution, dim)
    b = _check_bounds(bounds, dim)
    dtype = float_dtype_of(model)
    # Midpoint rule: cell centres.
    return [jnp.asarray(lo + (np.arange(resolution) + 0.5) * (hi - lo) / resolution, dtype) for lo, hi in b]


def grid_points(model: EBM, bounds: Bounds = DEFAULT_BOUNDS, resolution: int = 200) -> tuple[Float[Array, "m d"], float]:
    """Cell centres of the grid over ``bounds`` and the volume of one cell."""
    axes = _axes(model, bounds, resolution)
    dim, res = len(axes), axes[0].shape[0]
    # The mesh's d coordinate arrays and their stacked copy exist at once.
    check_memory(2 * dim * res**dim, "resolution", what=f"a {res}^{dim} grid of points",
                 bytes_per_element=axes[0].dtype.itemsize, limit_gib=_MAX_GIB)
    mesh = jnp.stack([g.reshape(-1) for g in jnp.meshgrid(*axes, indexing="ij")], -1)
    cell = float(np.prod([float(a[1] - a[0]) for a in axes]))
    return mesh, cell


def _refuse_nan(log_p: Array, points: Array, what: str) -> None:
    """Raise, naming the energy, when ``log p~`` is NaN anywhere (an energy of ``+inf`` is a
    valid constraint, NaN is not a density)."""
    nan = np.isnan(np.asarray(log_p))
    if nan.any():
        first = np.round(np.asarray(points)[np.argmax(nan)], 4).tolist()
        raise ValueError(
            f"model: the energy is NaN at {int(nan.sum())} of {nan.size} {what}s (the first at x = {first}), so the "
            f"model is not a density there; an energy of +inf is allowed (zero density), NaN is not"
        )


class _GridValues(NamedTuple):
    """What one pass over the grid gives (``_evaluate``)."""

    log_total: Array  # logsumexp of log p~ over every cell (the cell volume left out)
    log_edge: Array  # the same over the outermost ring of cells
    num_nan: Array  # points where log p~ is NaN
    first_nan: Array  # flat index of the first of them (the number of points if none)
    log_p: Array | None  # log p~ at every point, flat in "ij" order, when asked for


def _grid_values(model: EBM, axes: tuple[Array, ...], keep: bool) -> _GridValues:
    r"""``log p~`` over the grid ``axes[0] x ... x axes[d-1]``, reduced chunk by chunk:
    ``_POINTS_PER_BATCH`` points are built from their flat indices, evaluated and reduced
    (``logsumexp`` over all cells and over the ring ``i_k in {0, r-1}`` for some axis
    ``k``, NaNs counted) before the next, so the memory is one chunk's whatever the
    resolution ``r``. With ``keep`` the values are also written, in place, into the
    output, ``r^d`` of them. The last chunk ends at the last point (it starts earlier and
    re-evaluates points of the one before, which it leaves out of its reductions), so
    there is no padding and no copy."""
    res, dim = axes[0].shape[0], len(axes)
    n = res**dim
    chunk = min(_POINTS_PER_BATCH, n)
    dtype = jax.eval_shape(model.log_prob_unnorm, jax.ShapeDtypeStruct((dim,), axes[0].dtype)).dtype

    def body(c, carry):
        lse, lse_edge, num_nan, first, out = carry
        c = jnp.asarray(c, jnp.int32)  # int64 under x64
        start = jnp.minimum(c * chunk, n - chunk)
        idx = start + jnp.arange(chunk, dtype=jnp.int32)
        new = idx >= c * chunk  # not evaluated by an earlier chunk
        ij = [(idx // res ** (dim - 1 - a)) % res for a in range(dim)]
        lp = jax.vmap(model.log_prob_unnorm)(jnp.stack([axes[a][ij[a]] for a in range(dim)], -1))
        nan = jnp.isnan(lp) & new
        ok = jnp.where(new & ~nan, lp, -jnp.inf)
        edge = functools.reduce(jnp.logical_or, [(i == 0) | (i == res - 1) for i in ij])
        lse = jnp.logaddexp(lse, jax.nn.logsumexp(ok))
        lse_edge = jnp.logaddexp(lse_edge, jax.nn.logsumexp(jnp.where(edge, ok, -jnp.inf)))
        first = jnp.minimum(first, jnp.min(jnp.where(nan, idx, n)))
        if keep:
            out = jax.lax.dynamic_update_slice(out, lp.astype(out.dtype), (start,))
        return lse, lse_edge, num_nan + jnp.sum(nan, dtype=jnp.int32), first, out

    minus_inf = jnp.full((), -jnp.inf, dtype)
    out = jnp.zeros((n,) if keep else (0,), dtype)
    init = (minus_inf, minus_inf, jnp.zeros((), jnp.int32), jnp.asarray(n, jnp.int32), out)
    lse, lse_edge, num_nan, first, out = jax.lax.fori_loop(0, -(-n // chunk), body, init)
    return _GridValues(lse, lse_edge, num_nan, first, out if keep else None)


_grid_values_jit = eqx.filter_jit(_grid_values)


def _evaluate(model: EBM, axes: list[Array], keep: bool) -> _GridValues:
    """``_grid_values``, compiled, after checking that its program fits in ``_MAX_GIB``:
    XLA's own count of the buffers it holds at once (``memory_analysis`` of the compiled
    program: inputs, outputs and temporaries), so every temporary is counted, the
    energy's activations included, before anything is allocated."""
    axes = tuple(axes)
    compiled = _grid_values_jit.lower(model, axes, keep).compile()
    stats = compiled.compiled.memory_analysis()
    res, dim = axes[0].shape[0], len(axes)
    if stats is not None:
        need = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    else:  # a backend that does not report: the values returned and one chunk's points
        need = (res**dim if keep else 0) * axes[0].dtype.itemsize + _POINTS_PER_BATCH * (dim + 1) * axes[0].dtype.itemsize
    if need > _MAX_GIB * 2**30:
        what = f"its {res**dim:.3g} values (returned), " if keep else ""
        raise ValueError(
            f"resolution: a {res}^{dim} grid would need {need / 2**30:.3g} GiB to evaluate ({what}the energy's "
            f"activations on a chunk of {min(_POINTS_PER_BATCH, res**dim)} points and the reductions, as the "
            f"compiled program counts them), more than the {_MAX_GIB:g} GiB this function allows; use a smaller resolution"
        )
    return compiled(model, axes, keep)


def _grid_log_z(model: EBM, bounds: Any, resolution: Any, truncated: bool, keep: bool) -> tuple[Array | None, Array]:
    """``(log p~ on the grid or None, log Z over the box)``, warning about mass on the
    box's edge unless ``truncated``."""
    _check_model(model)
    truncated = check_flag(truncated, "truncated")
    model = strong_dtypes(model)
    check_energy(model, model.event_shape)
    axes = _axes(model, bounds, resolution)
    cell = float(np.prod([float(a[1] - a[0]) for a in axes]))
    out = _evaluate(model, axes, keep)
    res, dim = axes[0].shape[0], len(axes)
    if int(out.num_nan):
        first = int(out.first_nan)
        point = [round(float(axes[a][(first // res ** (dim - 1 - a)) % res]), 4) for a in range(dim)]
        raise ValueError(
            f"model: the energy is NaN at {int(out.num_nan)} of {res**dim} grid points (the first at x = {point}), so "
            f"the model is not a density there; an energy of +inf is allowed (zero density), NaN is not"
        )
    total = float(out.log_total)
    # Fraction of the grid's mass in the outermost ring of cells (with no finite mass:
    # the ring's share of the cells).
    edge = math.exp(float(out.log_edge) - total) if math.isfinite(total) else 1 - ((res - 2) / res) ** dim
    if edge > EDGE_MASS_LIMIT and not truncated:
        warnings.warn(
            f"bounds: the cells on the edge of the box {np.round(np.asarray(bounds, float), 3).tolist()} hold {edge:.3g} of the "
            f"model's mass on the grid (more than {EDGE_MASS_LIMIT:g}): the density has not decayed at the "
            f"edge, so the mass outside the box is missing from log Z and the result is the box-restricted "
            f"value; widen bounds. A model whose density does not decay at all (untrained, or without a base "
            f"density to keep it integrable: EBM(energy, base=...)) has no box that holds its mass; to score "
            f"it restricted to this box on purpose, pass truncated=True",
            RuntimeWarning,
            stacklevel=3,
        )
    return out.log_p, out.log_total + jnp.log(cell)


def grid_log_z(
    model: EBM, *, bounds: Bounds = DEFAULT_BOUNDS, resolution: int = 200, truncated: bool = False
) -> Float[Array, ""]:
    r"""``log Z = log \int_{bounds} p~(x) dx`` by the midpoint rule on a
    ``resolution^d`` grid (d = 1 or 2; the particle-dynamics protocol: 200x200 on
    [-5, 5]^2).

    Mass outside ``bounds`` is not counted, so the result is exact up to quadrature
    error only when the model lives inside the box: a ``RuntimeWarning`` names the
    fraction of the mass in the outermost cells when it exceeds ``EDGE_MASS_LIMIT``
    (1e-3). ``truncated=True`` asks for the normaliser of the density truncated to the
    box, ``p~(x) 1[x in box]``, on purpose (the same number, no warning): the one defined
    score of a model that is not integrable, e.g. an untrained energy without a base.

    The grid is evaluated chunk by chunk, so the memory does not grow with
    ``resolution``; ``bounds`` must be finite; ``resolution`` at least 2, and the compiled
    evaluation (the energy's activations included) must fit in 2 GiB."""
    return _grid_log_z(model, bounds, resolution, truncated, keep=False)[1]


def grid_nll(
    model: EBM, data: Any, *, bounds: Bounds | None = None, resolution: int = 200, truncated: bool = False
) -> Float[Array, ""]:
    r"""Mean negative log-likelihood of ``data`` under the grid-normalised model,
    ``-mean(log p~(x)) + log Z`` in nats (lower is better).

    Default ``bounds``: the data's range padded (``data_bounds``: 10% of each axis's
    width plus 10% of the widest). Explicit ``bounds`` must contain every data point
    (a ``ValueError`` says how many are outside); mass of the model on the box's edge
    gives a warning (``grid_log_z``), unless ``truncated=True`` scores the density
    truncated to the box on purpose (a model whose mass no box holds, such as an
    untrained energy without a base)."""
    dim = _check_model(model, np.shape(data)[1:] if np.ndim(data) >= 2 else None)
    x = check_examples(data, "data", model.event_shape)
    if bounds is None:
        bounds = data_bounds(x)
    else:
        b = _check_bounds(bounds, dim)
        xn = np.asarray(x, dtype=np.float64)
        outside = int(np.sum(np.any((xn < b[:, 0]) | (xn > b[:, 1]), axis=1)))
        if outside:
            raise ValueError(
                f"bounds: {outside} of the {xn.shape[0]} data points lie outside the box {b.tolist()}, where "
                f"the grid has no mass; widen bounds or leave them out (the default box covers the data)"
            )
    log_z = grid_log_z(model, bounds=bounds, resolution=resolution, truncated=truncated)
    log_p = _log_prob_unnorm(strong_dtypes(model), x)
    _refuse_nan(log_p, x, "data point")
    return -jnp.mean(log_p) + log_z


def grid_log_prob(
    model: EBM, *, bounds: Bounds = DEFAULT_BOUNDS, resolution: int = 200, truncated: bool = False
) -> tuple[list[Array], Float[Array, "..."]]:
    """The log density normalised over the box (for density plots): ``(axes, log p)``
    with ``log p`` of shape ``(resolution,) * d``, indexed ``[i, j] = (axes[0][i], axes[1][j])``.
    Warns like ``grid_log_z`` when the model has mass on the box's edge (not with
    ``truncated=True``). The values are the output: ``resolution^d`` of them must fit,
    with the evaluation, in 2 GiB."""
    axes = _axes(model, bounds, resolution)
    log_p, log_z = _grid_log_z(model, bounds, resolution, truncated, keep=True)
    return axes, (log_p - log_z).reshape((resolution,) * len(axes))
