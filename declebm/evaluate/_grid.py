"""Exact normalisation by quadrature on a grid, for 1-D and 2-D models."""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import check_examples, check_positive
from .._ebm import EBM

Bounds = tuple[float, float] | Sequence[tuple[float, float]]


@eqx.filter_jit
def _log_prob_unnorm(model: EBM, x: Array) -> Array:
    return model.log_prob_unnorm_batch(x)


def _axes(model: EBM, bounds: Bounds, resolution: int) -> list[Array]:
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    shape = model.event_shape
    if shape is None or len(shape) != 1 or shape[0] not in (1, 2):
        raise ValueError(
            f"model: grid quadrature needs a 1-D or 2-D model (event_shape (1,) or (2,)), got event_shape {shape}; "
            "use evaluate.log_z with an AIS estimator in higher dimensions"
        )
    check_positive(resolution, "resolution", integer=True)
    dim = shape[0]
    b = np.asarray(bounds, dtype=np.float64)
    if b.shape == (2,):
        b = np.tile(b, (dim, 1))
    if b.shape != (dim, 2) or not np.all(b[:, 1] > b[:, 0]):
        raise ValueError(f"bounds: expected (low, high) or one (low, high) per dimension with low < high, got {bounds!r}")
    # Midpoint rule: cell centres.
    return [jnp.asarray(lo + (np.arange(resolution) + 0.5) * (hi - lo) / resolution, jnp.float32) for lo, hi in b]


def grid_points(model: EBM, bounds: Bounds = (-5.0, 5.0), resolution: int = 200) -> tuple[Float[Array, "m d"], float]:
    """Cell centres of the grid over ``bounds`` and the volume of one cell."""
    axes = _axes(model, bounds, resolution)
    mesh = jnp.stack([g.reshape(-1) for g in jnp.meshgrid(*axes, indexing="ij")], -1)
    cell = float(np.prod([float(a[1] - a[0]) for a in axes]))
    return mesh, cell


def _grid_log_z(model: EBM, bounds: Bounds, resolution: int) -> tuple[Array, Array]:
    points, cell = grid_points(model, bounds, resolution)
    log_p = _log_prob_unnorm(model, points)
    return log_p, jax.nn.logsumexp(log_p) + jnp.log(cell)


def grid_log_z(model: EBM, *, bounds: Bounds = (-5.0, 5.0), resolution: int = 200) -> Float[Array, ""]:
    r"""``log Z = log \int_{bounds} p~(x) dx`` by the midpoint rule on a
    ``resolution^d`` grid (d = 1 or 2). Mass outside ``bounds`` is ignored, so the
    result is exact up to quadrature error when the model lives inside the box
    (the particle-dynamics protocol: 200x200 on [-5, 5]^2)."""
    return _grid_log_z(model, bounds, resolution)[1]


def grid_nll(
    model: EBM, data: Any, *, bounds: Bounds = (-5.0, 5.0), resolution: int = 200
) -> Float[Array, ""]:
    r"""Mean negative log-likelihood of ``data`` under the grid-normalised model,
    ``-mean(log p~(x)) + log Z`` in nats (lower is better)."""
    log_z = grid_log_z(model, bounds=bounds, resolution=resolution)
    x = check_examples(data, "data", model.event_shape)
    return -jnp.mean(_log_prob_unnorm(model, x)) + log_z


def grid_log_prob(
    model: EBM, *, bounds: Bounds = (-5.0, 5.0), resolution: int = 200
) -> tuple[list[Array], Float[Array, "..."]]:
    """The normalised log density on the grid (for density plots): ``(axes, log p)``
    with ``log p`` of shape ``(resolution,) * d``, indexed ``[i, j] = (axes[0][i], axes[1][j])``."""
    axes = _axes(model, bounds, resolution)
    log_p, log_z = _grid_log_z(model, bounds, resolution)
    return axes, (log_p - log_z).reshape((resolution,) * len(axes))
