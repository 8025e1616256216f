"""Analytic energies whose normalised density is known, for tests and baselines."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from declebm._checks import check_array


def _floats(x, name):
    """Numbers (ints included) as a float array for ``check_array``; other things unchanged."""
    if isinstance(x, (list, tuple)) or (hasattr(x, "dtype") and np.issubdtype(np.asarray(x).dtype, np.integer)):
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected an array of numbers, got {x!r}") from e
    return x


class GaussianEnergy(eqx.Module):
    r"""The quadratic energy of a Gaussian, ``E(x) = 1/2 (x - mu)^T P (x - mu)``.

    The precision ``P = L L^T`` is parametrised by its Cholesky factor: a free strictly
    lower triangle and log-diagonal, so every parameter value is a valid Gaussian and
    gradient training cannot leave the family. ``exp(-E)`` integrates to
    ``log Z = d/2 log(2 pi) - 1/2 log det P``, exposed as ``log_z``; ``sample(key, n)``
    draws exactly from the normalised density.

    Arguments:
        mean: the mean ``mu``, shape ``(d,)``.
        precision: the precision matrix ``P`` (symmetric positive definite), default ``I``.
        covariance: alternatively the covariance ``P^{-1}``.
    """

    mean: Float[Array, " d"]
    tril: Float[Array, "d d"]
    log_diag: Float[Array, " d"]

    def __init__(self, mean: ArrayLike, precision: ArrayLike | None = None, *, covariance: ArrayLike | None = None):
        dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64
        mean = np.asarray(check_array(_floats(mean, "mean"), "mean", ndim=1, min_size=1), dtype=np.float64)
        d = mean.shape[0]
        if precision is not None and covariance is not None:
            raise ValueError("precision, covariance: give one of them, not both")
        name = "precision" if covariance is None else "covariance"
        given = precision if covariance is None else covariance
        if given is None:
            p = np.eye(d)
        else:
            m = np.asarray(check_array(_floats(given, name), name, shape=(d, d)), dtype=np.float64)
            if not np.allclose(m, m.T, rtol=1e-5, atol=1e-8):
                raise ValueError(f"{name}: expected a symmetric matrix")
            try:
                np.linalg.cholesky(m)
            except np.linalg.LinAlgError as e:
                raise ValueError(f"{name}: expected a symmetric positive definite matrix") from e
            p = np.linalg.inv(m) if covariance is not None else m
        try:
            chol = np.linalg.cholesky(0.5 * (p + p.T))
        except np.linalg.LinAlgError as e:
            raise ValueError(f"{name}: expected a symmetric positive definite matrix") from e
        self.mean = jnp.asarray(mean, dtype)
        self.tril = jnp.asarray(np.tril(chol, -1), dtype)
        self.log_diag = jnp.asarray(np.log(np.diag(chol)), dtype)

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

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Float[Array, "n d"]:
        """``num_samples`` exact draws of ``N(mu, P^{-1})``: ``mu + L^{-T} z``."""
        z = jax.random.normal(key, (num_samples, self.mean.shape[0]))
        return self.mean + jax.scipy.linalg.solve_triangular(self.cholesky.T, z.T, lower=False).T
