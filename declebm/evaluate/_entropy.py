"""Nearest-neighbour entropy of a sample (Kozachenko & Leonenko 1987)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_examples
from ._mmd import sq_dists

_EULER_GAMMA = 0.5772156649015329


def nearest_neighbour_entropy(x: Float[Array, "n *event"]) -> Float[Array, ""]:
    r"""Kozachenko-Leonenko (1987) entropy estimate of the distribution of ``n`` samples,
    from each sample's distance ``rho_i`` to its nearest other sample:

    .. math:: \hat H = \frac{d}{n}\sum_i \log \rho_i + \log V_d + \log(n - 1) + \gamma

    with ``d`` the dimension of one example, ``V_d = pi^{d/2} / Gamma(d/2 + 1)`` the
    volume of the unit ball and ``gamma`` Euler's constant. Differentiable in ``x`` (the
    gradient pushes each sample away from its nearest neighbour, the "repulsion" of Du
    et al. 2020, who measure distances to replay-buffer samples instead of to the other
    end points).

    The estimator is asymptotically unbiased; for ``n`` samples of a 2-D Gaussian its
    standard deviation is about ``2 / sqrt(n)`` (0.045 at n = 2000, over 40 seeds).
    Jit-friendly and differentiable.
    """
    x = check_examples(x, "x", None, min_examples=2)  # skipped for traced x
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x: the nearest-neighbour entropy needs at least 2 samples, got {n}")
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    sq = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, jnp.maximum(sq_dists(flat, flat), 1e-12))
    log_rho = 0.5 * jnp.log(jnp.min(sq, axis=1))
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)
    return d * jnp.mean(log_rho) + log_unit_ball + math.log(n - 1) + _EULER_GAMMA
