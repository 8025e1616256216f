"""Diffusion recovery likelihood: the schedule, the conditional sampler, training, bad input."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
from declebm.inference import (
    DiffusionRecoveryLikelihood,
    Langevin,
    ddpm_level_sigmas,
    recovery_schedule,
    strategy_from_name,
)
from declebm.models import MLPEnergy, NoiseConditionedMLPEnergy


# ---- the schedule: Gao et al.'s numbers (T = 6) ---------------------------------------------
def test_default_schedule_reproduces_the_public_code_numbers():
    s = recovery_schedule(ddpm_level_sigmas(6), 2e-4)
    np.testing.assert_allclose(s.sigma[1:], [0.324, 0.516, 0.632, 0.713, 0.773, 0.9997], atol=6e-4)
    assert abs(s.sigma[0] - 0.01) < 1e-5  # the data level
    np.testing.assert_allclose(s.a, np.sqrt(1 - s.sigma**2), rtol=1e-12)
    np.testing.assert_allclose(s.a[1:], [0.946, 0.856, 0.775, 0.701, 0.634, 0.0228], atol=6e-4)
    np.testing.assert_allclose(s.abar, np.cumprod(s.a), rtol=1e-12)
    np.testing.assert_allclose(s.sigmabar, np.sqrt(1 - s.abar**2), rtol=1e-12)
    # s_t^2 = b^2 (sigmabar_t / sigmabar_0) sigma_{t+1}^2, the ratio not squared
    np.testing.assert_allclose(s.step_size, [0.0046, 0.042, 0.068, 0.089, 0.104, 0.139], atol=6e-4)
    np.testing.assert_allclose(s.weight, [1.0, 0.627, 0.512, 0.454, 0.419, 0.324], atol=6e-4)
    np.testing.assert_allclose(s.scale, list(s.a[1:-1]) + [1.0])  # no shrinking at the top
    np.testing.assert_array_equal(s.tether, [1, 1, 1, 1, 1, 0])  # no tether at the top
    assert DiffusionRecoveryLikelihood().schedule.step_size == pytest.approx(s.step_size)


def test_custom_schedule_is_used():
    st = DiffusionRecoveryLikelihood(schedule=[0.05, 0.3, 0.6, 0.9], step_size_constant=1e-3)
    assert st.num_levels == 3
    s = st.schedule
    np.testing.assert_allclose(s.tether_sigma, [0.3, 0.6, 0.9])
    np.testing.assert_allclose(s.step_size**2, 1e-3 * s.sigmabar[:3] / 0.05 * np.array([0.3, 0.6, 0.9]) ** 2)


# ---- a Gaussian level-conditioned energy ----------------------------------------------------
class _LevelGaussian(eqx.Module):
    """``E(y, sigma) = 1/2 sum exp(lam_k) (y - mu_k)^2`` with level ``k`` picked by ``sigma``
    among the ladder's labels: one Gaussian per conditional."""

    mu: jax.Array
    lam: jax.Array
    labels: jax.Array

    def __call__(self, y, sigma=None):
        k = 0 if sigma is None else jnp.argmin(jnp.abs(self.labels - sigma))
        return 0.5 * jnp.sum(jnp.exp(self.lam[k]) * (y - self.mu[k]) ** 2)


def _gaussian_conditional(st, level, m=(0.8, -0.4), x_next=(0.5, -1.0)):
    """A model whose level-``level`` conditional is Gaussian in closed form, and its mean and
    variance in x. f(y, t) = -||y - m||^2 / (2 w_e) with w_e = 0.5 / s_t^2 gives
    log p(y | x') = -||y - m||^2 / (2 w_e s_t^2) - ||y - x'||^2 / (2 sigma^2): precision
    P = 1/(w_e s_t^2) + 1/sigma^2, mean (m/(w_e s_t^2) + x'/sigma^2)/P; x = y / a."""
    s = st.schedule
    step_sq, sig, a = s.step_size[level] ** 2, s.tether_sigma[level], s.scale[level]
    w_e = 0.5 / step_sq
    m, x_next = np.asarray(m), np.asarray(x_next)
    energy = _LevelGaussian(jnp.tile(jnp.asarray(m, jnp.float32), (6, 1)), jnp.full((6, 2), -np.log(w_e), jnp.float32),
                            jnp.asarray(s.tether_sigma, jnp.float32))
    precision = 1 / (w_e * step_sq) + 1 / sig**2
    mean = (m / (w_e * step_sq) + x_next / sig**2) / precision / a
    return eb.EBM(energy, event_shape=(2,)), jnp.asarray(x_next, jnp.float32), mean, 1 / precision / a**2


def test_conditional_sampler_reproduces_the_gaussian_recovery_conditional():
    st = DiffusionRecoveryLikelihood()
    level, n = 3, 4000
    model, x_next, mean, var = _gaussian_conditional(st, level)
    x = st.sample_conditional(model, jnp.tile(x_next, (n, 1)), level, key=jax.random.key(0), num_steps=1000, noise_scale=1.0)
    # 4000 chains: the mean's standard error is sqrt(0.51/4000) = 0.011 and the variance's relative
    # one sqrt(2/4000) = 2.2%; ULA's step bias on the variance is s^2 P / 4 = 0.8%. Tolerances ~4 s.e.
    np.testing.assert_allclose(np.mean(x, 0), mean, atol=0.05)
    np.testing.assert_allclose(np.var(x, 0), [var, var], rtol=0.1)


def _train_on_gaussian(seed):
    # A short ladder with a larger b^2 and longer chains so the level-0 chains converge
    # (s_0^2 P_0 = 0.07 per step, 150 steps: e^-5 of the start remains; ULA bias ~2%).
    st = DiffusionRecoveryLikelihood(schedule=[0.1, 0.3, 0.6, 1.0], step_size_constant=0.05, langevin_steps=150)
    s = st.schedule
    mu, std = np.array([1.0, -0.5]), np.array([0.5, 0.8])
    data = jnp.asarray(mu + std * np.random.default_rng(seed).standard_normal((20_000, 2)), jnp.float32)
    energy = _LevelGaussian(
        jnp.zeros((3, 2)), jnp.asarray(np.tile(np.log(s.step_size**2)[:, None], (1, 2)), jnp.float32),
        jnp.asarray(s.tether_sigma, jnp.float32),
    )
    model = eb.EBM(energy, event_shape=(2,))
    # Adam at 0.02 jitters by a few percent around the optimum: read the parameters' EMA.
    res = eb.fit(model, data, st, optimizer=optax.adam(0.02), num_steps=1500, batch_size=512, key=jax.random.key(seed),
                 ema_decay=0.99, progress=False)
    e = res.ema_model.energy_module
    # level_model(0): log p~(x) = -1/2 exp(lam_0) ||a_1 x - mu_0||^2 / s_0^2
    mean = np.asarray(e.mu[0]) / s.scale[0]
    var = s.step_size[0] ** 2 / np.exp(np.asarray(e.lam[0])) / s.scale[0] ** 2
    true_mean = s.abar[0] * mu
    true_var = s.abar[0] ** 2 * std**2 + s.sigmabar[0] ** 2
    return st, res, mean, var, true_mean, true_var


def _level_zero_recovery() -> dict:
    """The fit of the test below and what it asserts on (run by ``at_default_level``)."""
    st, res, mean, var, true_mean, true_var = _train_on_gaussian(1)
    # through the public EBM: level_model's score at the true mean
    score = st.level_model(res.ema_model, 0).score(jnp.asarray(true_mean, jnp.float32))
    return {k: np.asarray(v, np.float64).tolist() for k, v in
            dict(mean=mean, var=var, true_mean=true_mean, true_var=true_var, score=score).items()}


@pytest.mark.slow
def test_training_recovers_the_data_mean_and_variance_at_level_zero(at_default_level):
    # Bound by running (1500 steps x 150 Langevin steps), not compiling: in its own process at
    # XLA's default level (conftest's at_default_level).
    r = {k: np.asarray(v) for k, v in at_default_level(__file__, "_level_zero_recovery").items()}
    # Seeds 0-5: worst errors 0.019 in the mean and 4.2% relative in the variance; tolerances ~2x.
    np.testing.assert_allclose(r["mean"], r["true_mean"], atol=0.04)
    np.testing.assert_allclose(r["var"], r["true_var"], rtol=0.09)
    # the same through the public EBM: level_model's score is the Gaussian's
    np.testing.assert_allclose(r["score"], -(r["true_mean"] - r["mean"]) / r["var"], atol=1e-3)


@pytest.mark.slow
def test_fit_reports_per_level_metrics_and_samples_progressively():
    key = jax.random.key(0)
    data = eb.datasets.toy("8gaussians", 2000, key=key)
    st = DiffusionRecoveryLikelihood(langevin_steps=3)
    model = eb.EBM(NoiseConditionedMLPEnergy(in_size=2, width=16, depth=1, key=key))
    # three chunks, the last partial: fit's assert_max_traces(1) would raise on a retrace
    res = eb.fit(model, data, st, num_steps=5, batch_size=64, chunk_size=2, key=key, progress=False)
    assert res.step == 5
    for t in range(6):
        assert np.all(np.isfinite(res.history[f"loss_level{t}"]))
    xs = st.sample(res.model, 10, key=key, all_levels=True)
    assert xs.shape == (7, 10, 2) and np.all(np.isfinite(xs))
    assert st.sample(res.model, 10, key=key).shape == (10, 2)
    assert np.isfinite(float(eb.evaluate.grid_nll(st.level_model(res.model, 0), data[:100])))


def test_langevin_takes_one_step_size_per_chain():
    # Two chains on a standard normal with steps 0 and 1: the zero-step chain stays put.
    model = eb.EBM(MLPEnergy(in_size=1, width=4, depth=1, key=jax.random.key(0)))
    x0 = jnp.ones((2, 1))
    sampler = Langevin(step_size=jnp.array([1e-12, 0.5]), noise_scale=jnp.array([0.0, 0.7]))
    x, _ = sampler.run(model, x0, 5, jax.random.key(1))
    assert abs(float(x[0, 0]) - 1.0) < 1e-6
    assert abs(float(x[1, 0]) - 1.0) > 1e-3


def test_recovery_is_in_the_shared_vocabulary():
    assert isinstance(strategy_from_name("recovery"), DiffusionRecoveryLikelihood)


@pytest.mark.slow
def test_data_scale_runs_the_ladder_on_standardised_data():
    # data_scale=c models x / c: on data c * x every number is c times (or, for losses and
    # log densities, equal to) the unit-scale ladder's on x, with the same keys.
    c = 3.0
    st1, st3 = DiffusionRecoveryLikelihood(langevin_steps=3), DiffusionRecoveryLikelihood(langevin_steps=3, data_scale=c)
    model = eb.EBM(NoiseConditionedMLPEnergy(2, 16, 1, key=jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (64, 2))
    key = jax.random.key(2)
    loss1, (_, m1) = st1.loss(model, x, None, key)
    loss3, (_, m3) = st3.loss(model, c * x, None, key)
    np.testing.assert_allclose(loss3, loss1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m3["displacement"], c * m1["displacement"], rtol=1e-4)
    np.testing.assert_allclose(st3.level_model(model, 1).energy_batch(c * x), st1.level_model(model, 1).energy_batch(x),
                               rtol=1e-5)
    np.testing.assert_allclose(st3.sample(model, 50, key=key), c * st1.sample(model, 50, key=key), rtol=1e-4, atol=1e-4)
    x1 = st1.sample_conditional(model, x[:8], 0, key=key)
    np.testing.assert_allclose(st3.sample_conditional(model, c * x[:8], 0, key=key), c * x1, rtol=1e-4, atol=1e-4)


def test_the_2d_default_ladder_runs_at_the_toys_scale():
    # The ladder is variance-preserving (it tends to N(0, I)): the 2-D default standardises the
    # toys, whose per-axis std is 1.4-2.3, to about unit scale.
    st = strategy_from_name("recovery")
    for name in eb.datasets.TOY_NAMES:
        x = np.asarray(eb.datasets.toy(name, 5000, key=jax.random.key(0)))
        assert 0.6 < np.sqrt(np.mean(x.var(0))) / st.data_scale < 1.25, name


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule, match",
    [([0.1, 0.5, 0.3], "increasing"), ([0.0, 0.5, 0.9], r"\(0, 1\]"), ([0.1, 0.5, 1.2], r"\(0, 1\]"),
     ([0.1, 0.5], "at least 3"), ("abc", "sequence")],
)
def test_bad_schedule_is_refused(schedule, match):
    with pytest.raises((ValueError, TypeError), match="^schedule: .*" + match):
        DiffusionRecoveryLikelihood(schedule=schedule)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="^step_size_constant"):
        DiffusionRecoveryLikelihood(step_size_constant=-1.0)
    with pytest.raises(TypeError, match="^langevin_steps"):
        DiffusionRecoveryLikelihood(langevin_steps=2.5)
    with pytest.raises(ValueError, match="^noise_arg"):
        DiffusionRecoveryLikelihood(noise_arg="not a name")
    with pytest.raises(ValueError, match="^data_scale"):
        DiffusionRecoveryLikelihood(data_scale=0.0)
    st = DiffusionRecoveryLikelihood()
    model = eb.EBM(NoiseConditionedMLPEnergy(in_size=2, width=8, depth=1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="^level"):
        st.level_model(model, 6)
    with pytest.raises(ValueError, match="^x_next"):
        st.sample_conditional(model, jnp.zeros((4, 3)), 0, key=jax.random.key(0))


def test_energy_without_a_level_fails_early_in_fit():
    data = jnp.zeros((64, 2))
    model = eb.EBM(MLPEnergy(in_size=2, width=8, depth=1, key=jax.random.key(0)))
    with pytest.raises(TypeError, match=r"^model: .*level-conditioned.*sigma=\.\.\."):
        eb.fit(model, data, DiffusionRecoveryLikelihood(), num_steps=2, batch_size=8, key=jax.random.key(0))


@pytest.mark.slow
def test_long_run_runs_a_conditional_and_finds_the_exact_conditional_stable():
    # The closed-form Gaussian conditional of the sampler test: chains from x_next / a and from exact
    # draws, measured against other exact draws, must be judged stable (no drift).
    st = DiffusionRecoveryLikelihood()
    level, n = 3, 300
    model, x_next, mean, var = _gaussian_conditional(st, level)
    cond, a = st.conditional_model(model), st.schedule.scale[level]
    rng = np.random.default_rng(0)
    exact = lambda k: jnp.asarray(mean + np.sqrt(var) * rng.standard_normal((k, 2)), jnp.float32)  # noqa: E731
    nexts = jnp.tile(x_next, (n, 1))
    rep = eb.evaluate.long_run(
        cond, st.sampler(jnp.int32(level), 1.0), data=exact(1000), reference=exact(1000), key=jax.random.key(0),
        chain_lengths=(100, 1000), num_chains=n, noise=nexts / a, condition={"level": level, "x_next": nexts},
    )
    assert not rep.drifts, str(rep)
    assert np.isnan(rep.energy_reference) and np.all(np.isfinite(rep.energy_from_data))
    with pytest.raises(ValueError, match="^condition: 'x_next'"):
        eb.evaluate.long_run(cond, st.sampler(jnp.int32(level), 1.0), data=exact(100), reference=exact(100),
                             key=jax.random.key(0), chain_lengths=(10,), num_chains=n,
                             condition={"level": level, "x_next": nexts[:5]})


def test_images_of_the_wrong_shape_are_refused():
    from declebm.models import NoiseConditionedConvEnergy

    model = eb.EBM(NoiseConditionedConvEnergy((64,), image_shape=(1, 8, 8), channels=(4, 4, 4), key=jax.random.key(0)))
    with pytest.raises(ValueError, match="^data: .*event_shape"):
        eb.fit(model, jnp.zeros((16, 8, 8)), DiffusionRecoveryLikelihood(), num_steps=1, batch_size=4, key=jax.random.key(0))


def test_pixels_far_beyond_the_ladders_scale_are_refused():
    # raw 0..255 pixels given to the variance-preserving ladder: say to rescale, naming data_scale
    from declebm.models import NoiseConditionedConvEnergy

    model = eb.EBM(NoiseConditionedConvEnergy((1, 8, 8), channels=(4, 4), key=jax.random.key(0)))
    pixels = jnp.full((16, 1, 8, 8), 255.0)
    with pytest.raises(ValueError, match=r"^data: .*data_scale=1 .*to_symmetric_range.*root mean square of 255"):
        eb.fit(model, pixels, DiffusionRecoveryLikelihood(), num_steps=1, batch_size=4, key=jax.random.key(0))
    # the same values are the data's scale when data_scale says so: no error at init; nor are
    # unit-scale data with a rare large value (whitened digits reach 20.9)
    DiffusionRecoveryLikelihood(data_scale=128.0).init(model, pixels, jax.random.key(0))
    DiffusionRecoveryLikelihood().init(model, jnp.zeros((16, 1, 8, 8)).at[0, 0, 0, 0].set(25.0), jax.random.key(0))


def test_the_divergence_guard_watches_the_level_zero_density():
    st = DiffusionRecoveryLikelihood()
    model = eb.EBM(NoiseConditionedMLPEnergy(2, 16, 1, key=jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (5, 2))
    np.testing.assert_allclose(st.watched_model(model).energy_batch(x),
                               st.level_model(model, 0).energy_batch(x), rtol=1e-6)
