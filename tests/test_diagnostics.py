"""ESS, R-hat and acceptance across chains: sample(return_diagnostics=True) and evaluate.diagnose."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.evaluate import SamplerWarning, diagnose
from declebm.inference import MALA
from declebm.models import GaussianEnergy


class TwoModes(eqx.Module):
    """Equal mixture of N(+-4 e_1, I) in 2-D: modes 8 apart, no small-step chain crosses."""

    def __call__(self, x):
        a = -0.5 * jnp.sum((x - jnp.array([4.0, 0.0])) ** 2)
        b = -0.5 * jnp.sum((x + jnp.array([4.0, 0.0])) ** 2)
        return -jnp.logaddexp(a, b)


def _gaussian():
    return eb.EBM(GaussianEnergy(jnp.zeros(2)))


def test_sample_diagnostics_same_positions_and_shapes():
    model = _gaussian()
    kw = dict(num_samples=4, num_steps=203, key=jax.random.key(0))
    x = eb.sample(model, MALA(step_size=1.0), **kw)
    x2, d = eb.sample(model, MALA(step_size=1.0), return_diagnostics=True, trace_every=10, **kw)
    np.testing.assert_allclose(x, x2, atol=1e-6)  # same keys, same chains
    assert isinstance(d, eb.ChainDiagnostics)
    assert d.trace.shape == (4, 20, 2) and d.acceptance_rate.shape == (203,)
    np.testing.assert_allclose(d.trace[:, -1], x2, atol=1e-6)
    assert d.ess.shape == (2,) and d.rhat.shape == (2,)
    assert np.all(np.asarray(d.rhat) < 1.1) and np.all(np.asarray(d.ess) > 20)


@pytest.mark.slow
def test_well_tuned_sampler_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerWarning)
        report = diagnose(_gaussian(), MALA(step_size=1.0), key=jax.random.key(1), num_chains=8, num_steps=400)
    assert report.ok, report.problems
    assert 0.6 < report.acceptance_rate < 0.97 and report.rhat_max < 1.05 and report.ess_min > 100
    assert abs(report.ksd) < 0.3  # 8 final positions: a noisy U-statistic, but of the model's own samples
    assert "no problem flagged" in str(report)


@pytest.mark.slow
def test_huge_step_is_flagged():
    # Step 50 on N(0, I): acceptance ~1e-8, chains never move after the first steps.
    with pytest.warns(SamplerWarning) as record:
        report = diagnose(_gaussian(), MALA(step_size=50.0), key=jax.random.key(2), num_chains=8, num_steps=400)
    text = " ".join(str(w.message) for w in record)
    assert "acceptance" in text and "R-hat" in text and "ESS" in text
    assert report.acceptance_rate < 0.05
    assert not report.rhat_max < 1.05  # huge or NaN
    assert report.ess_min < 10


def test_chains_in_separate_modes_are_flagged():
    # 4 chains per mode, a well-tuned step (acceptance ~0.88): the 8-nat barrier keeps each chain
    # in its mode for 400 steps, so acceptance is fine and R-hat is not.
    init = jnp.concatenate([jnp.tile(jnp.array([[4.0, 0.0]]), (4, 1)), jnp.tile(jnp.array([[-4.0, 0.0]]), (4, 1))])
    with pytest.warns(SamplerWarning, match="R-hat"):
        report = diagnose(eb.EBM(TwoModes(), event_shape=(2,)), MALA(step_size=1.0), key=jax.random.key(3),
                          num_chains=8, num_steps=400, init=init, compute_ksd=False)
    # rank normalisation bounds R-hat for fully separated chains near 1.7 here (4 vs 4 chains)
    assert report.diagnostics.rhat[0] > 1.5  # the coordinate separating the modes
    assert report.rhat_max > 1.05 and np.isnan(report.ksd)
    assert not any("acceptance" in p for p in report.problems)


def test_bad_input():
    model = _gaussian()
    with pytest.raises(ValueError, match="^trace_every"):
        eb.sample(model, MALA(step_size=1.0), num_samples=2, num_steps=20, key=jax.random.key(0),
                  return_diagnostics=True, trace_every=5)
    with pytest.raises(ValueError, match="^acceptance_band"):
        diagnose(model, MALA(step_size=1.0), key=jax.random.key(0), num_chains=2, num_steps=40,
                 acceptance_band=(0.9, 0.1))
    with pytest.raises(ValueError, match="^init"):
        diagnose(model, MALA(step_size=1.0), key=jax.random.key(0), num_chains=3, num_steps=40,
                 init=jnp.zeros((2, 2)))
