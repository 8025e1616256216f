"""ClassifierEnergy and MLPClassifier: E(x) = -logsumexp f(x), log p(y|x), save/load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.models import ClassifierEnergy, MLPClassifier


def test_energy_is_minus_logsumexp_of_the_logits_and_log_p_y_is_the_softmax():
    classifier = MLPClassifier(3, 4, 8, 1, key=jax.random.key(0))
    energy = ClassifierEnergy(classifier)
    model = eb.EBM(energy)
    assert model.event_shape == (3,)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    logits = jax.vmap(classifier)(x)
    np.testing.assert_allclose(model.energy_batch(x), -jax.scipy.special.logsumexp(logits, axis=1), rtol=1e-6)
    log_p = jax.vmap(energy.log_prob_y)(x)
    np.testing.assert_allclose(jnp.exp(log_p).sum(axis=1), 1.0, rtol=1e-6)
    # log p(x, y) = f(x)[y] - log Z splits as log p(y | x) + log p(x): f[y] = log p(y|x) - E(x)
    np.testing.assert_allclose(log_p - model.energy_batch(x)[:, None], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(energy.log_prob_of(x[0], 2), log_p[0, 2], rtol=1e-6)


def test_saved_and_loaded_without_a_template(tmp_path):
    model = eb.EBM(ClassifierEnergy(MLPClassifier(3, 4, 8, 2, key=jax.random.key(0))))
    eb.save(tmp_path / "jem.eqx", model)
    back = eb.load(tmp_path / "jem.eqx")
    x = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_array_equal(back.energy_batch(x), model.energy_batch(x))
    np.testing.assert_array_equal(jax.vmap(back.energy_module.log_prob_y)(x), jax.vmap(model.energy_module.log_prob_y)(x))


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="^classifier:"):
        ClassifierEnergy(lambda x: x)
    with pytest.raises(ValueError, match="^event_shape:"):
        ClassifierEnergy(MLPClassifier(3, 4, key=jax.random.key(0)), event_shape=(5,))
    with pytest.raises(ValueError, match="^num_classes:"):
        MLPClassifier(3, 1, key=jax.random.key(0))
    one_logit = ClassifierEnergy(jax.tree.map(lambda a: a, eb.models.MLPEnergy(3, 4, 1, key=jax.random.key(0)).mlp))
    with pytest.raises(ValueError, match="^classifier: expected a vector"):
        one_logit.logits(jnp.zeros(3))
