"""Step sizes that adapt during training (``adapt_step_size=True``): dual averaging of the
persistent or replay-buffer chains' step size toward a target acceptance, carried in the
strategy state through ``fit`` (one compile, exact resume, replicated over devices)."""

import os
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import HMC, MALA, NUTS, Langevin, MaximumLikelihood, PersistentCD, ReplayBufferML
from declebm.models import GaussianEnergy, MLPEnergy


def _gaussian(scale):
    """N(0, scale^2 I) in 2-D, a fixed model (nothing is trained)."""
    return eb.EBM(GaussianEnergy(jnp.zeros(2), covariance=scale**2 * jnp.eye(2)))


@eqx.filter_jit
def _updates(strategy, model, data, state, keys):
    """``len(keys)`` training iterations' chain updates on a fixed model: the strategy's
    ``loss`` (which runs the chains and adapts the step) without any parameter update."""

    def body(st, k):
        _, (st, met) = strategy.loss(model, data[:256], st, k)
        return st, (met["acceptance_rate"], met["step_size"])

    return jax.lax.scan(body, state, keys)


STRATEGIES = {
    "pcd-mala": (PersistentCD(MALA(0.05), steps=5, num_chains=256, adapt_step_size=True), 0.574, 2),
    "pcd-hmc": (PersistentCD(HMC(0.05, num_integration_steps=3), steps=5, num_chains=256, adapt_step_size=True),
                0.651, 1),
    "buffer-mala": (MaximumLikelihood(MALA(0.05), steps=5, init="buffer", buffer_size=1024, num_chains=256,
                                      adapt_step_size=True, target_acceptance=0.4), 0.4, 2),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_adaptation_reaches_the_target_and_tracks_a_model_that_changes(name):
    strategy, target, power = STRATEGIES[name]
    assert float(strategy.adaptation_target) == pytest.approx(target)
    key = jax.random.key(0)
    data = jax.random.normal(key, (1024, 2))
    state = strategy.init(_gaussian(1.0), data, key, batch_size=256)
    # 300 updates on N(0, I) from a step 50x too small, then 300 more on N(0, 0.3^2 I) from
    # the state reached: the second phase starts late (t = 300), where a scheme that
    # averaged its iterates or froze its gain would lag behind the new scale.
    state, (acc1, eps1) = _updates(strategy, _gaussian(1.0), data, state, jax.random.split(jax.random.key(1), 300))
    state, (acc2, eps2) = _updates(strategy, _gaussian(0.3), data, state, jax.random.split(jax.random.key(2), 300))
    assert int(state.adaptation.step) == 601
    # Acceptance over the last 100 updates of each phase. One update's acceptance (256 chains
    # x 5 steps) has sd ~0.012 (measured), so a 100-update mean has sd ~0.002 even with
    # correlation; measured over seeds 0-4: within 0.003 of the target. 0.02 leaves a wide
    # margin and still fails a wrong sign or a stalled adaptation (the start accepts ~1.0).
    assert abs(float(jnp.mean(acc1[-100:])) - target) < 0.02
    assert abs(float(jnp.mean(acc2[-100:])) - target) < 0.02
    # A sensible step: acceptance is scale invariant in eps / scale^power (MALA's eps is a
    # variance, HMC's a length), so the adapted steps must differ by 0.3^-power. Measured:
    # 11.02-11.07 (MALA, 1/0.09 = 11.1) and 3.33 (HMC, 1/0.3); 6% is ~5x the jitter.
    ratio = float(jnp.mean(eps1[-100:]) / jnp.mean(eps2[-100:]))
    assert ratio == pytest.approx(0.3 ** -power, rel=0.06)


def test_the_adapted_mala_step_gives_the_target_acceptance_to_a_fresh_sampler():
    """The step is right, not only the bookkeeping: a fresh MALA with the adapted step,
    started at exact N(0, I) draws, accepts at the target rate."""
    strategy = PersistentCD(MALA(0.05), steps=5, num_chains=256, adapt_step_size=True, target_acceptance=0.5)
    data = jax.random.normal(jax.random.key(0), (1024, 2))
    state = strategy.init(_gaussian(1.0), data, jax.random.key(0), batch_size=256)
    state, _ = _updates(strategy, _gaussian(1.0), data, state, jax.random.split(jax.random.key(1), 300))
    eps = float(jnp.exp(state.adaptation.log_step_size))
    x = jax.random.normal(jax.random.key(3), (20_000, 2))
    _, info = MALA(eps).run(_gaussian(1.0), x, 1, jax.random.key(4))
    # 20,000 independent chains: the acceptance estimate has sd <= 0.0035; the adapted step
    # jitters by ~1% (acceptance +-0.005); 0.03 covers both with room.
    assert abs(float(info.acceptance_rate[0]) - 0.5) < 0.03


@pytest.mark.parametrize("sampler, bound", [(MALA(0.05), lambda s: 4 * s**2), (HMC(0.05, num_integration_steps=3),
                                                                           lambda s: 2 * s)])
def test_the_step_is_bounded_by_the_data_scale_without_wind_up(sampler, bound):
    """A model far wider than the data (as a fresh, nearly flat network) accepts almost any
    step: the step stops at the sampler's stability limit for the data's scale, and leaves
    it at once when the model becomes narrow (no wind-up of the dual average)."""
    strategy = PersistentCD(sampler, steps=5, num_chains=256, adapt_step_size=True)
    data = jax.random.normal(jax.random.key(0), (1024, 2))
    state = strategy.init(_gaussian(100.0), data, jax.random.key(0), batch_size=256)
    s = float(jnp.max(state.noise_scale))  # the data's largest std, ~1
    state, (_, eps1) = _updates(strategy, _gaussian(100.0), data, state, jax.random.split(jax.random.key(1), 200))
    assert float(jnp.max(eps1)) <= bound(s) * (1 + 1e-5)
    assert float(eps1[-1]) == pytest.approx(bound(s), rel=1e-5)  # pinned at the bound
    state, (acc2, _) = _updates(strategy, _gaussian(0.3), data, state, jax.random.split(jax.random.key(2), 200))
    # Back at the target within 100 updates (a wound-up average would need thousands);
    # tolerance as in the test above.
    assert abs(float(jnp.mean(acc2[-100:])) - float(strategy.adaptation_target)) < 0.02


def _fit(num_steps, **kw):
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    data = eb.datasets.toy("8gaussians", 512, key=jax.random.key(0))
    strategy = kw.pop("strategy", PersistentCD(MALA(0.05), steps=2, adapt_step_size=True))
    return eb.fit(model, data, strategy, num_steps=num_steps, batch_size=32, chunk_size=10, key=jax.random.key(3),
                  progress=False, **kw)


def test_fit_compiles_once_and_reports_the_step_size(trace_counts):
    strategy = trace_counts.wrap(PersistentCD(MALA(0.05), steps=2, adapt_step_size=True))
    result = _fit(25, strategy=strategy)  # chunks of 10, 10 and a partial 5: one program
    assert trace_counts.counts["loss"] == 1
    assert result.step == 25 and int(result.state.adaptation.step) == 26
    eps = result.history["step_size"]
    assert eps.shape == (3,) and np.all(np.isfinite(eps)) and np.all(eps > 0)
    # MALA at 0.05 on a fresh small MLP accepts ~1, so dual averaging raises the step.
    assert eps[-1] > 0.05
    # The step the state holds is the one the next update uses.
    assert float(jnp.exp(result.state.adaptation.log_step_size)) > 0.05


def test_adaptation_survives_exact_resume(tmp_path):
    full = _fit(40)
    d = tmp_path / "ckpt"
    _fit(30, checkpoint_dir=d, checkpoint_every=10)
    resumed = _fit(40, checkpoint_dir=d, resume=True)
    for a, b in zip(jax.tree.leaves(eqx.filter(full.model, eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter(resumed.model, eqx.is_inexact_array))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.history["step_size"], resumed.history["step_size"])
    assert int(resumed.state.adaptation.step) == 41


def test_a_checkpoint_without_adaptation_is_refused_for_a_run_with_it(tmp_path):
    _fit(10, checkpoint_dir=tmp_path, strategy=PersistentCD(MALA(0.05), steps=2))
    with pytest.raises(ValueError, match="resume: the checkpoint in .* different"):
        _fit(20, checkpoint_dir=tmp_path, resume=True)


def test_the_adaptation_state_is_replicated_not_split():
    strategy = ReplayBufferML(MALA(0.05), steps=2, buffer_size=64, adapt_step_size=True)
    state = strategy.init(_gaussian(1.0), jnp.zeros((64, 2)), jax.random.key(0), batch_size=16)
    per_chain = strategy.per_chain(state)
    assert per_chain.chains is True
    assert jax.tree.leaves(per_chain.adaptation) == [False] * 5


WORKER = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import declebm as eb
    from declebm.inference import MALA, PersistentCD
    from declebm.models import MLPEnergy

    data = eb.datasets.toy("8gaussians", 1024, key=jax.random.key(0))

    def train(devices):
        m = eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(1)))
        return eb.fit(m, data, PersistentCD(MALA(0.05), steps=2, adapt_step_size=True), num_steps=20,
                      batch_size=32, chunk_size=10, key=jax.random.key(2), progress=False, devices=devices)

    one, two = train(None), train(jax.devices())
    a = two.state.adaptation
    print("RESULT " + json.dumps({
        "eps_one": float(jnp.exp(one.state.adaptation.log_step_size)),
        "eps_two": float(jnp.exp(a.log_step_size)),
        "replicated": all(l.sharding.is_fully_replicated and len(l.sharding.device_set) == 2 for l in jax.tree.leaves(a)),
        "chains_split": not two.state.chains.sharding.is_fully_replicated,
    }))
    """
)


@pytest.mark.slow  # a subprocess with 2 host devices
def test_two_devices_adapt_the_same_step_as_one(python_result):
    out = python_result(WORKER, os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    assert out["replicated"] and out["chains_split"]
    # The acceptance is the mean over both devices' chains (float reassociation only), so
    # both copies make the same update; 20 updates keep the difference at float32 rounding.
    assert out["eps_two"] == pytest.approx(out["eps_one"], rel=1e-4)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: PersistentCD(MALA(0.1), adapt_step_size=True, target_acceptance=0.0), ValueError,
         r"target_acceptance: expected a number in \(0, 1\), got 0.0"),
        (lambda: PersistentCD(MALA(0.1), adapt_step_size=True, target_acceptance=1.0), ValueError,
         "target_acceptance: expected a number in"),
        (lambda: PersistentCD(MALA(0.1), adapt_step_size=True, target_acceptance=1.5), ValueError,
         "target_acceptance: expected a number in"),
        (lambda: PersistentCD(MALA(0.1), adapt_step_size=True, target_acceptance=float("nan")), ValueError,
         "target_acceptance: expected a finite"),
        (lambda: PersistentCD(MALA(0.1), adapt_step_size=True, target_acceptance="0.6"), TypeError,
         "target_acceptance: expected a number"),
        (lambda: PersistentCD(MALA(0.1), target_acceptance=0.6), ValueError,
         "target_acceptance: .* needs adapt_step_size=True"),
        (lambda: PersistentCD(MALA(0.1), adapt_step_size="yes"), TypeError, "adapt_step_size: expected True or False"),
        (lambda: PersistentCD(MALA(0.1), adapt_step_size=1), TypeError, "adapt_step_size: expected True or False"),
        (lambda: PersistentCD(Langevin(0.1), adapt_step_size=True), ValueError,
         "adapt_step_size: .* Langevin has no Metropolis step"),
        (lambda: MaximumLikelihood(Langevin(0.1), init="buffer", adapt_step_size=True), ValueError,
         "adapt_step_size: .* Langevin"),
        (lambda: ReplayBufferML(MALA(0.1), target_acceptance=0.5), ValueError, "target_acceptance:"),
    ],
)
def test_bad_adaptation_arguments_are_refused_naming_the_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_good_adaptation_arguments_are_accepted():
    assert float(PersistentCD(NUTS(0.1), adapt_step_size=True).adaptation_target) == pytest.approx(0.8)
    s = MaximumLikelihood(HMC(0.1), init="buffer", adapt_step_size=True, target_acceptance=0.7)
    assert float(s.adaptation_target) == pytest.approx(0.7)
    assert PersistentCD(MALA(0.1)).init(_gaussian(1.0), jnp.zeros((8, 2)), jax.random.key(0)).adaptation is None
    from declebm.inference import GHMC, Barker, ParallelTempering, UnderdampedLangevin
    from declebm.inference._maximum_likelihood import _max_step_size

    assert float(PersistentCD(Barker(0.1), adapt_step_size=True).adaptation_target) == pytest.approx(0.574)
    assert float(PersistentCD(GHMC(0.1), adapt_step_size=True).adaptation_target) == pytest.approx(0.9)
    # Barker's and GHMC's steps are lengths: bounded at twice the data's scale, as the leapfrog.
    for sampler in (Barker(0.1), GHMC(0.1)):
        assert float(_max_step_size(sampler, jnp.array([0.5, 2.0]))) == pytest.approx(4.0)
    for sampler in (UnderdampedLangevin(0.1), ParallelTempering(MALA(0.1), temperatures=[1.0, 2.0])):
        with pytest.raises(ValueError, match="^adapt_step_size:"):
            PersistentCD(sampler, adapt_step_size=True)
