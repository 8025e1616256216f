"""GaussianBase: a learnable base density, trained with the energy by every strategy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import declebm as eb
from declebm._ebm import trainable_filter
from declebm.inference import MALA, NCE, DenoisingScoreMatching, PersistentCD


class ZeroEnergy(eqx.Module):
    """E = 0: the model is its base, so training must move the base to the data."""

    def __call__(self, x):
        return 0.0 * jnp.sum(x)


def test_log_prob_sample_and_from_data():
    base = eb.GaussianBase(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0]))
    x = jnp.array([0.3, 0.7])
    ref = dist.Normal(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])).log_prob(x)
    np.testing.assert_allclose(base.log_prob(x), ref, rtol=1e-6)
    draws = base.sample(jax.random.key(0), (4000,))
    assert draws.shape == (4000, 2)
    fitted = eb.GaussianBase.from_data(draws)
    # 4000 draws: standard errors 0.008 and 0.03 for the means; 5 standard errors allowed.
    np.testing.assert_allclose(fitted.loc, [1.0, -2.0], atol=0.15)
    np.testing.assert_allclose(fitted.scale, [0.5, 2.0], rtol=0.05)
    with pytest.raises(ValueError, match="^scale"):
        eb.GaussianBase(jnp.zeros(2), jnp.array([1.0, 0.0]))


def test_gaussian_base_is_trainable_numpyro_base_is_not():
    m = eb.EBM(ZeroEnergy(), base=eb.GaussianBase(jnp.zeros(2)), event_shape=(2,))
    assert all(jax.tree.leaves(trainable_filter(m).base))
    m = eb.EBM(ZeroEnergy(), base=dist.Normal(jnp.zeros(2), 1.0), event_shape=(2,))
    assert not any(jax.tree.leaves(trainable_filter(m).base))


MEAN, STD = np.array([1.5, -1.0]), np.array([0.5, 1.5])


@pytest.mark.parametrize(
    "strategy",
    [PersistentCD(MALA(0.1), steps=5), DenoisingScoreMatching(sigma=0.1), NCE()],
    ids=["pcd", "dsm", "nce"],
)
def test_learnable_base_trains_under_every_family(strategy):
    data = MEAN + STD * jax.random.normal(jax.random.key(0), (4096, 2))
    model = eb.EBM(ZeroEnergy(), base=eb.GaussianBase(jnp.zeros(2), jnp.ones(2)), event_shape=(2,))
    result = eb.fit(model, data, strategy, num_steps=400, batch_size=256, key=jax.random.key(1),
                    optimizer=optax.adam(optax.piecewise_constant_schedule(3e-2, {300: 0.1})), progress=False)
    base = result.model.base
    # Started 1.5 and 1.0 away (mean) and at scale 1; each family's optimum is the data's
    # Gaussian (DSM: std inflated by sqrt(1 + 0.01/std^2), < 2%). Worst over data seeds
    # 0-3, all three strategies: 0.065 on the mean, 6.6% on the scale; the bounds are
    # ~2.3x that.
    np.testing.assert_allclose(base.loc, MEAN, atol=0.15)
    np.testing.assert_allclose(base.scale, STD, rtol=0.15)
