"""MixtureEnergy: its log Z against quadrature, one component = GaussianEnergy, exact draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.models import GaussianEnergy, MixtureEnergy

MEANS = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
COVS = np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.5]], [[0.3, 0.1], [0.1, 0.2]]])
WEIGHTS = np.array([1.0, 2.0, 3.0])


def test_log_z_matches_quadrature():
    mix = MixtureEnergy(MEANS, covariances=COVS, weights=WEIGHTS)
    grid = eb.evaluate.grid_log_z(eb.EBM(mix), bounds=(-10.0, 10.0), resolution=500)
    assert float(mix.log_z) == pytest.approx(float(grid), abs=1e-3)  # midpoint rule, smooth density


def test_normalised_density_is_the_mixture():
    mix = MixtureEnergy(MEANS, covariances=COVS, weights=WEIGHTS)
    x = jnp.array([0.4, -1.2])
    pi = WEIGHTS / WEIGHTS.sum()
    dens = sum(
        p * np.exp(-0.5 * (x - m) @ np.linalg.inv(c) @ (x - m)) / (2 * np.pi * np.sqrt(np.linalg.det(c)))
        for p, m, c in zip(pi, MEANS, COVS)
    )
    assert float(mix.log_prob(x)) == pytest.approx(float(np.log(dens)), abs=1e-5)


def test_one_component_is_gaussian_energy():
    cov = COVS[0]
    mix = MixtureEnergy(MEANS[:1], covariances=COVS[:1])
    gauss = GaussianEnergy(MEANS[0], covariance=cov)
    x = jnp.array([0.7, 0.1])
    assert float(mix(x)) == pytest.approx(float(gauss(x)), abs=1e-5)
    assert float(mix.log_z) == pytest.approx(float(gauss.log_z), abs=1e-5)


def test_stds_forms_agree():
    a = MixtureEnergy(MEANS, stds=0.5)
    b = MixtureEnergy(MEANS, stds=np.full(3, 0.5))
    c = MixtureEnergy(MEANS, covariances=np.stack([0.25 * np.eye(2)] * 3))
    x = jnp.array([1.0, 2.0])
    assert float(a(x)) == pytest.approx(float(b(x))) == pytest.approx(float(c(x)))
    assert a.event_shape == (2,)


def test_sample_moments():
    """Mean and covariance of 200k exact draws against the mixture's (tolerances ~5x the
    Monte Carlo standard error, about 0.01 for the mean and 0.03 for the covariance)."""
    mix = MixtureEnergy(MEANS, covariances=COVS, weights=WEIGHTS)
    x = np.asarray(mix.sample(jax.random.key(0), 200_000))
    pi = WEIGHTS / WEIGHTS.sum()
    mean = (pi[:, None] * MEANS).sum(0)
    second = sum(p * (c + np.outer(m, m)) for p, m, c in zip(pi, MEANS, COVS))
    assert np.allclose(x.mean(0), mean, atol=0.03)
    assert np.allclose(np.cov(x.T), second - np.outer(mean, mean), atol=0.1)


def test_gaussian_energy_sample_moments():
    gauss = GaussianEnergy(MEANS[0], covariance=COVS[0])
    x = np.asarray(gauss.sample(jax.random.key(1), 100_000))
    assert np.allclose(x.mean(0), MEANS[0], atol=0.03) and np.allclose(np.cov(x.T), COVS[0], atol=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"means": np.zeros(3)}, "^means: "),
        ({"means": MEANS, "stds": -1.0}, "^stds: "),
        ({"means": MEANS, "stds": np.ones(4)}, "^stds: "),
        ({"means": MEANS, "covariances": np.ones((3, 2, 2))}, "^covariances: "),
        ({"means": MEANS, "covariances": np.ones((2, 2, 2))}, "^covariances: "),
        ({"means": MEANS, "weights": [1.0, -1.0, 1.0]}, "^weights: "),
        ({"means": MEANS, "weights": [1.0, 1.0]}, "^weights: "),
        ({"means": MEANS, "stds": 1.0, "covariances": COVS}, "^stds: "),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixtureEnergy(**kwargs)
