r"""Kernel Stein discrepancy with the inverse multiquadric kernel (Gorham & Mackey 2017).

The KSD compares a sample with a density through the density's *score* only, so the
unknown normalising constant of an EBM never enters: it is the natural sample-quality
measure for energy models.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_examples, check_positive
from .._ebm import EBM
from ._mmd import sq_dists


@jax.jit
def _stein_kernel_matrix(x: Array, s: Array, c: Array, beta: Array) -> Array:
    r"""``k_p(x_i, x_j)`` for all pairs of the flattened rows of ``x`` with scores ``s``.

    For ``k(x, y) = (c^2 + ||x - y||^2)^beta``, ``r = x - y``, ``u = c^2 + ||r||^2``:
    ``grad_x k = 2 beta u^(beta-1) r = -grad_y k`` and
    ``tr(grad_x grad_y k) = -2 beta d u^(beta-1) - 4 beta (beta-1) u^(beta-2) ||r||^2``.
    The scalar products ``s_i . r_ij`` are formed from ``n x n`` matrices, never an
    ``n x n x d`` array.
    """
    d = x.shape[1]
    sq = sq_dists(x, x)
    u = c**2 + sq
    k = u**beta
    sx_sy = s @ s.T
    s_dot_x = s @ x.T  # [i, j] = s_i . x_j
    own = jnp.diagonal(s_dot_x)  # s_i . x_i
    si_r = own[:, None] - s_dot_x  # s_i . (x_i - x_j)
    sj_r = s_dot_x.T - own[None, :]  # s_j . (x_i - x_j)
    grad_term = 2.0 * beta * u ** (beta - 1.0) * (sj_r - si_r)
    trace = -2.0 * beta * d * u ** (beta - 1.0) - 4.0 * beta * (beta - 1.0) * u ** (beta - 2.0) * sq
    return k * sx_sy + grad_term + trace


@eqx.filter_jit
def _scores(model: Any, x: Array, kwargs: dict[str, Any]) -> Array:
    """``model.score_batch(x, **kwargs)`` as one program: called op by op, the gradient of
    a convolutional energy ran some 50-75 small programs, each compiled for the shape."""
    return model.score_batch(x, **kwargs)


def ksd(
    model: EBM,
    samples: Float[ArrayLike, "n *event"],
    *,
    c: float = 1.0,
    beta: float = -0.5,
    statistic: str = "u",
    **kwargs: Any,
) -> Float[Array, ""]:
    r"""Squared kernel Stein discrepancy between ``samples`` and the model's density
    ``p``, with the inverse multiquadric (IMQ) kernel ``k(x, y) = (c^2 + ||x - y||^2)^beta``
    (Gorham & Mackey 2017, "Measuring sample quality with kernels", Thm. 8: with
    ``-1 < beta < 0`` it detects non-convergence, unlike Gaussian kernels):

    .. math:: \mathrm{KSD}^2 = \frac{1}{n(n-1)} \sum_{i \ne j} k_p(x_i, x_j), \qquad
              k_p(x, y) = s(x)^\top s(y)\, k + s(x)^\top \nabla_y k + s(y)^\top \nabla_x k
              + \operatorname{tr} \nabla_x \nabla_y k

    with the score ``s = grad_x log p~`` (``model.score``), so ``log Z`` is never needed.
    ``E_{x, y ~ p} k_p(x, y) = 0``: for samples of ``p`` the estimate is about 0, and
    positive (growing with the mismatch) otherwise.

    Arguments:
        model: the ``EBM`` (or anything with ``score_batch`` and ``event_shape``).
        samples: ``(n, *event_shape)`` points to assess, at least 2; examples are
            flattened for the kernel. Cost ``O(n^2 d)`` time, ``O(n^2)`` memory.
        c, beta: the IMQ kernel's scale and exponent; Gorham & Mackey's ``c = 1``,
            ``beta = -1/2`` by default. Standardise data of very different scale first.
        statistic: ``"u"`` (default): the unbiased U-statistic above (mean 0 under
            ``p``, so it can be slightly negative; standard deviation ``O(1/n)`` under
            ``p``); ``"v"``: the V-statistic ``(1/n^2) sum_{i,j} k_p(x_i, x_j)``, which
            is never negative but biased upward by ``O(1/n)`` (the paper's definition; its
            square root is the KSD).
        **kwargs: extra inputs of the energy (e.g. a noise level ``sigma``).

    Returns:
        the squared KSD, a scalar.
    """
    if not hasattr(model, "score_batch"):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    check_positive(c, "c")
    if not isinstance(beta, (int, float)) or not -1.0 < float(beta) < 0.0:
        raise ValueError(f"beta: expected a number in (-1, 0) (the IMQ exponent), got {beta!r}")
    if statistic not in ("u", "v"):
        raise ValueError(f"statistic: expected 'u' (unbiased) or 'v' (biased, non-negative), got {statistic!r}")
    x = check_examples(samples, "samples", getattr(model, "event_shape", None))
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"samples: the KSD needs at least 2 samples, got {n}")
    s = _scores(model, x, kwargs)
    kp = _stein_kernel_matrix(
        x.reshape(n, -1), s.reshape(n, -1), jnp.asarray(c, jnp.float32), jnp.asarray(beta, jnp.float32)
    )
    total = jnp.sum(kp)
    if statistic == "v":
        return total / n**2
    return (total - jnp.trace(kp)) / (n * (n - 1))
