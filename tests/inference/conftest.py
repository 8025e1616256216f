"""Shared test problems for the inference tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _gaussian_problem(dim, seed, num_examples=4096):
    """A correlated Gaussian with covariance eigenvalues in [0.5, 2] and mean in [-1, 1]^d:
    ``(data, key)`` with ``data`` of shape ``(num_examples, dim)`` and a key for fitting."""
    rng = np.random.default_rng(dim)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.linspace(0.5, 2.0, dim)) @ q.T
    mu = rng.uniform(-1.0, 1.0, size=dim)
    k_data, k_fit = jax.random.split(jax.random.key(seed))
    chol = jnp.asarray(np.linalg.cholesky(cov).T, jnp.float32)
    data = jnp.asarray(mu, jnp.float32) + jax.random.normal(k_data, (num_examples, dim)) @ chol
    return data, k_fit


@pytest.fixture
def gaussian_problem():
    return _gaussian_problem
