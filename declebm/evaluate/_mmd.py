r"""Maximum mean discrepancy between two samples (Gretton et al. 2012)."""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

# The median heuristic looks at no more than this many points of each sample, so its
# cost stays bounded for large samples (the median of a subsample is a fine bandwidth).
_MEDIAN_POINTS = 1000


def _flat(x: Any, name: str) -> Array:
    if isinstance(x, jax.core.Tracer):
        arr = x
    else:
        arr = jnp.asarray(x)
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"{name}: expected a floating-point array of samples, got dtype {arr.dtype}")
        if arr.ndim < 1:
            raise ValueError(f"{name}: expected shape (num_samples, ...), got a scalar")
        if arr.shape[0] < 2:
            raise ValueError(f"{name}: the unbiased MMD needs at least 2 samples, got {arr.shape[0]}")
    return arr.reshape(arr.shape[0], -1)


def sq_dists(a: Array, b: Array) -> Array:
    """Pairwise squared Euclidean distances between the rows of ``a`` and ``b``."""
    sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)


def median_bandwidth(x: Float[ArrayLike, "n ..."], y: Float[ArrayLike, "m ..."] | None = None) -> Float[Array, ""]:
    r"""The median heuristic: the median distance between distinct points of the pooled
    sample ``x`` (and ``y``), computed on at most 1000 points of each. Used as the
    Gaussian kernel's ``h`` in ``k(a, b) = exp(-||a - b||^2 / (2 h^2))``."""
    a = _flat(x, "x")[:_MEDIAN_POINTS]
    if y is not None:
        a = jnp.concatenate([a, _flat(y, "y")[:_MEDIAN_POINTS]])
    sq = sq_dists(a, a)
    n = a.shape[0]
    off = sq[~np.eye(n, dtype=bool)]
    return jnp.sqrt(jnp.median(off))


@jax.jit
def _mmd2(x: Array, y: Array, bandwidths: Array) -> Array:
    gamma = 1.0 / (2.0 * bandwidths**2)  # (B,)

    def mean_kernel(sq, exclude_diagonal):
        k = jnp.mean(jnp.exp(-sq[..., None] * gamma), axis=-1)  # mixture: average over bandwidths
        total = jnp.sum(k)
        if exclude_diagonal:
            size = sq.shape[0]
            return (total - jnp.trace(k)) / (size * (size - 1))
        return total / (sq.shape[0] * sq.shape[1])

    kxx = mean_kernel(sq_dists(x, x), True)
    kyy = mean_kernel(sq_dists(y, y), True)
    kxy = mean_kernel(sq_dists(x, y), False)
    return kxx + kyy - 2.0 * kxy


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
    xf, yf = _flat(x, "x"), _flat(y, "y")
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"y: examples must have the same size as x's ({xf.shape[1]} numbers), got {yf.shape[1]}")
    if bandwidth is None:
        h = median_bandwidth(xf, yf)[None]
    else:
        if isinstance(bandwidth, numbers.Real) or (hasattr(bandwidth, "shape") and np.ndim(bandwidth) == 0):
            h = jnp.asarray(bandwidth, jnp.float32)[None]
        else:
            h = jnp.asarray(bandwidth, jnp.float32).reshape(-1)
        if not isinstance(h, jax.core.Tracer):
            hn = np.asarray(h)
            if hn.size == 0 or not np.all(np.isfinite(hn)) or np.any(hn <= 0):
                raise ValueError(f"bandwidth: expected positive finite bandwidth(s), got {bandwidth!r}")
    dtype = jnp.result_type(xf.dtype, yf.dtype)
    return _mmd2(xf.astype(dtype), yf.astype(dtype), h.astype(dtype))
