"""SVGD (inference/_svgd.py): one interacting set of particles."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import SVGD, ParallelTempering

from .test_samplers import COV, MEAN, _model


def test_svgd_particles_match_gaussian_moments():
    """100 particles, 300 steps of 1.0 from N(0, I). The particles are a deterministic set,
    not independent draws, so the tolerance is not a Monte Carlo standard error: measured
    over starts 0-1 (step 0.5 and 1.0), the mean is within 0.01 and the covariance is
    *under*-estimated by 4-10% of each entry's scale, the known under-dispersion of
    finite-particle SVGD with the median bandwidth (Ba et al. 2021, "Understanding the
    variance collapse of SVGD in high dimensions"). Bands: 0.05 on the mean, 15% of
    sqrt(c_ii c_jj) on the covariance; a set without the repulsive term collapses to the
    mode (covariance ~0) and fails, as does one without the drift (mean stays at 0)."""
    x, info = eb.sample(_model(), SVGD(step_size=1.0), num_samples=100, num_steps=300, key=jax.random.key(0),
                        return_info=True)
    x = np.asarray(x, np.float64)
    assert np.all(np.abs(x.mean(0) - MEAN) < 0.05), x.mean(0)
    scale = np.sqrt(np.outer(np.diag(COV), np.diag(COV)))
    assert np.all(np.abs(np.cov(x.T) - COV) < 0.15 * scale), np.cov(x.T)
    np.testing.assert_array_equal(info.acceptance_rate, 1.0)
    assert info.mh_acceptance is None


def test_svgd_is_one_set_not_chains():
    model = _model()
    sampler = SVGD(0.5)
    assert not sampler.is_chain_kernel
    with pytest.raises(ValueError, match="^loc: SVGD moves one set of particles toward one target"):
        sampler.init(model, jnp.zeros((4, 2)), loc=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="^x: SVGD needs at least 2 particles"):
        sampler.init(model, jnp.zeros((1, 2)))
    with pytest.raises(TypeError, match="^kernel: SVGD has no one-chain kernel"):
        ParallelTempering(sampler, temperatures=[1.0, 2.0])
    with pytest.raises(ValueError, match="^step_size:"):
        SVGD(0.0)
    # The update is deterministic: the key is not used.
    x0 = jax.random.normal(jax.random.key(2), (8, 2))
    run = eqx.filter_jit(lambda k: sampler.run(model, x0, 3, k)[0])
    a, b = run(jax.random.key(0)), run(jax.random.key(1))
    np.testing.assert_array_equal(a, b)
