r"""Maximum mean discrepancy between two samples (Gretton et al. 2012)."""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_array, check_number

# The median heuristic looks at no more than this many points of each sample, so its
# cost stays bounded for large samples (the median of a subsample is a fine bandwidth).
_MEDIAN_POINTS = 1000


def _check_samples(x: Any, name: str) -> Array:
    """Samples ``(n, *example)``: floating point, finite, ``n >= 2``, examples with at
    least one number (a 1-D array is ``n`` scalar samples)."""
    if isinstance(x, jax.core.Tracer):
        return x
    arr = check_array(x, name)
    if arr.ndim < 1:
        raise ValueError(f"{name}: expected samples of shape (num_samples, ...), got a scalar")
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: the unbiased MMD needs at least 2 samples, got {arr.shape[0]}")
    if arr.size == 0:
        raise ValueError(f"{name}: each sample must hold at least one number, got shape {tuple(arr.shape)}")
    return arr


def _flat(x: Any, name: str) -> Array:
    arr = _check_samples(x, name)
    return arr.reshape(arr.shape[0], -1)


def sq_dists(a: Array, b: Array) -> Array:
    """Pairwise squared Euclidean distances between the rows of ``a`` and ``b``."""
    sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)


def _common_scale(*arrays: Array) -> Array:
    """``max |a|`` over the arrays (1 when all are 0): dividing by it keeps squared
    distances far from float overflow (|x| above ~1e19 overflows float32 squares)."""
    top = jnp.max(jnp.stack([jnp.max(jnp.abs(a)) for a in arrays]))
    return jnp.where(top > 0, top, 1.0)


def median_bandwidth(x: Float[ArrayLike, "n ..."], y: Float[ArrayLike, "m ..."] | None = None) -> Float[Array, ""]:
    r"""The median heuristic: the median distance between distinct points of the pooled
    sample ``x`` (and ``y``), computed on at most 1000 points of each. Used as the
    Gaussian kernel's ``h`` in ``k(a, b) = exp(-||a - b||^2 / (2 h^2))``.

    When more than half the pairs coincide (e.g. constant samples) the median is 0, a
    degenerate kernel; then the median of the non-zero distances is used, and 1 if all
    points coincide (every bandwidth then gives the same MMD, 0). Computed on the points
    divided by their largest magnitude, so any finite input gives a finite bandwidth."""
    a = _flat(x, "x")[:_MEDIAN_POINTS]
    if y is not None:
        a = jnp.concatenate([a, _flat(y, "y")[:_MEDIAN_POINTS]])
    return _median_bandwidth(a)


@jax.jit
def _median_bandwidth(a: Array) -> Array:
    scale = _common_scale(a)
    a = a / scale
    n = a.shape[0]
    diagonal = jnp.arange(n)[:, None] == jnp.arange(n)[None, :]
    sq = jnp.where(diagonal, jnp.inf, sq_dists(a, a)).ravel()  # a point and itself: ranked last, never counted
    pairs = n * (n - 1)  # even: the median is the mean of the two middle distances
    median = 0.5 * (_order_statistic(sq, pairs // 2 - 1) + _order_statistic(sq, pairs // 2))
    zeros = jnp.sum(sq == 0)
    rest = pairs - zeros

    def nonzero_median():
        return 0.5 * (_order_statistic(sq, zeros + (rest - 1) // 2) + _order_statistic(sq, zeros + rest // 2))

    h2 = jax.lax.cond(median > 0, lambda: median, nonzero_median)
    return jnp.where(rest > 0, jnp.sqrt(h2) * scale, 1.0).astype(sq.dtype)


def _order_statistic(values: Array, k: Array | int) -> Array:
    """The ``k``-th smallest (from 0) of non-negative ``values`` (``+inf`` allowed): a
    bisection on their integer bit patterns, which order them as the floats do, one count
    over the values per bit, instead of a sort (XLA:CPU sorted the 4e6 distances of 2000
    points in 1.3 s; these counts take a few ms each)."""
    int_type = {16: jnp.int16, 32: jnp.int32, 64: jnp.int64}[jnp.finfo(values.dtype).bits]
    bits = jax.lax.bitcast_convert_type(values, int_type)
    infinity = jax.lax.bitcast_convert_type(jnp.asarray(jnp.inf, values.dtype), int_type)

    def halve(_, bounds):
        low, high = bounds
        middle = low + (high - low) // 2
        enough = jnp.sum(bits <= middle) > k
        return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

    low, _ = jax.lax.fori_loop(0, jnp.iinfo(int_type).bits - 1, halve, (jnp.zeros((), int_type), infinity))
    return jax.lax.bitcast_convert_type(low, values.dtype)


@jax.jit
def _mmd2(x: Array, y: Array, bandwidths: Array) -> Array:
    # Scaled form: distances of x / s and y / s (s = the largest magnitude), and the kernel
    # as exp(-(d_s * (s / h))^2 / 2), so neither |x| near float's range nor a bandwidth
    # near 0 overflows to inf - inf or 0 * inf (a zero distance gives k = 1 at any h).
    scale = _common_scale(x, y)
    x, y = x / scale, y / scale
    ratio = scale / bandwidths  # (B,), may be inf for a tiny bandwidth

    def kernel(sq):
        d = jnp.sqrt(sq)[..., None]
        r = jnp.where(d > 0, d * ratio, 0.0)
        return jnp.mean(jnp.exp(-0.5 * r**2), axis=-1)  # mixture: average over bandwidths

    return unbiased_mmd2(kernel(sq_dists(x, x)), kernel(sq_dists(y, y)), kernel(sq_dists(x, y)))


def unbiased_mmd2(
    kxx: Float[Array, "n n"], kyy: Float[Array, "m m"], kxy: Float[Array, "n m"]
) -> Float[Array, ""]:
    r"""The unbiased estimate of MMD^2 from the kernel matrices (Gretton et al. 2012, eq. 3):
    the means of ``kxx`` and ``kyy`` off their diagonals, minus twice the mean of ``kxy``."""
    n, m = kxx.shape[0], kyy.shape[0]
    within_x = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    within_y = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return within_x + within_y - 2.0 * jnp.mean(kxy)


def mmd(
    x: Float[ArrayLike, "n ..."],
    y: Float[ArrayLike, "m ..."],
    *,
    bandwidth: float | Sequence[float] | ArrayLike | None = None,
) -> Float[Array, ""]:
    r"""Squared maximum mean discrepancy between the samples ``x`` and ``y``, unbiased
    estimator (Gretton et al. 2012, eq. 3):

    .. math:: \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i\ne j} k(x_i, x_j)
              + \frac{1}{m(m-1)}\sum_{i\ne j} k(y_i, y_j) - \frac{2}{nm}\sum_{i,j} k(x_i, y_j)

    with the Gaussian kernel ``k(a, b) = exp(-||a - b||^2 / (2 h^2))`` on flattened
    examples, or the average of such kernels over several bandwidths (a characteristic
    mixture kernel). Its expectation is 0 when ``x`` and ``y`` come from the same
    distribution (so an estimate may be slightly negative) and positive otherwise; its
    standard deviation shrinks like ``1/n``.

    Arguments:
        x, y: samples of shape ``(n, ...)`` and ``(m, ...)`` with the same example shape,
            at least 2 each.
        bandwidth: ``h``. ``None`` (default): the median heuristic on the pooled sample
            (``median_bandwidth``). A number: that bandwidth. A sequence: the mixture
            kernel over those bandwidths. To compare several MMDs with one another, fix
            the bandwidth (e.g. ``median_bandwidth(reference)``): the heuristic adapts it
            to each pair.

    Jit-friendly: traced inputs skip the Python checks.
    """
    xs, ys = _check_samples(x, "x"), _check_samples(y, "y")
    if tuple(xs.shape[1:]) != tuple(ys.shape[1:]):
        raise ValueError(
            f"y: each sample must have the shape of x's samples {tuple(xs.shape[1:])}, got {tuple(ys.shape[1:])}"
        )
    xf, yf = xs.reshape(xs.shape[0], -1), ys.reshape(ys.shape[0], -1)
    if bandwidth is None:
        h = median_bandwidth(xf, yf)[None]
    else:
        if isinstance(bandwidth, jax.core.Tracer):
            h = jnp.reshape(bandwidth, -1)
        elif isinstance(bandwidth, numbers.Real) or (hasattr(bandwidth, "shape") and np.ndim(bandwidth) == 0):
            h = jnp.asarray(check_number(bandwidth, "bandwidth", low=0.0, low_open=True))[None]
        elif isinstance(bandwidth, (list, tuple)):
            if not bandwidth:
                raise ValueError("bandwidth: expected at least one bandwidth, got an empty sequence")
            h = jnp.asarray([check_number(b, f"bandwidth[{i}]", low=0.0, low_open=True) for i, b in enumerate(bandwidth)])
        else:
            h = check_array(bandwidth, "bandwidth", ndim=(1,), positive=True, min_size=1)
    dtype = jnp.result_type(xf.dtype, yf.dtype)
    return _mmd2(xf.astype(dtype), yf.astype(dtype), h.astype(dtype))
