import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from declebm.models import LearnableSwish, MLPEnergy


def test_learnable_swish_is_x_sigmoid_beta_x_with_a_beta_per_unit():
    act = LearnableSwish(2.0)
    x = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(act(x), x * jax.nn.sigmoid(2.0 * x), rtol=1e-6)
    energy = MLPEnergy(2, 8, 2, activation=LearnableSwish(), key=jax.random.key(0))
    # equinox copies the activation to every hidden unit of every layer: one beta each, started at 1.
    assert energy.mlp.activation.beta.shape == (2, 8)
    np.testing.assert_array_equal(energy.mlp.activation.beta, 1.0)
    # At beta = 1 it is SiLU, and beta gets a gradient.
    silu = MLPEnergy(2, 8, 2, key=jax.random.key(0))
    np.testing.assert_allclose(energy(jnp.ones(2)), silu(jnp.ones(2)), rtol=1e-6)
    g = eqx.filter_grad(lambda e: e(jnp.array([0.5, -1.0])))(energy)
    assert float(jnp.sum(jnp.abs(g.mlp.activation.beta))) > 0
