"""UnderdampedLangevin and MCLMC (inference/_dynamics.py) on a correlated Gaussian."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import MCLMC, UnderdampedLangevin
from declebm.models import GaussianEnergy

from .test_samplers import COV, MEAN, N, _check_moments, _model


def test_underdamped_langevin_matches_gaussian_moments():
    # OBABO's stationary variance along a direction of curvature w^2 is s^2 / (1 - h^2 w^2 / 4):
    # 2.9% too wide along the stiffest direction here (h = 0.3, w^2 = 1 / 0.79), 0.02 in
    # absolute terms, far inside the 5-standard-error band (0.16 for the variance of 2000 draws).
    # 150 steps (45 time units, friction 1) relax the N(0, I) start by e^-20. Measured over seeds
    # 0-2: every moment within 3.1 standard errors.
    x, info = eb.sample(_model(), UnderdampedLangevin(step_size=0.3, friction=1.0), num_samples=N, num_steps=150,
                        key=jax.random.key(0), return_info=True)
    _check_moments(x, MEAN, COV)
    np.testing.assert_array_equal(info.acceptance_rate, 1.0)
    # The leapfrog's energy error is small at this step: GHMC would accept ~99.7% (measured).
    assert float(jnp.mean(info.mh_acceptance)) > 0.98


def test_underdamped_langevin_draws_its_momentum_and_reports_divergence():
    model = _model()
    step = eqx.filter_jit(lambda s, m, st, k: s.step(m, st, k))  # step sizes are traced: one compile
    start = UnderdampedLangevin(0.3).init(model, jnp.zeros((8, 2)))
    assert np.all(np.asarray(start.momentum) == 0)  # init has no key; the first step draws it
    state, info = step(UnderdampedLangevin(0.3), model, start, jax.random.key(0))
    assert np.all(np.asarray(state.momentum) != 0) and not np.any(info.is_divergent)
    # A step far past the leapfrog's stability limit (2 / w = 1.8) diverges at once.
    _, info = step(UnderdampedLangevin(1e4), model, start, jax.random.key(1))
    assert np.all(info.is_divergent)


@pytest.mark.slow
def test_mclmc_tuned_by_sample_matches_gaussian_moments():
    # sample() tunes L and the step with BlackJAX's mclmc_find_L_and_step_size on one chain,
    # then runs 200 steps of 2000 chains. MCLMC is unadjusted; its bias at the tuned energy
    # error (5e-4 per dimension) is far below the 5-standard-error band. Measured (seeds 0-2,
    # hand-set L = 2, step 0.5): within 3 standard errors.
    sampler = MCLMC(tuning_steps=500)
    assert sampler.needs_tuning
    x, info = eb.sample(_model(), sampler, num_samples=N, num_steps=200, key=jax.random.key(0), return_info=True)
    _check_moments(x, MEAN, COV)
    assert info.mh_acceptance is None and not np.any(info.is_divergent)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: MCLMC(L=1.0), ValueError, "^L: give both L and step_size"),
        (lambda: MCLMC(step_size=0.1), ValueError, "^L: give both"),
        (lambda: MCLMC(L=-1.0, step_size=0.1), ValueError, "^L:"),
        (lambda: MCLMC(L=1.0, step_size=0.0), ValueError, "^step_size:"),
        (lambda: MCLMC(tuning_steps=0), ValueError, "^tuning_steps:"),
        (lambda: MCLMC(diagonal_preconditioning="yes"), TypeError, "^diagonal_preconditioning:"),
        (lambda: MCLMC(L=1.0, step_size=0.1, inverse_mass_matrix=np.eye(2)), ValueError, "^inverse_mass_matrix:"),
        (lambda: UnderdampedLangevin(0.1, friction=0.0), ValueError, "^friction:"),
        (lambda: UnderdampedLangevin(-0.1), ValueError, "^step_size:"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_mclmc_refuses_untuned_runs_and_one_dimensional_targets():
    with pytest.raises(ValueError, match="^L: this MCLMC has no L and step_size yet"):
        MCLMC().run(_model(), jnp.zeros((4, 2)), 2, jax.random.key(0))
    one_d = eb.EBM(GaussianEnergy(np.zeros(1)))
    with pytest.raises(ValueError, match=r"^x: MCLMC needs examples of at least 2 numbers"):
        MCLMC(L=1.0, step_size=0.1).run(one_d, jnp.zeros((4, 1)), 2, jax.random.key(0))
