"""JEM through fit on labelled data: it learns, other strategies refuse labels, JEM refuses
unlabelled data and bad labels, and labelled runs checkpoint and resume exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
from declebm.inference import JEM, DenoisingScoreMatching, Langevin
from declebm.models import ClassifierEnergy, MLPClassifier, MLPEnergy


def blobs(n, key):
    """Two classes at (-2, 0) and (2, 0), std 0.5: the Bayes accuracy is Phi(4) = 0.99997."""
    y = jax.random.bernoulli(key, 0.5, (n,)).astype(jnp.int32)
    x = jax.random.normal(jax.random.fold_in(key, 1), (n, 2)) * 0.5 + jnp.stack([4.0 * y - 2.0, 0.0 * y], 1)
    return x, y


def model():
    return eb.EBM(ClassifierEnergy(MLPClassifier(2, 2, 16, 1, key=jax.random.key(0))))


OPTIMIZER = optax.adam(1e-2)
STRATEGY = JEM(Langevin(step_size=0.1, noise_scale=0.01), steps=3, buffer_size=64)


def _fit(data, num_steps=60, strategy=STRATEGY, **kwargs):
    return eb.fit(model(), data, strategy, num_steps=num_steps, batch_size=32, chunk_size=20, key=jax.random.key(1),
                  optimizer=OPTIMIZER, progress=False, divergence_guard=None, **kwargs)


def test_jem_learns_the_classes_and_runs_its_chains():
    x, y = blobs(256, jax.random.key(0))
    result = _fit((x, y))
    x_test, y_test = blobs(1000, jax.random.key(5))
    accuracy = np.mean(np.argmax(jax.vmap(result.model.energy_module.log_prob_y)(x_test), 1) == np.asarray(y_test))
    # A linear boundary at x0 = 0 scores 0.99997; 60 updates of a 16-unit MLP reach it to
    # within a few test points (1000 points: 0.98 allows 20 errors).
    assert accuracy >= 0.98, accuracy
    for k in ("cross_entropy", "accuracy", "energy_data", "energy_samples", "generative_loss"):
        assert np.all(np.isfinite(result.history[k])), k
    assert result.history["cross_entropy"][-1] < result.history["cross_entropy"][0]
    assert result.state.chains.shape == (64, 2)  # the replay buffer


def test_labels_are_refused_by_other_strategies_and_needed_by_jem():
    x, y = blobs(64, jax.random.key(0))
    with pytest.raises(ValueError, match="^data: DenoisingScoreMatching learns from examples alone.*JEM"):
        eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), (x, y), DenoisingScoreMatching(sigma=0.3),
               num_steps=2, batch_size=8, key=jax.random.key(1), progress=False)
    with pytest.raises(ValueError, match=r"^data: JEM trains on labelled data: pass a pair \(x, y\)"):
        _fit(x)
    with pytest.raises(ValueError, match="^data: x and y need a common leading axis"):
        _fit((x, y[:10]))
    with pytest.raises(ValueError, match=r"^data: labels must lie in \[0, 2\)"):
        _fit((x, y + 1))
    with pytest.raises(TypeError, match="^data: the labels y must be integers"):
        _fit((x, y.astype(jnp.float32)))
    with pytest.raises(TypeError, match="^model: JEM trains a classifier"):
        eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), (x, y), STRATEGY, num_steps=2, batch_size=8,
               key=jax.random.key(1), progress=False)


def test_a_labelled_run_resumes_exactly_and_refuses_other_labels(tmp_path):
    x, y = blobs(128, jax.random.key(0))
    whole = _fit((x, y), num_steps=40)
    _fit((x, y), num_steps=20, checkpoint_dir=tmp_path, checkpoint_every=20)
    resumed = _fit((x, y), num_steps=40, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 20
    for a, b in zip(jax.tree.leaves(whole.model), jax.tree.leaves(resumed.model)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="data"):
        _fit((x, 1 - y), num_steps=40, checkpoint_dir=tmp_path, resume=True)


def test_zero_generative_weight_is_the_plain_classifier():
    x, y = blobs(128, jax.random.key(0))
    result = _fit((x, y), num_steps=20, strategy=JEM(steps=3, buffer_size=64, generative_weight=0.0))
    assert set(result.history) == {"loss", "cross_entropy", "accuracy", "step", "time"}
    np.testing.assert_array_equal(result.history["loss"], result.history["cross_entropy"])
