"""Score matching strategies: exact, sliced and denoising (statistical, seeded)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
from declebm.inference import DenoisingScoreMatching, ExactScoreMatching, SlicedScoreMatching
from declebm.models import GaussianEnergy, MLPEnergy

BATCH, STEPS = 256, 400
DSM_SIGMA = 0.5


def fit_gaussian_energy(strategy, data, key):
    """Train a GaussianEnergy started at N(0, I) (log_z at its true value, which only NCE reads)."""
    e0 = GaussianEnergy(jnp.zeros(data.shape[1]))
    opt = optax.adam(optax.exponential_decay(5e-2, STEPS, 0.02))
    result = eb.fit(eb.EBM(e0, log_z=e0.log_z), data, strategy, num_steps=STEPS, batch_size=BATCH,
                    key=key, optimizer=opt, progress=False, chunk_size=STEPS)
    return result.model


def sample_moments(data):
    x = np.asarray(data, np.float64)
    return x.mean(0), np.cov(x.T, bias=True)


# For a Gaussian model on any data set the population optimum of exact, sliced (in expectation
# over projections) and denoising SM is known in closed form in terms of the data's moments:
# exact/sliced SM give the sample mean and covariance (SM = ML for Gaussians, Hyvarinen 2005),
# DSM gives the sample mean and the covariance plus sigma^2 I (the moments of x + sigma z). So we
# compare with the sample moments, and what is left is the error of stochastic optimisation
# (minibatches, projections, noise; final Adam step 1e-3). Measured over seeds 0-5, the largest
# entry-wise errors were: mean 0.013 / cov 0.039 (exact and sliced, d = 5), mean 0.035 / cov 0.081
# (DSM, d = 5, whose noise term adds gradient variance). Tolerances are about 2x those. For scale,
# the sampling error of the moments themselves (n = 4096) is ~0.02 (mean) and ~0.03-0.05 (cov).
CASES = {
    "exact": (lambda: ExactScoreMatching(), 0.03, 0.08, 0.0),
    "sliced-gaussian": (lambda: SlicedScoreMatching(num_projections=1, projection="gaussian"), 0.03, 0.08, 0.0),
    "sliced-rademacher": (lambda: SlicedScoreMatching(num_projections=1, projection="rademacher"), 0.03, 0.08, 0.0),
    "denoising": (lambda: DenoisingScoreMatching(sigma=DSM_SIGMA), 0.07, 0.16, DSM_SIGMA),
}


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("case", list(CASES))
def test_gaussian_recovery(case, dim, gaussian_problem):
    make, tol_mean, tol_cov, bias_sigma = CASES[case]
    data, key = gaussian_problem(dim, seed=0)
    energy = fit_gaussian_energy(make(), data, key).energy_module
    mean, cov = sample_moments(data)
    target_cov = cov + bias_sigma**2 * np.eye(dim)  # DSM's known bias: Sigma + sigma^2 I
    np.testing.assert_allclose(np.asarray(energy.mean), mean, atol=tol_mean)
    np.testing.assert_allclose(np.asarray(energy.covariance), target_cov, atol=tol_cov)
    if bias_sigma:
        # the bias is real: the unbiased covariance is excluded
        assert np.abs(np.asarray(energy.covariance) - cov).max() > 0.5 * bias_sigma**2


def _small_model(dim=3, seed=0):
    return eb.EBM(MLPEnergy(dim, 16, 2, key=jax.random.key(seed)))


def test_exact_loss_matches_hessian_trace():
    model = _small_model()
    x = jax.random.normal(jax.random.key(1), (8, 3))
    loss, (_, metrics) = eqx.filter_jit(ExactScoreMatching().loss)(model, x, None, jax.random.key(2))
    logp = lambda y: model.log_prob_unnorm(y)  # noqa: E731
    trace = jax.jit(jax.vmap(lambda y: jnp.trace(jax.hessian(logp)(y))))(x)
    sq = jnp.sum(jax.jit(jax.vmap(jax.grad(logp)))(x) ** 2, -1)
    np.testing.assert_allclose(loss, jnp.mean(0.5 * sq + trace), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics["hessian_trace"], jnp.mean(trace), rtol=1e-4, atol=1e-5)


def test_stochastic_losses_are_unbiased():
    """Averaged over projections, the Hutchinson / sliced losses equal the exact SM loss."""
    estimators = {
        "hutchinson": ExactScoreMatching(hutchinson=True, num_probes=2),
        "sliced-gaussian": SlicedScoreMatching(num_projections=2, projection="gaussian"),
        "sliced-rademacher": SlicedScoreMatching(num_projections=2, projection="rademacher"),
        "sliced-no-vr": SlicedScoreMatching(num_projections=2, variance_reduction=False),
    }
    model = _small_model()
    x = jax.random.normal(jax.random.key(1), (16, 3))
    keys = jax.random.split(jax.random.key(3), 2000)

    @eqx.filter_jit
    def all_losses(model, x, keys):
        exact = ExactScoreMatching().loss(model, x, None, keys[0])[0]
        draws = {n: jax.vmap(lambda k, s=s: s.loss(model, x, None, k)[0])(keys) for n, s in estimators.items()}
        return exact, draws

    exact, draws = all_losses(model, x, keys)
    for name, losses in draws.items():
        stderr = float(jnp.std(losses)) / np.sqrt(keys.shape[0])
        # 5 standard errors of the Monte Carlo mean (false-failure rate ~6e-7 for this fixed seed).
        assert abs(float(jnp.mean(losses) - exact)) < 5 * stderr + 1e-6, name
        assert float(jnp.std(losses)) > 0, name  # the estimator is random: the check is not vacuous


@pytest.mark.parametrize("dataset", ["8gaussians", "moons"])
@pytest.mark.parametrize("name", ["esm", "ssm", "dsm"])
@pytest.mark.slow
def test_trains_mlp_on_toys(name, dataset):
    """An MLP trained for 300 steps beats its initial grid NLL by a wide margin. Measured gains
    (seed 0): 1.2-2.2 nats; we ask for 0.5, which an untrained or diverged model cannot pass."""
    k_data, k_test, k_model, k_fit = jax.random.split(jax.random.key(0), 4)
    data = eb.datasets.toy(dataset, 4096, key=k_data)
    test = eb.datasets.toy(dataset, 2000, key=k_test)
    model = eb.EBM(MLPEnergy(2, 32, 2, key=k_model))
    before = float(eb.evaluate.grid_nll(model, test, resolution=100))
    result = eb.fit(model, data, eb.inference.strategy_from_name(name), num_steps=300, batch_size=256,
                    key=k_fit, optimizer=optax.adam(1e-2), progress=False, chunk_size=300)
    after = float(eb.evaluate.grid_nll(result.model, test, resolution=100))
    assert np.isfinite(after)
    assert after < before - 0.5, (before, after)


def test_names():
    from declebm.inference import STRATEGY_NAMES, strategy_from_name

    assert isinstance(strategy_from_name("esm"), ExactScoreMatching)
    assert isinstance(strategy_from_name("ssm"), SlicedScoreMatching)
    assert strategy_from_name("dsm").sigma == 0.1
    assert {"esm", "dsm", "ssm", "nce"} <= set(STRATEGY_NAMES)


def test_bad_input():
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            DenoisingScoreMatching(sigma=bad)
    with pytest.raises(ValueError, match=r"sigmas\[1\]"):
        DenoisingScoreMatching(sigmas=[0.5, 0.0])
    with pytest.raises(ValueError, match="sigmas"):
        DenoisingScoreMatching(sigmas=[])
    with pytest.raises(ValueError, match="exactly one"):
        DenoisingScoreMatching()
    with pytest.raises(ValueError, match="exactly one"):
        DenoisingScoreMatching(sigma=0.1, sigmas=[0.1])
    with pytest.raises(TypeError, match="sigma"):
        DenoisingScoreMatching(sigma="0.1")
    for bad in (0, -2):
        with pytest.raises(ValueError, match="num_projections"):
            SlicedScoreMatching(num_projections=bad)
        with pytest.raises(ValueError, match="num_probes"):
            ExactScoreMatching(hutchinson=True, num_probes=bad)
    with pytest.raises(TypeError, match="num_projections"):
        SlicedScoreMatching(num_projections=1.5)
    with pytest.raises(ValueError, match="projection"):
        SlicedScoreMatching(projection="uniform")
    with pytest.raises(TypeError, match="variance_reduction"):
        SlicedScoreMatching(variance_reduction="yes")
    # several levels need an energy that takes the level: a clear error at init, not a traceback
    model = _small_model(dim=2)
    data = jnp.zeros((16, 2))
    with pytest.raises(TypeError, match="sigmas:.*sigma=") as err:
        eb.fit(model, data, DenoisingScoreMatching(sigmas=[1.0, 0.1]), num_steps=1, batch_size=4,
               key=jax.random.key(0), progress=False)
    assert "NoiseConditionedMLPEnergy" in str(err.value)


def test_strategies_are_modules():
    for s in (ExactScoreMatching(), SlicedScoreMatching(), DenoisingScoreMatching(0.1)):
        assert isinstance(s, eb.AbstractStrategy) and isinstance(s, eqx.Module)


# ---- issue 19, item 11: one noise level given as sigmas ---------------------------------


@pytest.mark.parametrize("value", [jnp.asarray(0.05), np.float32(0.05), 0.05, np.asarray([0.05])])
def test_dsm_sigmas_accepts_one_level_as_a_scalar(value):
    from declebm.models import NoiseConditionedMLPEnergy

    strategy = DenoisingScoreMatching(sigmas=value)
    assert strategy.conditional and strategy.sigmas.shape == (1,)
    np.testing.assert_allclose(strategy.sigmas, [0.05], rtol=1e-6)
    model = eb.EBM(NoiseConditionedMLPEnergy(2, 8, 1, key=jax.random.key(0)))
    data = jax.random.normal(jax.random.key(1), (32, 2))
    result = eb.fit(model, data, strategy, num_steps=2, batch_size=8, key=jax.random.key(2), progress=False)
    assert np.isfinite(result.history["loss"]).all()
    with pytest.raises(ValueError, match=r"^sigmas: expected"):
        DenoisingScoreMatching(sigmas=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^sigmas"):
        DenoisingScoreMatching(sigmas=jnp.asarray(-0.05))
