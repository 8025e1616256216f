"""The log-weight summary every log Z estimate rests on (declebm/_estimator.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from declebm._estimator import summarise_log_weights


def test_summary_matches_the_formulas_and_ignores_non_finite_weights():
    w = jnp.array([0.0, 1.0, -2.0, jnp.nan, -jnp.inf], jnp.float32) + 500.0  # a shift that overflows exp
    log_mean, stderr, ess = summarise_log_weights(w)
    u = np.exp(np.array([0.0, 1.0, -2.0, 0.0, 0.0]) - 1.0) * np.array([1, 1, 1, 0, 0])
    np.testing.assert_allclose(log_mean, 501.0 + np.log(u.mean()), rtol=1e-6)
    np.testing.assert_allclose(stderr, u.std(ddof=1) / (np.sqrt(5) * u.mean()), rtol=1e-5)
    np.testing.assert_allclose(ess, u.sum() ** 2 / (u**2).sum(), rtol=1e-5)


def test_the_gradient_of_log_mean_exp_is_the_softmax():
    # the max shift is a constant: before it was, its one-hot added 1 to the largest weight's gradient
    w = jnp.array([0.0, 1.0, -0.5])
    g = jax.grad(lambda v: summarise_log_weights(v)[0])(w)
    np.testing.assert_allclose(g, jax.nn.softmax(w), rtol=1e-6)
