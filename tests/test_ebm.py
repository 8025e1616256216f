import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import declebm as eb
from declebm.models import GaussianEnergy, MLPEnergy


def test_sign_convention_and_score():
    g = GaussianEnergy(jnp.array([1.0, -1.0]), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    m = eb.EBM(g)
    x = jnp.array([0.5, 0.2])
    assert m.event_shape == (2,)
    np.testing.assert_allclose(m.log_prob_unnorm(x), -g(x), rtol=1e-6)
    # score of a Gaussian: -P (x - mu)
    np.testing.assert_allclose(m.score(x), -g.precision @ (x - g.mean), rtol=1e-5)


def test_batched_helpers_map_leading_axes():
    m = eb.EBM(MLPEnergy(3, 16, 1, key=jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    e = m.energy_batch(x)
    assert e.shape == (4, 5)
    # batched and single evaluation sum in different orders: float32 rounding of O(1) terms
    np.testing.assert_allclose(e[2, 3], m.energy(x[2, 3]), rtol=1e-5, atol=1e-6)
    assert m.score_batch(x).shape == (4, 5, 3)
    assert m.log_prob_unnorm_batch(x).shape == (4, 5)


def test_base_density_is_added_and_not_trained():
    base = dist.Normal(jnp.zeros(2), 2.0 * jnp.ones(2)).to_event(1)
    m = eb.EBM(GaussianEnergy(jnp.zeros(2)), base=base)
    x = jnp.array([0.3, -0.7])
    np.testing.assert_allclose(m.log_prob_unnorm(x), -m.energy(x) + base.log_prob(x), rtol=1e-6)
    spec = eb._ebm.trainable_filter(m)
    assert not any(jax.tree.leaves(spec.base))
    assert spec.inverse_temperature is False and spec.log_z is True


def test_tempered_scales_log_density():
    m = eb.EBM(GaussianEnergy(jnp.zeros(2)))
    x = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(m.tempered(2.0).log_prob_unnorm(x), 0.5 * m.log_prob_unnorm(x), rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        m.tempered(0.0)


def test_log_prob_uses_log_z():
    m = eb.EBM(GaussianEnergy(jnp.zeros(2)), log_z=1.5)
    x = jnp.ones(2)
    np.testing.assert_allclose(m.log_prob(x), m.log_prob_unnorm(x) - 1.5, rtol=1e-6)


def test_numpyro_bridge_nuts_samples_the_model():
    # numpyro's NUTS on potential_fn reproduces the Gaussian's moments.
    g = GaussianEnergy(jnp.array([1.0, -2.0]), covariance=jnp.array([[1.0, 0.5], [0.5, 2.0]]))
    m = eb.EBM(g)
    mcmc = numpyro.infer.MCMC(
        numpyro.infer.NUTS(potential_fn=m.potential_fn), num_warmup=300, num_samples=2000, progress_bar=False
    )
    mcmc.run(jax.random.key(0), init_params=jnp.zeros(2))
    x = np.asarray(mcmc.get_samples())
    # 2000 correlated draws, effective sample size >~ 500: mean s.e. <= sqrt(2/500) = 0.063; 5 s.e.
    np.testing.assert_allclose(x.mean(0), [1.0, -2.0], atol=0.32)


def test_energy_must_be_callable_and_base_must_have_log_prob():
    with pytest.raises(TypeError, match="energy"):
        eb.EBM(3.0)
    with pytest.raises(TypeError, match="base"):
        eb.EBM(GaussianEnergy(jnp.zeros(2)), base=object())


def test_event_shape_conflict():
    with pytest.raises(ValueError, match="event_shape"):
        eb.EBM(GaussianEnergy(jnp.zeros(2)), event_shape=(3,))


class _VectorEnergy(eqx.Module):
    def __call__(self, x):
        return x  # not a scalar


def test_non_scalar_energy_is_refused():
    with pytest.raises(TypeError, match="energy: must return a scalar"):
        eb._ebm.check_energy(eb.EBM(_VectorEnergy()), (2,))


# ---- issue 19, item 11: examples of the wrong shape get a clear error ---------------------


@pytest.mark.parametrize("method", ["energy_batch", "log_prob_unnorm_batch", "score_batch"])
def test_batched_helpers_refuse_examples_of_another_shape(method):
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"^x: the examples have shape \(3,\), the model expects \(2,\)"):
        getattr(model, method)(jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"^x: expected an array of shape \(\*batch, 2\)"):
        getattr(model, method)(jnp.ones(()))
    # inside jit the check is the same (shapes are static)
    with pytest.raises(ValueError, match=r"^x: the examples have shape \(3,\)"):
        eqx.filter_jit(getattr(model, method))(jnp.ones((5, 3)))
    assert getattr(model, method)(jnp.ones((4, 5, 2))).shape[:2] == (4, 5)
