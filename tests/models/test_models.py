import jax
import jax.numpy as jnp
import numpy as np
import pytest

from declebm.models import GaussianEnergy, MLPEnergy


def test_mlp_energy_is_scalar_and_declares_shape():
    e = MLPEnergy(2, 32, 2, key=jax.random.key(0))
    assert e.event_shape == (2,)
    assert e(jnp.zeros(2)).shape == ()


@pytest.mark.parametrize("kw", [dict(in_size=0), dict(in_size=2, width=0), dict(in_size=2, depth=-1)])
def test_mlp_energy_bad_sizes(kw):
    with pytest.raises(ValueError):
        MLPEnergy(**kw, key=jax.random.key(0))


def test_gaussian_energy_round_trips_parameters_and_log_z():
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.2], [0.0, 0.2, 0.5]])
    g = GaussianEnergy(np.array([1.0, 2.0, 3.0]), covariance=cov)
    np.testing.assert_allclose(g.covariance, cov, rtol=1e-4, atol=1e-5)
    _, logdet = np.linalg.slogdet(cov)
    np.testing.assert_allclose(g.log_z, 0.5 * 3 * np.log(2 * np.pi) + 0.5 * logdet, rtol=1e-5)
    np.testing.assert_allclose(g(g.mean), 0.0, atol=1e-6)


def test_gaussian_energy_bad_input():
    with pytest.raises(ValueError, match="mean"):
        GaussianEnergy(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="precision"):
        GaussianEnergy(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="precision"):
        GaussianEnergy(np.zeros(2), np.eye(3))
