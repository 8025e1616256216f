"""AIS and bidirectional Monte Carlo: log Z of analytic models and of a 2-D network
against quadrature, the bounds, evaluate.log_likelihood, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import declebm as eb
from declebm.inference import AIS, HMC, MALA, MCLMC, SVGD, DenoisingScoreMatching, annealing_schedule
from declebm.models import GaussianEnergy, MixtureEnergy, MLPEnergy


def _gaussian(dim):
    """A correlated Gaussian (covariance eigenvalues in [0.5, 2], mean in [-1, 1]^d),
    the same family as the `gaussian_problem` fixture, with its exact log Z."""
    rng = np.random.default_rng(dim)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.linspace(0.5, 2.0, dim)) @ q.T
    return GaussianEnergy(rng.uniform(-1.0, 1.0, size=dim), covariance=cov)


def _mixture():
    """Three well-separated components (4-6 standard deviations apart), unequal sizes and weights."""
    return MixtureEnergy(np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]]), stds=np.array([0.5, 0.8, 1.0]), weights=[1, 2, 3])


# Tolerance 0.05 nats (the issue's): with these settings the worst error over seeds 0-5
# was 0.010 (2-D) and 0.029 (20-D) for the forward estimate and 0.019 / 0.020 for the
# reverse one, with standard errors 0.007 / 0.03. The 20-D case uses HMC, the 2-D MALA.
@pytest.mark.parametrize(
    "dim, kernel",
    [(2, MALA(step_size=0.3)), (20, HMC(step_size=0.2, num_integration_steps=5))],
)
@pytest.mark.slow
def test_ais_gaussian_log_z_and_reverse_bound(dim, kernel):
    energy = _gaussian(dim)
    est = eb.evaluate.log_z(
        eb.EBM(energy), AIS(num_chains=1000, num_steps=200, kernel=kernel, reverse="exact"), key=jax.random.key(0)
    )
    truth = float(energy.log_z)
    assert abs(float(est.log_z) - truth) < 0.05
    assert abs(float(est.log_z_upper) - truth) < 0.05
    assert est.diagnostics["reverse_start"] == "exact"
    assert float(est.log_z_lower) == float(est.log_z) and float(est.gap) == pytest.approx(float(est.log_z_upper - est.log_z))
    assert 0 < float(est.stderr) < 0.05 and 1 <= float(est.ess) <= 1000
    acc = np.asarray(est.diagnostics["acceptance_rate"])
    assert acc.shape == (199,) and np.all((acc > 0.3) & (acc <= 1.0))
    assert est.log_weights.shape == (1000,) and est.diagnostics["reverse_log_weights"].shape == (1000,)


def _per_chain_bracket(est, truth):
    """How many standard errors the per-chain BDMC bounds stand off the truth.

    Each forward log weight has ``E[log w] = log Z - KL(forward || reverse path) <= log Z``
    and each reverse one ``E[-log w_rev] >= log Z`` (Grosse et al. 2015, eq. 8-9), for
    any schedule; with 1000 chains the means have a CLT standard error."""
    fwd = np.asarray(est.log_weights, np.float64)
    rev = -np.asarray(est.diagnostics["reverse_log_weights"], np.float64)
    z_lower = (truth - fwd.mean()) / (fwd.std() / np.sqrt(fwd.size))
    z_upper = (rev.mean() - truth) / (rev.std() / np.sqrt(rev.size))
    return z_lower, z_upper, rev.mean() - fwd.mean()


def _staircase(num_levels, length=201):
    """A schedule of ``length`` inverse temperatures that climbs in ``num_levels`` jumps,
    with tiny (1e-7) steps in between: AIS with few temperatures and many MCMC moves at
    each, compiled like any other 200-step schedule."""
    per = (length - 1) // num_levels
    levels = np.linspace(0.0, 1.0, num_levels + 1)
    return np.concatenate([lv + 1e-7 * np.arange(per) for lv in levels[:-1]] + [[1.0]])


@pytest.mark.slow
def test_bdmc_bounds_bracket_the_truth_and_widen_with_fewer_temperatures():
    """Per-chain forward and reverse bounds on the 20-D Gaussian: both sides of log Z by
    more than 3 standard errors (over seeds 0-5 the smallest margin was 5.5), with a gap
    of ~0.2 nats at 200 temperatures and ~4.5 nats with 2 temperatures."""
    energy = _gaussian(20)
    truth = float(energy.log_z)
    kernel = HMC(step_size=0.2, num_integration_steps=5)
    gaps = []
    for schedule in (annealing_schedule("sigmoid", 200), _staircase(2)):
        # the plain AIS of Grosse et al. (fixed kernel, standard normal start): the bracket mechanism
        ais = AIS(num_chains=1000, kernel=kernel, schedule=schedule, reverse="exact", pilot=False,
                  adapt_step_size=False, precondition=None)
        z_lower, z_upper, gap = _per_chain_bracket(eb.evaluate.log_z(eb.EBM(energy), ais, key=jax.random.key(0)), truth)
        assert z_lower > 3 and z_upper > 3
        gaps.append(gap)
    assert 0 < gaps[0] < 0.5 < 2.0 < gaps[1]


@pytest.mark.slow
def test_ais_mixture_log_z_and_bdmc():
    """Tolerance 0.05 nats: over seeds 0-5 the worst forward error was 0.008 and the worst
    reverse one 0.016 (stderr 0.015). The per-chain bounds hold: neither side crosses the
    truth by more than 3 se (with the start's scale preconditioning the transitions, the
    forward bound is nearly tight: 2.9 se below the truth at seed 0)."""
    mix = _mixture()
    truth = float(mix.log_z)
    data = mix.sample(jax.random.key(100), 1000)
    ais = AIS(num_chains=1000, num_steps=200, kernel=MALA(step_size=0.3), reverse="exact")
    # The start is a Gaussian fitted to the data (the model has no base).
    est = eb.evaluate.log_z(eb.EBM(mix), ais, key=jax.random.key(0), data=data)
    assert abs(float(est.log_z) - truth) < 0.05
    assert abs(float(est.log_z_upper) - truth) < 0.05
    assert abs(float(est.gap)) < 0.1
    z_lower, z_upper, _ = _per_chain_bracket(est, truth)
    assert z_lower > -3 and z_upper > -3


@pytest.mark.slow
def test_ais_matches_grid_on_a_trained_2d_model():
    """An MLP energy times a wide Gaussian base, trained by denoising score matching on
    8gaussians for 300 steps (it learns a ring: not Gaussian, not the base): AIS started
    from the model's base against 400x400 midpoint quadrature on [-8, 8]^2.
    Tolerance 0.05 nats: the worst error over seeds 0-3 was 0.022 (stderr 0.023)."""
    data = eb.datasets.toy("8gaussians", n=4096, key=jax.random.key(0))
    model = eb.EBM(MLPEnergy(2, width=32, depth=2, key=jax.random.key(1)), base=dist.Normal(jnp.zeros(2), 3 * jnp.ones(2)).to_event(1))
    model = eb.fit(model, data, DenoisingScoreMatching(sigma=0.3), num_steps=300, batch_size=256,
                   key=jax.random.key(2), optimizer=optax.adam(3e-3)).model
    grid = float(eb.evaluate.grid_log_z(model, bounds=(-8.0, 8.0), resolution=400))
    est = eb.evaluate.log_z(model, AIS(num_chains=1000, num_steps=200, kernel=MALA(step_size=0.1)), key=jax.random.key(0))
    assert abs(float(est.log_z) - grid) < 0.05
    assert est.log_z_upper is None and est.gap is None


@pytest.mark.slow
def test_log_likelihood_bounds_and_per_example():
    mix = _mixture()
    data = mix.sample(jax.random.key(7), 1000)  # the shapes of the mixture test: no recompilation
    model = eb.EBM(mix)
    ll = eb.evaluate.log_likelihood(
        model, data, AIS(num_chains=1000, num_steps=200, kernel=MALA(step_size=0.3), reverse="data"), key=jax.random.key(1)
    )
    exact = np.asarray(jax.vmap(mix.log_prob)(data))
    assert ll.per_example.shape == (1000,)
    # per-example values differ from the exact ones by the same log Z error.
    assert np.allclose(np.asarray(ll.per_example) - exact, float(mix.log_z - ll.log_z.log_z), atol=1e-4)
    assert abs(float(ll.log_likelihood) - exact.mean()) < 0.05
    assert ll.log_z.diagnostics["reverse_start"] == "data"
    # Lower from the upper log Z bound and vice versa; the gap is the log Z gap.
    mean_lp = float(jnp.mean(model.log_prob_unnorm_batch(data)))
    assert float(ll.log_likelihood_lower) == pytest.approx(mean_lp - float(ll.log_z.log_z_upper), abs=1e-4)
    assert float(ll.log_likelihood_upper) == pytest.approx(mean_lp - float(ll.log_z.log_z_lower), abs=1e-4)
    assert float(ll.gap) == pytest.approx(float(ll.log_z.gap), abs=1e-4)
    assert abs(float(ll.log_likelihood_lower) - exact.mean()) < 0.05
    assert 0 < float(ll.stderr) < 0.2


def test_schedules_run_from_zero_to_one():
    for kind in ("sigmoid", "geometric", "linear"):
        for steps in (1, 2, 50):
            b = annealing_schedule(kind, steps)
            assert b.shape == (steps + 1,) and b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) > 0)
    assert AIS(schedule=[0.0, 0.5, 1.0]).betas.tolist() == [0.0, 0.5, 1.0]
    assert AIS(num_steps=7).betas.shape == (8,)


def test_reverse_true_prefers_exact_draws_then_data():
    mix = _mixture()
    data = mix.sample(jax.random.key(1), 1000)  # shapes and settings of the mixture test: no recompilation
    ais = AIS(num_chains=1000, num_steps=200, kernel=MALA(step_size=0.3), reverse=True)
    est = eb.evaluate.log_z(eb.EBM(mix), ais, key=jax.random.key(0), data=data)
    assert est.diagnostics["reverse_start"] == "exact"
    tempered = eb.EBM(mix).tempered(2.0)  # its energy's draws are no longer exact
    est = eb.evaluate.log_z(tempered, ais, key=jax.random.key(0), data=data)
    assert est.diagnostics["reverse_start"] == "data"


# ---- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": [0.0, 0.6, 0.4, 1.0]}, "^schedule: "),
        ({"schedule": [0.1, 0.5, 1.0]}, "^schedule: "),
        ({"schedule": [0.0, 0.5, 0.9]}, "^schedule: "),
        ({"schedule": [[0.0, 1.0]]}, "^schedule: "),
        ({"schedule": "cosine"}, "^schedule: "),
        ({"schedule": [0.0, 0.5, 1.0], "num_steps": 5}, "^num_steps: "),
        ({"num_chains": 0}, "^num_chains: "),
        ({"num_steps": 0}, "^num_steps: "),
        ({"num_mcmc_steps": 0}, "^num_mcmc_steps: "),
        ({"kernel": "mala"}, "^kernel: "),
        ({"kernel": SVGD(0.1)}, "^kernel: SVGD is not a Markov kernel of one chain"),
        ({"kernel": MCLMC()}, "^kernel: MCLMC is not tuned yet"),
        ({"reverse": "both"}, "^reverse: "),
    ],
)
def test_ais_rejects_bad_settings(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        AIS(**kwargs)


def test_ais_rejects_bad_input_at_estimate():
    model = eb.EBM(_gaussian(2))
    key = jax.random.key(0)
    small = AIS(num_chains=16, num_steps=2)
    with pytest.raises(ValueError, match="^base: "):
        eb.evaluate.log_z(model, AIS(num_chains=16, num_steps=2, base=dist.Normal(jnp.zeros(3), 1.0).to_event(1)), key=key)
    with pytest.raises(TypeError, match="^base: "):
        eb.evaluate.log_z(model, AIS(num_chains=16, num_steps=2, base=jnp.zeros(2)), key=key)
    with pytest.raises(ValueError, match="^data: "):
        eb.evaluate.log_z(model, small, key=key, data=np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="^data: "):
        eb.evaluate.log_likelihood(model, np.zeros(10, np.float32), small, key=key)
    with pytest.raises(TypeError, match="^estimator: "):
        eb.evaluate.log_z(model, MALA(step_size=0.1), key=key)
    with pytest.raises(TypeError, match="^key: "):
        eb.evaluate.log_z(model, small, key=0)
    with pytest.raises(ValueError, match="^exact_samples: "):
        eb.evaluate.log_z(model, AIS(num_chains=16, num_steps=2, reverse="exact"), key=key, exact_samples=np.zeros((4, 3), np.float32))
    mlp = eb.EBM(MLPEnergy(2, width=8, depth=1, key=key))
    with pytest.raises(ValueError, match="^reverse: "):
        eb.evaluate.log_z(mlp, AIS(num_chains=16, num_steps=2, reverse="exact"), key=key)
    with pytest.raises(ValueError, match="^reverse: "):
        eb.evaluate.log_z(mlp, AIS(num_chains=16, num_steps=2, reverse="data"), key=key)
