"""ParallelTempering and AnnealedLangevin (inference/_tempering.py)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import MALA, SVGD, AnnealedLangevin, Langevin, ParallelTempering, UnderdampedLangevin
from declebm.models import MixtureEnergy

from .test_samplers import COV, MEAN, N, _check_moments, _model

# Two modes 6 apart with std 0.5: the density between them is e^-18 of the peaks, so a
# MALA chain never crosses in a test's length. Weights 0.3 (left) and 0.7 (right).
WEIGHTS = (0.3, 0.7)
TEMPERATURES = np.geomspace(1.0, 25.0, 4)  # at T = 25 the barrier is 0.72 nats


def _two_modes():
    return eb.EBM(MixtureEnergy([[-3.0, 0.0], [3.0, 0.0]], stds=0.5, weights=list(WEIGHTS)))


def _left_start(n):
    return jnp.tile(jnp.array([[-3.0, 0.0]]), (n, 1))


def test_a_mala_chain_stays_in_the_mode_it_starts_in():
    """The first half of the comparison: without tempering, chains started in the light
    left mode never reach the right one."""
    x = eb.sample(_two_modes(), MALA(0.3), init=_left_start(N), num_steps=150, key=jax.random.key(0))
    assert float(jnp.mean(x[:, 0] > 0)) == 0.0


def test_parallel_tempering_finds_both_modes_with_their_weights():
    """The second half: the same MALA inside parallel tempering (4 temperatures, MALA's step
    0.3 T at temperature T), the same start and number of steps. The right mode's weight is
    estimated from 2000 independent chains: standard error sqrt(0.21 / 2000) = 0.010, so the
    0.05 band is 4.9 standard errors. Measured over seeds 0-1: 0.708 and 0.687 (0.691 and
    0.688 with 6 temperatures and 300 steps)."""
    sampler = ParallelTempering([MALA(0.3 * t) for t in TEMPERATURES], temperatures=TEMPERATURES)
    x, info = eb.sample(_two_modes(), sampler, init=_left_start(N), num_steps=150, key=jax.random.key(0),
                        return_info=True)
    right = float(jnp.mean(x[:, 0] > 0))
    assert abs(right - WEIGHTS[1]) < 0.05 and abs((1 - right) - WEIGHTS[0]) < 0.05, right
    # Swap acceptance per adjacent pair and step; measured 0.49-0.55.
    assert info.swap_acceptance.shape == (150, 3)
    assert np.all((np.asarray(info.swap_acceptance) > 0.2) & (np.asarray(info.swap_acceptance) <= 1.0))
    # acceptance_rate is the cold replica's MALA acceptance.
    assert 0.5 < float(jnp.mean(info.acceptance_rate)) <= 1.0


@pytest.mark.slow
def test_parallel_tempering_samples_the_target_at_temperature_one():
    """On the correlated Gaussian, the cold replica's moments are the target's (5 standard
    errors of 2000 chains, as for the plain samplers), with a kernel that caches nothing
    (Langevin: swapped replicas are re-initialised) and one with momentum (kept across swaps,
    cached log density rescaled). Both are unadjusted with small steps; their biases are
    far inside the band (see test_samplers and test_dynamics)."""
    for kernel, steps in [(Langevin(0.05), 600), (UnderdampedLangevin(0.3), 150)]:
        sampler = ParallelTempering(kernel, temperatures=[1.0, 2.0, 4.0])
        x, info = eb.sample(_model(), sampler, num_samples=N, num_steps=steps, key=jax.random.key(1),
                            return_info=True)
        _check_moments(x, MEAN, COV)
        assert info.swap_acceptance.shape == (steps, 2)


def test_parallel_tempering_state_and_swaps_keep_the_caches_consistent():
    """After a step, every replica's cached log density is its own tempered log density: the
    swap rescaled the states it moved."""
    model = _two_modes()
    sampler = ParallelTempering(MALA(0.3), temperatures=[1.0, 3.0, 9.0])
    state = eqx.filter_jit(sampler.init)(model, _left_start(64))
    assert state.replicas.position.shape == (64, 3, 2) and state.position.shape == (64, 2)
    state, info = eqx.filter_jit(sampler.scan_steps)(model, state, jax.random.split(jax.random.key(0), 20))
    log_p = jax.vmap(jax.vmap(model.log_prob_unnorm))(state.replicas.position)
    np.testing.assert_allclose(state.replicas.logdensity, log_p / np.array([1.0, 3.0, 9.0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(state.position, state.replicas.position[:, 0])


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: ParallelTempering(MALA(0.1), temperatures=[2.0, 4.0]), ValueError,
         "^temperatures: the ladder must start at 1"),
        (lambda: ParallelTempering(MALA(0.1), temperatures=[1.0, 3.0, 2.0]), ValueError,
         "^temperatures: must be strictly increasing, got 3 then 2"),
        (lambda: ParallelTempering(MALA(0.1), temperatures=[1.0, 1.0]), ValueError, "^temperatures: must be strictly"),
        (lambda: ParallelTempering(MALA(0.1), temperatures=[1.0]), ValueError, "^temperatures:"),
        (lambda: ParallelTempering(MALA(0.1), temperatures=[[1.0, 2.0]]), ValueError, "^temperatures:"),
        (lambda: ParallelTempering(MALA(0.1), temperatures=[1.0, np.inf]), ValueError, "^temperatures:"),
        (lambda: ParallelTempering("mala", temperatures=[1.0, 2.0]), TypeError, "^kernel: expected a declebm sampler"),
        (lambda: ParallelTempering([MALA(0.1)], temperatures=[1.0, 2.0]), ValueError, "^kernel: a list of kernels needs"),
        (lambda: ParallelTempering([MALA(0.1), Langevin(0.1)], temperatures=[1.0, 2.0]), ValueError,
         "^kernel: the kernels of the temperatures must be one sampler type"),
        (lambda: ParallelTempering(ParallelTempering(MALA(0.1), temperatures=[1.0, 2.0]), temperatures=[1.0, 2.0]),
         TypeError, "^kernel: ParallelTempering has no one-chain kernel"),
        (lambda: ParallelTempering(SVGD(0.1), temperatures=[1.0, 2.0]), TypeError, "^kernel: SVGD"),
        (lambda: AnnealedLangevin([0.1, 1.0], step_size=1e-3), ValueError, "^sigmas: must be strictly decreasing"),
        (lambda: AnnealedLangevin([1.0, -0.1], step_size=1e-3), ValueError, "^sigmas: every noise level must be > 0"),
        (lambda: AnnealedLangevin([1.0, 0.1], step_size=0.0), ValueError, "^step_size:"),
        (lambda: AnnealedLangevin([1.0, 0.1], step_size=1e-3, steps_per_level=0), ValueError, "^steps_per_level:"),
        (lambda: AnnealedLangevin([1.0, 0.1], step_size=1e-3, level_name="not a name"), TypeError, "^level_name:"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


class _SmoothedGaussian(eqx.Module):
    """``N(MEAN, COV)`` convolved with ``N(0, sigma^2 I)``: the exact noise-conditioned
    density that a perfectly trained NCSN energy represents, ``E(x, sigma)``."""

    event_shape = (2,)

    def __call__(self, x, sigma=0.01):
        cov = jnp.asarray(COV, x.dtype) + sigma**2 * jnp.eye(2, dtype=x.dtype)
        d = x - jnp.asarray(MEAN, x.dtype)
        return 0.5 * d @ jnp.linalg.solve(cov, d)


def test_annealed_langevin_ends_at_the_smallest_noise_level():
    """Song & Ermon's schedule (7 levels 2 -> 0.01, alpha_i = eps sigma_i^2 / sigma_L^2, so
    steps 12 -> 3e-4) on the exact smoothed Gaussian: after the last level the chains sample
    N(MEAN, COV + 0.01^2 I), within 5 standard errors of 2000 chains. What is left of the
    wider levels above is small: the level at sigma = 0.14 relaxes its 0.02 excess variance
    over 50 steps of 0.059 by e^-2.7, the last levels keep it (measured over seeds 0-2:
    covariance excess 0.02-0.06, at most 1.8 standard errors). The first level's step 12 is
    below ULA's stability limit there (4 x its smallest variance, 4.8)."""
    sigmas = np.geomspace(2.0, 0.01, 7)
    sampler = AnnealedLangevin(sigmas, step_size=3e-4, steps_per_level=50)
    assert sampler.num_steps == 350
    model = eb.EBM(_SmoothedGaussian())
    x, info = eb.sample(model, sampler, num_samples=N, num_steps=sampler.num_steps, key=jax.random.key(0),
                        return_info=True)
    _check_moments(x, MEAN, COV)
    np.testing.assert_array_equal(info.acceptance_rate, 1.0)
    with pytest.raises(ValueError, match="^sigma: AnnealedLangevin sets the noise level itself"):
        sampler.init(model, jnp.zeros((4, 2)), sigma=0.1)
