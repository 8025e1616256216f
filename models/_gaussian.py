"""Analytic energies whose normalised density is known, for tests and baselines."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class GaussianEnergy(eqx.Module):
    r"""The quadratic energy of a Gaussian, ``E(x) = 1/2 (x - mu)^T P (x - mu)``.

    The precision ``P = L L^T`` is parametrised by its Cholesky factor: a free strictly
    lower triangle and log-diagonal, so every parameter value is a valid Gaussian and
    gradient training cannot leave the family. ``exp(-E)`` integrates to
    ``log Z = d/2 log(2 pi) - 1/2 log det P``, exposed as ``log_z``.

    Arguments:
        mean: the mean ``mu``, shape ``(d,)``.
        precision: the precision matrix ``P`` (symmetric positive definite), default ``I``.
        covariance: alternatively the covariance ``P^{-1}``.
    """

    mean: Float[Array, " d"]
    tril: Float[Array, "d d"]
    log_diag: Float[Array, " d"]

    def __init__(self, mean: ArrayLike, precision: ArrayLike | None = None, *, covariance: ArrayLike | None = None):
        mean = np.asarray(mean, dtype=np.float64)
        if mean.ndim != 1:
            raise ValueError(f"GaussianEnergy(mean=...): expected shape (d,), got {mean.shape}")
        d = mean.shape[0]
        if precision is not None and covariance is not None:
            raise ValueError("GaussianEnergy: give precision or covariance, not both")
        if covariance is not None:
            precision = np.linalg.inv(np.asarray(covariance, dtype=np.float64))
        p = np.eye(d) if precision is None else np.asarray(precision, dtype=np.float64)
        if p.shape != (d, d):
            raise ValueError(f"GaussianEnergy(precision=...): expected shape ({d}, {d}), got {p.shape}")
        try:
            chol = np.linalg.cholesky(0.5 * (p + p.T))
        except np.linalg.LinAlgError as e:
            raise ValueError("GaussianEnergy(precision=...): must be symmetric positive definite") from e
        self.mean = jnp.asarray(mean, jnp.float32)
        self.tril = jnp.asarray(np.tril(chol, -1), jnp.float32)
        self.log_diag = jnp.asarray(np.log(np.diag(chol)), jnp.float32)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(mean=self.mean)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.mean.shape[0],)

    @property
    def cholesky(self) -> Float[Array, "d d"]:
        return jnp.tril(self.tril, -1) + jnp.diag(jnp.exp(self.log_diag))

    @property
    def precision(self) -> Float[Array, "d d"]:
        chol = self.cholesky
        return chol @ chol.T

    @property
    def covariance(self) -> Float[Array, "d d"]:
        return jnp.linalg.inv(self.precision)

    @property
    def log_z(self) -> Float[Array, ""]:
        d = self.mean.shape[0]
        return 0.5 * d * math.log(2 * math.pi) - jnp.sum(self.log_diag)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        z = self.cholesky.T @ (x - self.mean)
        return 0.5 * jnp.sum(z**2)
