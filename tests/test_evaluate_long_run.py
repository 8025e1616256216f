"""The long-run diagnosis flags a model whose long chains leave the data, and passes a correct one."""

import jax
import numpy as np
import pytest

import declebm as eb
from declebm.evaluate import long_run
from declebm.inference import Langevin
from declebm.models import GaussianEnergy

MEAN = np.array([1.0, -1.0])
COV = np.array([[1.0, 0.6], [0.6, 0.8]])
LENGTHS = (5, 50, 500)
SAMPLER = Langevin(step_size=0.01)


def _gaussian(n, seed):
    return np.asarray(jax.random.multivariate_normal(jax.random.key(seed), MEAN, COV, (n,)), np.float32)


@pytest.fixture(scope="module")
def data():
    return _gaussian(4000, 0), _gaussian(2000, 1)


def _report(model, data, seed=2):
    train, held_out = data
    return long_run(model, SAMPLER, data=train, reference=held_out, key=jax.random.key(seed),
                    chain_lengths=LENGTHS, num_chains=400)


@pytest.mark.slow
def test_passes_the_data_density(data):
    # The data's own Gaussian: chains from data stay at the data, chains from noise (the
    # fitted diagonal Gaussian) converge to it. Langevin's step-size bias at eps = 0.01 is
    # a 0.3% variance error, invisible at 400 chains.
    report = _report(eb.EBM(GaussianEnergy(MEAN, covariance=COV)), data)
    assert not report.drifts, str(report)
    # Long-run MMD within the data-vs-data noise level (mean + 3 sd over 10 draws).
    assert report.mmd_from_data[-1] < report.mmd_null_level
    assert report.mmd_from_noise[-1] < report.mmd_null_level
    # Mean energy of long-run samples matches the held-out data's (E = chi^2_2 / 2: mean 1,
    # sd 1, so the mean of 400 has s.e. 0.05; 0.25 is 5 s.e.).
    assert abs(report.energy_from_data[-1] - report.energy_reference) < 0.25
    assert "stable" in str(report)


@pytest.mark.slow
def test_detects_a_density_whose_long_run_samples_drift(data):
    # The density is the data's Gaussian shifted by 1.5 along x1 (1.5 marginal sd). Five
    # steps of size 0.01 from the data move chains by ~0.1 (drift (eps/2) P (x - mu') ~
    # 0.017 a step), so short-run samples look like data; 500 steps (relaxation time
    # 1 / ((eps/2) lambda_min(P)) = 300 steps) go most of the way to the wrong density.
    wrong = eb.EBM(GaussianEnergy(MEAN + np.array([1.5, 0.0]), covariance=COV))
    report = _report(wrong, data)
    assert report.drifts, str(report)
    assert report.drift_score > 10.0
    # Short chains from data are still data-like (MMD^2 0.002 against 0.24 at 500 steps on
    # seeds 2 and 3; the MMD^2 sd at 400 chains is ~0.001); long ones are not.
    assert report.mmd_from_data[0] < 0.01
    assert report.mmd_from_data[-1] > 0.1
    assert report.mmd_from_data[-1] > 10 * report.mmd_null_level
    # ... and have lower model energy than the data: the mass is elsewhere.
    assert report.energy_from_data[-1] < report.energy_reference - 1.0
    assert report.samples_from_data.shape == (3, 400, 2)
    assert "DRIFTS" in str(report) and "| 500 |" in report.table()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"chain_lengths": (0, 10)}, "chain_lengths"),
        ({"chain_lengths": ()}, "chain_lengths"),
        ({"chain_lengths": (2.5,)}, "chain_lengths"),
        ({"num_chains": 1}, "num_chains"),
        ({"noise": "laplace"}, "noise"),
        ({"reference": np.zeros((10, 3), np.float32)}, "reference"),
        ({"sampler": "langevin"}, "sampler"),
    ],
)
def test_bad_input(kwargs, match):
    model = eb.EBM(GaussianEnergy(MEAN, covariance=COV))
    args = dict(sampler=SAMPLER, data=_gaussian(50, 0), reference=_gaussian(50, 1), key=jax.random.key(0),
                chain_lengths=(5, 10), num_chains=10)
    args.update(kwargs)
    sampler = args.pop("sampler")
    with pytest.raises((ValueError, TypeError), match=match):
        long_run(model, sampler, **args)
