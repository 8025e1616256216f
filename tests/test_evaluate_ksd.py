"""Kernel Stein discrepancy: the Stein kernel is the IMQ formula, ~0 under the model, positive off it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.evaluate import ksd
from declebm.evaluate._ksd import _stein_kernel_matrix
from declebm.models import GaussianEnergy

COV = np.array([[1.0, 0.6, 0, 0, 0], [0.6, 1.0, 0, 0, 0], [0, 0, 2.0, 0, 0], [0, 0, 0, 0.5, 0], [0, 0, 0, 0, 1.0]])
MU = np.array([1.0, -1.0, 0.0, 0.5, 0.0])


def _model_and_draws(seed, n=400):
    model = eb.EBM(GaussianEnergy(MU, covariance=COV))
    z = jax.random.normal(jax.random.key(seed), (n, 5))
    return model, MU + z @ np.linalg.cholesky(COV).T


def test_stein_kernel_matches_autodiff():
    # k_p(x, y) = k s(x).s(y) + s(x).grad_y k + s(y).grad_x k + tr grad_x grad_y k, by autodiff.
    model, x = _model_and_draws(1, n=6)
    x = jnp.asarray(x, jnp.float32)

    def k(a, b):
        return (1.0 + jnp.sum((a - b) ** 2)) ** -0.5

    def kp(a, b):
        sa, sb = model.score(a), model.score(b)
        trace = jnp.trace(jax.jacfwd(jax.grad(k, 1), 0)(a, b))
        return k(a, b) * sa @ sb + sa @ jax.grad(k, 1)(a, b) + sb @ jax.grad(k, 0)(a, b) + trace

    brute = jax.vmap(lambda a: jax.vmap(lambda b: kp(a, b))(x))(x)
    fast = _stein_kernel_matrix(x, model.score_batch(x), jnp.float32(1.0), jnp.float32(-0.5))
    np.testing.assert_allclose(fast, brute, atol=1e-5, rtol=1e-5)


def test_near_zero_for_model_samples_and_positive_for_shifted():
    # Over seeds 0-9 (n = 400, this 5-D Gaussian) the U-statistic of exact draws lies in
    # [-0.0065, 0.0085] and that of draws shifted by 0.5 in one coordinate in [0.22, 0.34]:
    # 0.02 is ~2x the worst null value, 0.1 under half the smallest shifted one.
    for seed in (0, 1, 2):
        model, y = _model_and_draws(seed)
        assert abs(float(ksd(model, y))) < 0.02
        assert float(ksd(model, y + jnp.array([0.5, 0, 0, 0, 0]))) > 0.1
        v = float(ksd(model, y, statistic="v"))
        assert v > 0 and v > float(ksd(model, y))  # the V-statistic adds the positive diagonal


def test_mcmc_samples_of_the_model_score_like_exact_draws():
    # MALA chains of the model itself, started off it, after burn-in: as small as the null range above.
    model, _ = _model_and_draws(0)
    x = eb.sample(model, eb.inference.MALA(step_size=0.5), num_samples=400, num_steps=300, key=jax.random.key(3),
                  init=jnp.zeros((400, 5)) + 3.0)
    assert abs(float(ksd(model, x))) < 0.02


def test_bad_input():
    model, y = _model_and_draws(0, n=10)
    with pytest.raises(ValueError, match="^statistic"):
        ksd(model, y, statistic="w")
    with pytest.raises(ValueError, match="^beta"):
        ksd(model, y, beta=0.5)
    with pytest.raises(ValueError, match="^samples"):
        ksd(model, y[:, :3])
    with pytest.raises(ValueError, match="^samples"):
        ksd(model, y[:1])
    with pytest.raises(TypeError, match="^model"):
        ksd("nope", y)


def test_the_scores_are_one_compiled_program(programs_compiled):
    # ksd on a convolutional energy: the scores (a vmapped gradient) as one program, not op by
    # op (47 small programs for this energy, each compiled for the shape, before).
    from declebm.models import ConvEnergy

    model = eb.EBM(ConvEnergy((5, 5, 1), channels=(2,), key=jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (6, 5, 5, 1))
    with programs_compiled() as made:
        value = ksd(model, x)
    assert np.isfinite(float(value))
    assert len(made) <= 12, len(made)
