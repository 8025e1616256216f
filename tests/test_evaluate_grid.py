import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.models import GaussianEnergy, MLPEnergy


def test_grid_log_z_matches_gaussian_normaliser():
    g = GaussianEnergy(jnp.array([0.5, -0.3]), covariance=jnp.array([[0.8, 0.2], [0.2, 0.5]]))
    # The box holds > 1 - 1e-12 of the mass; midpoint rule error at h = 0.05 is ~1e-4 relative.
    np.testing.assert_allclose(eb.evaluate.grid_log_z(eb.EBM(g)), g.log_z, atol=2e-3)


def test_grid_log_z_1d():
    g = GaussianEnergy(jnp.array([0.0]), covariance=jnp.array([[0.3]]))
    np.testing.assert_allclose(eb.evaluate.grid_log_z(eb.EBM(g), resolution=400), g.log_z, atol=2e-3)


def test_grid_nll_of_true_density_is_its_entropy():
    # A model equal to the 8gaussians density (energy = -log p) has grid NLL = mean -log p(data).
    class TrueEnergy(eqx.Module):
        def __call__(self, x):
            return -eb.datasets.toy_log_prob("8gaussians", x)

    model = eb.EBM(TrueEnergy(), event_shape=(2,))
    x = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    expected = -float(jnp.mean(eb.datasets.toy_log_prob("8gaussians", x)))
    np.testing.assert_allclose(eb.evaluate.grid_nll(model, x), expected, atol=5e-3)


def test_grid_log_prob_is_normalised():
    m = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    axes, log_p = eb.evaluate.grid_log_prob(m, resolution=50)
    cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
    np.testing.assert_allclose(jnp.exp(log_p).sum() * cell, 1.0, rtol=1e-4)


def test_grid_bad_input():
    m3 = eb.EBM(MLPEnergy(3, 8, 1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="model"):
        eb.evaluate.grid_log_z(m3)
    m2 = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="bounds"):
        eb.evaluate.grid_log_z(m2, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="resolution"):
        eb.evaluate.grid_log_z(m2, resolution=0)
    with pytest.raises(ValueError, match="data"):
        eb.evaluate.grid_nll(m2, np.zeros((4, 3), np.float32))


class _HalfNaN(eqx.Module):
    """NaN on the half plane x0 > 0.5, a Gaussian elsewhere."""

    def __call__(self, x):
        return jnp.where(x[0] > 0.5, jnp.nan, 0.5 * jnp.sum(x**2))


class _HalfPlane(eqx.Module):
    """A valid hard constraint: +inf on x0 < 0 (zero density), a Gaussian elsewhere."""

    def __call__(self, x):
        return jnp.where(x[0] < 0, jnp.inf, 0.5 * jnp.sum(x**2))


def test_grid_refuses_a_nan_energy_and_accepts_an_infinite_one():
    x = jax.random.normal(jax.random.key(0), (100, 2))
    with pytest.raises(ValueError, match=r"^model: the energy is NaN at \d+ of \d+ grid points"):
        eb.evaluate.grid_nll(eb.EBM(_HalfNaN(), event_shape=(2,)), x)
    with pytest.raises(ValueError, match=r"^model: the energy is NaN"):
        eb.evaluate.grid_log_z(eb.EBM(_HalfNaN(), event_shape=(2,)), bounds=(-5, 5))
    # +inf: half of a standard normal, log Z = log(2 pi / 2)
    got = float(eb.evaluate.grid_log_z(eb.EBM(_HalfPlane(), event_shape=(2,)), bounds=(-6, 6), resolution=400))
    np.testing.assert_allclose(got, np.log(np.pi), atol=2e-3)
