import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
from declebm.inference import (
    MALA,
    ContrastiveDivergence,
    Langevin,
    MaximumLikelihood,
    PersistentCD,
    ReplayBufferML,
    ShortRunML,
)
from declebm.models import GaussianEnergy, MLPEnergy


def _gaussian_data(n, key):
    mean = np.array([1.0, -1.0])
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    x = jax.random.multivariate_normal(key, mean, cov, (n,))
    return np.asarray(x, np.float32)


@pytest.mark.slow
def test_pcd_recovers_gaussian_mean_and_covariance():
    data = _gaussian_data(4000, jax.random.key(0))
    model = eb.EBM(GaussianEnergy(np.zeros(2)))
    steps = 800
    result = eb.fit(
        model,
        data,
        PersistentCD(MALA(step_size=0.3), steps=5, num_chains=1000),
        optimizer=optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.02)),
        num_steps=steps,
        batch_size=1000,
        key=jax.random.key(1),
        progress=False,
    )
    g = result.model.energy_module
    # Target: the MLE (sample moments). The residual is stochastic-approximation noise
    # (per-step gradient s.e. ~ sqrt(2 var / 1000) ~ 0.045 in the mean, damped by the decayed
    # learning rate). Measured over seeds 0-4: max error 0.0073 (mean) and 1.6% of the
    # largest variance (covariance); the bounds below leave a 3-4x margin.
    np.testing.assert_allclose(g.mean, data.mean(0), atol=0.03)
    np.testing.assert_allclose(g.covariance, np.cov(data.T), atol=0.05 * np.max(np.diag(np.cov(data.T))))


STRATEGIES = {
    "cd": ContrastiveDivergence(Langevin(step_size=0.01), steps=10),
    "pcd": PersistentCD(MALA(step_size=0.05), steps=10),
    "shortrun": ShortRunML(Langevin(step_size=0.05), steps=30),
    "replay": ReplayBufferML(Langevin(step_size=0.05), steps=10, buffer_size=2000),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.slow
def test_each_variant_trains_an_mlp_on_8gaussians(name):
    key = jax.random.key(0)
    data = eb.datasets.toy("8gaussians", 10_000, key=key)
    test = eb.datasets.toy("8gaussians", 2000, key=jax.random.key(1))
    model = eb.EBM(MLPEnergy(2, 32, 2, key=key))
    before = float(eb.evaluate.grid_nll(model, test, resolution=100))
    result = eb.fit(
        model, data, STRATEGIES[name], optimizer=optax.adam(3e-3), num_steps=400, batch_size=256,
        key=key, progress=False,
    )
    after = float(eb.evaluate.grid_nll(result.model, test, resolution=100))
    # The untrained model is near uniform on the box (NLL ~ log 100 = 4.6 nats); the true
    # density's NLL is 2.83. Measured gains over seeds 0-1 were 1.2-1.5 nats for every
    # variant; requiring 0.5 leaves a margin while still failing a model that learns nothing.
    assert after < before - 0.5, (name, before, after)
    for k in ("loss", "energy_data", "energy_samples", "acceptance_rate"):
        assert np.all(np.isfinite(result.history[k])), k


def test_general_class_matches_presets():
    s = MaximumLikelihood(Langevin(0.1), steps=5, init="buffer", buffer_size=100, reinit_prob=0.1)
    assert s.chain_start == "buffer"
    assert PersistentCD(Langevin(0.1)).chain_start == "persistent"
    assert ContrastiveDivergence(Langevin(0.1)).chain_start == "data"
    assert ShortRunML(Langevin(0.1)).chain_start == "noise"


def test_persistent_chains_are_carried_and_buffer_updated():
    data = eb.datasets.toy("moons", 512, key=jax.random.key(0))
    model = eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0)))
    pcd = PersistentCD(Langevin(0.05), steps=3, num_chains=64)
    state = pcd.init(model, data, jax.random.key(1))
    assert state.chains.shape == (64, 2)
    _, (new_state, metrics) = pcd.loss(model, data[:32], state, jax.random.key(2))
    assert new_state.chains.shape == (64, 2) and not np.allclose(new_state.chains, state.chains)
    rb = ReplayBufferML(Langevin(0.05), steps=3, buffer_size=256)
    state = rb.init(model, data, jax.random.key(1))
    _, (new_state, _) = rb.loss(model, data[:32], state, jax.random.key(2))
    changed = np.any(np.asarray(new_state.chains) != np.asarray(state.chains), axis=1)
    assert 0 < changed.sum() <= 32  # exactly the rows drawn this step are written back


def test_energy_regulariser_adds_the_squared_energies():
    data = eb.datasets.toy("moons", 64, key=jax.random.key(0))
    model = eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0)))
    plain = ContrastiveDivergence(Langevin(0.05), steps=2)
    reg = ContrastiveDivergence(Langevin(0.05), steps=2, energy_reg=0.5)
    k = jax.random.key(3)
    l0, (_, m) = plain.loss(model, data, plain.init(model, data, k), k)
    l1, _ = reg.loss(model, data, reg.init(model, data, k), k)
    e_neg = model.energy_batch(ContrastiveDivergence(Langevin(0.05), steps=2).negatives(model, data, plain.init(model, data, k), k)[0])
    expected = l0 + 0.5 * (jnp.mean(model.energy_batch(data) ** 2) + jnp.mean(e_neg**2))
    np.testing.assert_allclose(l1, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PersistentCD(Langevin(0.1), steps=0), "steps"),
        (lambda: PersistentCD("mala"), "sampler"),
        (lambda: PersistentCD(Langevin(0.1), num_chains=0), "num_chains"),
        (lambda: ShortRunML(Langevin(0.1), energy_reg=-1.0), "energy_reg"),
        (lambda: ReplayBufferML(Langevin(0.1), reinit_prob=1.5), "reinit_prob"),
        (lambda: ReplayBufferML(Langevin(0.1), buffer_size=0), "buffer_size"),
        (lambda: MaximumLikelihood(Langevin(0.1), init="somewhere"), "init"),
        (lambda: PersistentCD(Langevin(0.1), noise="laplace"), "noise"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_replay_reinitialisation_draws_noise_independent_of_the_mask():
    # Buffer full of a far point (100, 100); reinit_prob 0.5; a step of 1e-10 leaves every
    # chain where it starts. Over 400 keys chain 0 is re-initialised ~200 times; its fresh
    # noise (the data's fitted Gaussian, standardised here) must have mean 0: the standard
    # error is 1/sqrt(200) = 0.07, so 0.3 is 4 standard errors. With one key for mask and
    # noise the mean was about -0.8 (the noise was drawn from the mask's own bits).
    data = jax.random.normal(jax.random.key(0), (512, 2))
    model = eb.EBM(GaussianEnergy(np.zeros(2)))
    strategy = ReplayBufferML(Langevin(step_size=1e-10), steps=1, buffer_size=64, reinit_prob=0.5)
    state = strategy.init(model, data, jax.random.key(1), batch_size=64)
    state = state._replace(chains=jnp.full_like(state.chains, 100.0))

    def chain0(key):
        x, _, _ = strategy.negatives(model, data[:64], state, key)
        return x[0]

    x0 = jax.vmap(chain0)(jax.random.split(jax.random.key(2), 400))
    fresh = np.asarray(x0[:, 0]) < 50.0
    z = (np.asarray(x0[fresh]) - np.asarray(state.noise_loc)) / np.asarray(state.noise_scale)
    assert 150 < fresh.sum() < 250
    np.testing.assert_array_less(np.abs(z.mean(0)), 0.3)
