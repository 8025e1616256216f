"""EBMDistribution: a trained EBM as a NumPyro distribution (prior or likelihood)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

import declebm as eb
from declebm.inference import MALA
from declebm.models import GaussianEnergy

MU = np.array([1.0, -0.5])
COV = np.array([[1.0, 0.5], [0.5, 2.0]])


def _gaussian_distribution(**kw):
    energy = GaussianEnergy(MU, covariance=COV)
    return eb.EBMDistribution(eb.EBM(energy), log_z=energy.log_z, **kw)


def test_log_prob_equals_multivariate_normal():
    d = _gaussian_distribution()
    x = jax.random.normal(jax.random.key(0), (3, 4, 2)) * 2.0
    np.testing.assert_allclose(d.log_prob(x), dist.MultivariateNormal(MU, COV).log_prob(x), atol=1e-5)
    assert d.log_prob(x[0, 0]).shape == () and d.event_shape == (2,) and d.batch_shape == ()
    # without log_z: the model's own field (0 here), i.e. the unnormalised density
    raw = eb.EBMDistribution(eb.EBM(GaussianEnergy(MU, covariance=COV)))
    np.testing.assert_allclose(raw.log_prob(x) - d.log_prob(x), float(GaussianEnergy(MU, covariance=COV).log_z),
                               rtol=1e-5)


def test_sample_through_a_declebm_sampler():
    d = _gaussian_distribution(sampler=MALA(step_size=0.5), num_steps=200)
    assert d.sample(jax.random.key(0), (3, 4)).shape == (3, 4, 2)
    x = np.asarray(d.sample(jax.random.key(1), (2000,)))
    # 2000 independent chains: the mean's standard error is <= sqrt(2 / 2000) = 0.032; 0.1 is 3 of those
    np.testing.assert_allclose(x.mean(0), MU, atol=0.1)
    np.testing.assert_allclose(np.cov(x.T), COV, atol=0.2)


def test_ebm_prior_in_a_numpyro_model_gives_the_conjugate_posterior():
    # Prior N(MU, COV) as an EBM, likelihood y | x ~ N(x, 0.7^2 I): the posterior is Gaussian
    # with covariance S = (COV^-1 + I / 0.7^2)^-1 and mean S (COV^-1 MU + y / 0.7^2).
    d = _gaussian_distribution()
    y, noise = np.array([2.0, 1.0]), 0.7

    def model(y=None):
        x = numpyro.sample("x", d)
        numpyro.sample("y", dist.Normal(x, noise).to_event(1), obs=y)

    s = np.linalg.inv(np.linalg.inv(COV) + np.eye(2) / noise**2)
    mean = s @ (np.linalg.inv(COV) @ MU + y / noise**2)
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=1000, progress_bar=False)
    mcmc.run(jax.random.key(0), y=y)
    # worst error of the NUTS posterior mean over seeds 0-5 was 0.039 (posterior sd ~0.6): 2x that
    np.testing.assert_allclose(np.asarray(mcmc.get_samples()["x"]).mean(0), mean, atol=0.08)


def test_passes_through_jit_as_an_argument_and_mcmc_reuses_its_program():
    """The distribution is a pytree of its arrays (the energy's functions are static), so
    ``jax.jit`` takes it as an argument: two EBMs of one architecture share one program,
    and ``MCMC(..., jit_model_args=True)`` with the prior among the model's arguments
    samples a second prior without tracing NUTS again."""
    from declebm.models import MLPEnergy

    priors = [eb.EBMDistribution(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(i)), event_shape=(2,)), log_z=float(i),
                                 sampler=MALA(step_size=0.1), num_steps=3) for i in range(2)]
    x = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    log_prob = jax.jit(lambda d, x: d.log_prob(x))
    for d in priors:
        np.testing.assert_allclose(log_prob(d, x), d.log_prob(x), rtol=1e-6)
    assert log_prob._cache_size() == 1
    back = jax.tree.unflatten(*reversed(jax.tree.flatten(priors[1])))
    assert back.num_steps == 3 and back.event_shape == (2,) and isinstance(back.sampler, MALA)
    assert jax.jit(lambda d, k: d.sample(k, (4,)))(priors[0], jax.random.key(0)).shape == (4, 2)

    def model(prior, y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    traces = []
    nuts = NUTS(lambda prior, y: (traces.append(1), model(prior, y)))
    mcmc = MCMC(nuts, num_warmup=20, num_samples=20, progress_bar=False, jit_model_args=True)
    means = []
    for d in priors:
        mcmc.run(jax.random.key(0), d, jnp.array([1.0, 1.0]))
        means.append(np.asarray(mcmc.get_samples()["x"]).mean(0))
        traces.append("run")
    # the second run traces the model only to set up its start, not a new sampling program
    first, second = traces[:traces.index("run")], traces[traces.index("run") + 1:-1]
    assert len(second) < len(first), traces
    assert np.all(np.isfinite(means)) and not np.allclose(means[0], means[1])


def test_as_a_likelihood_with_obs():
    d = _gaussian_distribution()

    def model(x):
        numpyro.sample("x", d, obs=x)

    x = jnp.array([[0.0, 0.0], [1.0, 2.0]])
    log_joint, _ = numpyro.infer.util.log_density(model, (x,), {}, {})
    np.testing.assert_allclose(log_joint, dist.MultivariateNormal(MU, COV).log_prob(x).sum(), rtol=1e-5)


def test_bad_input():
    model = eb.EBM(GaussianEnergy(MU))
    with pytest.raises(TypeError, match="^model"):
        eb.EBMDistribution("model")
    with pytest.raises(ValueError, match="^model"):
        eb.EBMDistribution(eb.EBM(lambda x: jnp.sum(x**2)))
    with pytest.raises(ValueError, match="^log_z"):
        eb.EBMDistribution(model, log_z=jnp.ones(2))
    with pytest.raises(TypeError, match="^sampler"):
        eb.EBMDistribution(model, sampler="mala")
    with pytest.raises(ValueError, match="^sampler"):
        eb.EBMDistribution(model).sample(jax.random.key(0), (2,))


@pytest.mark.slow
def test_from_estimate_normalises_with_ais():
    energy = GaussianEnergy(MU, covariance=COV)
    ais = eb.inference.AIS(num_chains=256, num_steps=100, kernel=MALA(step_size=0.5))
    d = eb.EBMDistribution.from_estimate(eb.EBM(energy), ais, key=jax.random.key(0))
    # errors over seeds 0-5 with these settings: -0.048 ... +0.033 nats; 0.1 is ~2x the worst
    np.testing.assert_allclose(float(d.log_z), float(energy.log_z), atol=0.1)
