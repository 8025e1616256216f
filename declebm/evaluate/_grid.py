"""Exact normalisation by quadrature on a grid, for 1-D and 2-D models."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import _describe, check_examples, check_memory, check_number, float_dtype_of, strong_dtypes
from .._ebm import EBM, check_energy

Bounds = tuple[float, float] | Sequence[tuple[float, float]]

DEFAULT_BOUNDS = (-5.0, 5.0)
# Grid points evaluated per batch: bounds the memory of the energy's activations.
_POINTS_PER_BATCH = 65_536
# The largest grid: resolution^d * d coordinates of 4 bytes each, at most 2 GiB.
_MAX_GIB = 2.0
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


def _check_model(model: Any) -> int:
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    shape = model.event_shape
    if shape is None or len(shape) != 1 or shape[0] not in (1, 2):
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
    resolution = check_number(resolution, "resolution", integer=True, low=2)
    check_memory(resolution**dim * dim, "resolution", what=f"a {resolution}^{dim} grid", limit_gib=_MAX_GIB)
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
    mesh = jnp.stack([g.reshape(-1) for g in jnp.meshgrid(*axes, indexing="ij")], -1)
    cell = float(np.prod([float(a[1] - a[0]) for a in axes]))
    return mesh, cell


def _edge_mass(log_p: Array, resolution: int, dim: int) -> float:
    """Fraction of the grid's mass in the outermost ring of cells."""
    grid = np.asarray(log_p, dtype=np.float64).reshape((resolution,) * dim)
    weights = np.exp(grid - np.max(grid)) if np.isfinite(np.max(grid)) else np.ones_like(grid)
    inner = weights[(slice(1, -1),) * dim].sum()
    total = weights.sum()
    return float((total - inner) / total) if total > 0 else 1.0


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


def _grid_log_z(model: EBM, bounds: Any, resolution: Any) -> tuple[Array, Array]:
    _check_model(model)
    model = strong_dtypes(model)
    check_energy(model, model.event_shape)
    points, cell = grid_points(model, bounds, resolution)
    log_p = _log_prob_unnorm(model, points)
    _refuse_nan(log_p, points, "grid point")
    dim = points.shape[1]
    res = round(points.shape[0] ** (1 / dim))
    edge = _edge_mass(log_p, res, dim)
    if edge > EDGE_MASS_LIMIT:
        warnings.warn(
            f"bounds: the cells on the edge of the box {np.round(np.asarray(bounds, float), 3).tolist()} hold {edge:.3g} of the "
            f"model's mass on the grid (more than {EDGE_MASS_LIMIT:g}): the density has not decayed at the "
            f"edge, so the mass outside the box is missing from log Z and the result is the box-restricted "
            f"value; widen bounds",
            RuntimeWarning,
            stacklevel=3,
        )
    return log_p, jax.nn.logsumexp(log_p) + jnp.log(cell)


def grid_log_z(model: EBM, *, bounds: Bounds = DEFAULT_BOUNDS, resolution: int = 200) -> Float[Array, ""]:
    r"""``log Z = log \int_{bounds} p~(x) dx`` by the midpoint rule on a
    ``resolution^d`` grid (d = 1 or 2; the particle-dynamics protocol: 200x200 on
    [-5, 5]^2).

    Mass outside ``bounds`` is not counted, so the result is exact up to quadrature
    error only when the model lives inside the box: a ``RuntimeWarning`` names the
    fraction of the mass in the outermost cells when it exceeds ``EDGE_MASS_LIMIT``
    (1e-3). ``bounds`` must be finite; ``resolution`` at least 2 and small enough that
    the grid's coordinates fit in 2 GiB."""
    return _grid_log_z(model, bounds, resolution)[1]


def grid_nll(model: EBM, data: Any, *, bounds: Bounds | None = None, resolution: int = 200) -> Float[Array, ""]:
    r"""Mean negative log-likelihood of ``data`` under the grid-normalised model,
    ``-mean(log p~(x)) + log Z`` in nats (lower is better).

    Default ``bounds``: the data's range padded (``data_bounds``: 10% of each axis's
    width plus 10% of the widest). Explicit ``bounds`` must contain every data point
    (a ``ValueError`` says how many are outside); mass of the model on the box's edge
    gives a warning (``grid_log_z``)."""
    dim = _check_model(model)
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
    log_z = grid_log_z(model, bounds=bounds, resolution=resolution)
    log_p = _log_prob_unnorm(strong_dtypes(model), x)
    _refuse_nan(log_p, x, "data point")
    return -jnp.mean(log_p) + log_z


def grid_log_prob(
    model: EBM, *, bounds: Bounds = DEFAULT_BOUNDS, resolution: int = 200
) -> tuple[list[Array], Float[Array, "..."]]:
    """The log density normalised over the box (for density plots): ``(axes, log p)``
    with ``log p`` of shape ``(resolution,) * d``, indexed ``[i, j] = (axes[0][i], axes[1][j])``.
    Warns like ``grid_log_z`` when the model has mass on the box's edge."""
    axes = _axes(model, bounds, resolution)
    log_p, log_z = _grid_log_z(model, bounds, resolution)
    return axes, (log_p - log_z).reshape((resolution,) * len(axes))
