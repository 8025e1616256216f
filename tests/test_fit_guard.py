"""fit's robustness: weak-typed parameters, a retrace explained in one line, every
argument checked before the first step, the divergence guard and its rollback,
progress modes, and compiled code reused across calls."""

import contextlib
import logging
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
import numpyro.distributions as dist

from declebm.inference import NCE, MALA, DenoisingScoreMatching, Langevin, PersistentCD
from declebm.models import MLPEnergy


def _data(n=512):
    return eb.datasets.toy("8gaussians", n, key=jax.random.key(0))


class ScaledQuadratic(eqx.Module):
    """An energy with a scalar parameter written the ordinary (weak-typed) way."""

    a: jax.Array

    def __init__(self):
        self.a = jnp.array(-2.0)  # weak type

    def __call__(self, x):
        return jnp.exp(self.a) * jnp.sum(x**2)


class Linear(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return jnp.dot(self.w, x)


def test_weak_typed_parameter_trains():
    model = eb.EBM(ScaledQuadratic(), event_shape=(2,))
    assert ScaledQuadratic().a.weak_type
    r = eb.fit(model, _data(), PersistentCD(Langevin(0.05), steps=2), num_steps=30, batch_size=32,
               chunk_size=10, key=jax.random.key(1), progress=False)
    assert r.step == 30 and not r.model.energy_module.a.weak_type
    assert float(r.model.energy_module.a) != -2.0


class DtypeChanging(eb.AbstractStrategy):
    """A faulty strategy whose state changes dtype after one step."""

    def init(self, model, data, key, *, batch_size=None):
        return jnp.zeros((), jnp.int32)

    def loss(self, model, batch, state, key):
        return jnp.mean(model.energy_batch(batch)), (state.astype(jnp.float32), {})


def test_a_retrace_is_explained_in_one_line():
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    with pytest.raises(TypeError) as err:
        eb.fit(model, _data(), DtypeChanging(), num_steps=20, batch_size=32, chunk_size=10,
               key=jax.random.key(1), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "strategy_state" in msg and "int32" in msg and "float32" in msg


def test_a_changed_leaf_between_chunks_is_named():
    from declebm._train_step import check_same_signature, signature

    before = signature({"a": jnp.array(-2.0)})  # weak type
    after = signature({"a": jnp.asarray(-2.0, jnp.float32)})
    with pytest.raises(TypeError, match=r"^fit: a training step changed carry\['a'\] from \(\) float32 \(weak type\) to \(\) float32, ") as err:
        check_same_signature(before, after)
    assert "\n" not in str(err.value)


def test_second_fit_reuses_the_compiled_step(trace_counts):
    opt = optax.adam(1e-3)
    kw = dict(num_steps=20, batch_size=32, chunk_size=10, optimizer=opt, progress=False)
    strategy = trace_counts.wrap(PersistentCD(Langevin(0.05), steps=2))
    eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), _data(), strategy, key=jax.random.key(1), **kw)
    # Other weights, other data of the same shape, another key: no new trace.
    eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(5))), _data() + 1.0, strategy, key=jax.random.key(2), **kw)
    assert trace_counts.counts["loss"] == 1


@contextlib.contextmanager
def _programs_compiled():
    """The names (``jit(f)``) of the XLA programs compiled inside the block, as JAX logs them
    when it lowers one (a persistent-cache hit is logged too, so reruns count the same)."""
    names: list[str] = []

    class Record(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling "):
                names.append(message.split()[1])

    logger, handler = logging.getLogger("jax._src.interpreters.pxla"), Record(logging.DEBUG)
    old_level, old_log = logger.level, jax.config.jax_log_compiles
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        yield names
    finally:
        jax.config.update("jax_log_compiles", old_log)
        logger.setLevel(old_level)
        logger.removeHandler(handler)


def test_the_divergence_guard_compiles_no_program_of_its_own():
    # Its probe is drawn on the host and its energy spread measured inside the chunk, so a
    # guarded fit compiles the programs of an unguarded one: the strategy's eager start, the
    # optimizer's state and the chunk, once each. Sizes no other test uses make every one new.
    def compiled(n, dim, guard):
        data = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
        model = eb.EBM(MLPEnergy(dim, 5, 1, key=jax.random.key(0)))
        with _programs_compiled() as names:
            eb.fit(model, data, PersistentCD(Langevin(0.05), steps=2, num_chains=n // 8), optimizer=optax.adam(1e-3),
                   num_steps=6, batch_size=8, chunk_size=4, key=jax.random.key(1), progress=False,
                   divergence_guard=guard)
        return names

    guarded, unguarded = compiled(203, 3, eb.DivergenceGuard()), compiled(211, 4, None)
    assert len(guarded) == len(unguarded), (guarded, unguarded)
    for names in guarded, unguarded:
        assert names.count("jit(run_chunk)") == 1 and names.count("jit(_initial_state)") == 1, names


def _counting_callback(seen):
    def cb(step, metrics, model):
        seen.append(step)

    return cb


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(ema_decay="0.9"), TypeError, "ema_decay"),
        (dict(ema_decay=True), TypeError, "ema_decay"),
        (dict(callbacks=print), TypeError, "callbacks.*callbacks=\\[f\\]"),
        (dict(callbacks=[1]), TypeError, "callbacks: item 0"),
        (dict(progress="loud"), ValueError, "progress"),
        (dict(divergence_guard="on"), TypeError, "divergence_guard"),
        (dict(resume="yes", checkpoint_dir="x"), TypeError, "resume"),
        (dict(checkpoint_dir=3), TypeError, "checkpoint_dir"),
    ],
)
def test_every_option_is_checked_before_the_first_step(kwargs, exc, match):
    seen = []
    args = dict(strategy=PersistentCD(Langevin(0.05), steps=2), num_steps=10, batch_size=32, chunk_size=5,
                key=jax.random.key(0), progress=False)
    args.update(kwargs)
    args.setdefault("callbacks", [_counting_callback(seen)])
    with pytest.raises(exc, match=match):
        eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), _data(), **args)
    assert seen == []


def test_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir.*not a directory"):
        eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), _data(), PersistentCD(Langevin(0.05), steps=2),
               num_steps=10, batch_size=32, key=jax.random.key(0), progress=False, checkpoint_dir=f)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_checkpoint_dir_is_refused(tmp_path):  # pragma: no cover - CI runs as root
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    with pytest.raises(ValueError, match="checkpoint_dir.*not writable"):
        eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), _data(), PersistentCD(Langevin(0.05), steps=2),
               num_steps=10, batch_size=32, key=jax.random.key(0), progress=False, checkpoint_dir=d / "sub")


def _params(model):
    return jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))


# Blow-ups that used to return "successfully" with energies of 1e5-1e16 (grid NLL up to 1e16).
BLOW_UPS = {
    "pcd_mala_adam10": (lambda: MLPEnergy(2, 32, 2, key=jax.random.key(1)), lambda: PersistentCD(MALA(0.2), steps=5),
                        lambda: optax.adam(10.0)),
    "langevin_step_1e4": (lambda: MLPEnergy(2, 32, 2, key=jax.random.key(1)),
                          lambda: PersistentCD(Langevin(1e4), steps=5), lambda: optax.adam(1e-3)),
    "linear_energy_no_regulariser": (lambda: Linear(jnp.full((2,), 0.1, jnp.float32)),
                                     lambda: PersistentCD(Langevin(0.05), steps=5), lambda: optax.adam(1.0)),
}


def _fit_until_it_diverges(case, num_steps, match):
    """Train one of the cases below on 8gaussians, expecting TrainingDivergedError."""
    energy, strategy, opt = case
    data = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    with pytest.raises(eb.TrainingDivergedError, match=match) as err:
        eb.fit(eb.EBM(energy(), event_shape=(2,)), data, strategy(), optimizer=opt(), num_steps=num_steps,
               batch_size=128, key=jax.random.key(2), progress=False)
    return err.value, data


@pytest.mark.parametrize("name", sorted(BLOW_UPS))
@pytest.mark.slow
def test_blow_up_stops_with_the_last_healthy_model(name):
    e, data = _fit_until_it_diverges(BLOW_UPS[name], 2000, "diverged")
    assert "learning rate" in str(e)  # the troubleshooting hint
    assert all(np.all(np.isfinite(p)) and np.max(np.abs(p)) < 1e3 for p in _params(e.model))
    # The model handed back is usable: its grid NLL is close to the initial model's (4.6), not 1e16.
    nll = float(eb.evaluate.grid_nll(e.model, data[:1000]))
    assert nll < 10.0, nll


@pytest.mark.slow
def test_rollback_lowers_the_learning_rate_and_finishes():
    data = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    energy, strategy, opt = BLOW_UPS["linear_energy_no_regulariser"]
    guard = eb.DivergenceGuard(rollback=True, lr_factor=0.01, max_rollbacks=2)
    r = eb.fit(eb.EBM(energy(), event_shape=(2,)), data, strategy(), optimizer=opt(), num_steps=600, batch_size=128,
               key=jax.random.key(2), progress=False, divergence_guard=guard)
    assert r.step == 600 and r.lr_scale < 1.0


# Runs whose loss looks fine while the density is absurd (issue 19, item 7), seen by the NLL
# excess over a Gaussian fitted to the data. Before it, the guard watched only the energy
# spread and the loss, against references from the start or the first chunk: DSM with
# adam(1.0) returned a model of grid NLL 2232 (untrained: 4.8) after 2000 steps, and the
# linear energy was stopped only after 1500 steps, with a "healthy" model of NLL 50.
ABSURD_DENSITIES = {
    "dsm_adam1": (lambda: MLPEnergy(2, 128, 2, key=jax.random.key(1)),
                  lambda: DenoisingScoreMatching(sigma=0.1), lambda: optax.adam(1.0)),
    "pcd_linear_energy": (lambda: Linear(jnp.full((2,), 0.1, jnp.float32)),
                          lambda: PersistentCD(Langevin(0.05), steps=5), lambda: optax.adam(0.1)),
}


@pytest.mark.parametrize("name", sorted(ABSURD_DENSITIES))
@pytest.mark.slow
def test_the_guard_sees_an_absurd_density(name):
    e, data = _fit_until_it_diverges(ABSURD_DENSITIES[name], 400, "estimated NLL on training examples rose to")
    # The model handed back is from before the blow-up (untrained: 4.8).
    nll = float(eb.evaluate.grid_nll(e.model, data[:1000]))
    assert nll < 7.0, nll


@pytest.mark.slow
def test_a_density_that_misses_the_data_is_reported(monkeypatch, capsys):
    # NCE's noise N(100, 0.01) becomes the base: the classification is trivial from the first
    # step (loss 3e-4) and the density stays 1e7 nats from the data; nothing diverges, and
    # the run used to end without a word. It ends with a warning now.
    data = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    strategy = NCE(noise=dist.Normal(jnp.full((2,), 100.0), 0.01).to_event(1))
    with pytest.warns(RuntimeWarning, match="misses the data") as caught:
        r = eb.fit(eb.EBM(MLPEnergy(2, 32, 2, key=jax.random.key(1))), data, strategy, num_steps=200,
                   batch_size=128, key=jax.random.key(2), progress=False)
    assert len(r.warnings) == 1 and "NCE's noise" in r.warnings[0] and "misses the data" in r.warnings[0]
    assert any(w.filename == __file__ for w in caught)
    # On a process other than 0 of several (jax.distributed) the same run warns nothing and
    # reports no progress (process 0 does both); FitResult.warnings still lists it.
    import warnings

    import declebm._loop
    import declebm._progress

    for module in (declebm._loop, declebm._progress):
        monkeypatch.setattr(module, "is_writer", lambda: False)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = eb.fit(eb.EBM(MLPEnergy(2, 32, 2, key=jax.random.key(1))), data, strategy, num_steps=200,
                   batch_size=128, key=jax.random.key(2), progress="log")
    assert len(r.warnings) == 1 and not [w for w in caught if "[declebm]" in str(w.message)]
    assert "[declebm]" not in capsys.readouterr().err
    monkeypatch.undo()
    # A healthy run says nothing.
    r = eb.fit(eb.EBM(MLPEnergy(2, 32, 2, key=jax.random.key(1))), data, NCE(), num_steps=200, batch_size=128,
               key=jax.random.key(2), progress=False)
    assert r.warnings == ()


def test_rollbacks_are_reported_without_progress():
    # progress=False used to leave only lr_scale; this run rolls back once (step 100, the
    # estimated NLL 267 nats above the Gaussian) and ends at grid NLL 7.9, worse than the
    # untrained 4.8: both are warned and listed.
    data = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    energy, strategy, opt = BLOW_UPS["linear_energy_no_regulariser"]
    guard = eb.DivergenceGuard(rollback=True, lr_factor=0.01, max_rollbacks=2)
    with pytest.warns(RuntimeWarning) as caught:
        r = eb.fit(eb.EBM(energy(), event_shape=(2,)), data, strategy(), optimizer=opt(), num_steps=600,
                   batch_size=128, key=jax.random.key(2), progress=False, divergence_guard=guard)
    messages = [str(w.message) for w in caught if "[declebm]" in str(w.message)]
    assert messages == list(r.warnings) and len(messages) == 2, messages
    assert "rollback 1/2 to step 0" in messages[0] and "learning rate scaled by 0.01" in messages[0]
    assert "ended worse than it started" in messages[1]
    assert all(w.filename == __file__ for w in caught if "[declebm]" in str(w.message))  # points at the caller


def test_a_rollback_that_ends_better_than_the_start_says_nothing_more():
    data = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    guard = eb.DivergenceGuard(rollback=True, lr_factor=0.001, max_rollbacks=2)
    r = eb.fit(eb.EBM(MLPEnergy(2, 32, 2, key=jax.random.key(1))), data, DenoisingScoreMatching(sigma=0.1),
               optimizer=optax.adam(1.0), num_steps=600, batch_size=128, key=jax.random.key(2), progress=False,
               divergence_guard=guard)
    assert r.lr_scale < 1.0 and len(r.warnings) >= 1
    assert not any("ended worse" in w for w in r.warnings), r.warnings


def test_guard_does_not_fire_on_healthy_training():
    data = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    r = eb.fit(eb.EBM(MLPEnergy(2, 32, 2, key=jax.random.key(1))), data, PersistentCD(MALA(0.2), steps=5),
               optimizer=optax.adam(3e-3), num_steps=1000, batch_size=128, key=jax.random.key(2), progress=False)
    assert r.step == 1000 and r.lr_scale == 1.0


class TwoLevelEnergy(eqx.Module):
    """``a |x|^2 / sigma`` at a given level; ``exp(b) |x|^2`` at the default (untrained) one."""

    a: jax.Array
    b: jax.Array

    def __call__(self, x, sigma=None):
        if sigma is None:
            return jnp.exp(self.b) * jnp.sum(x**2)
        return self.a * jnp.sum(x**2) / sigma


class AtLevelOne(eqx.Module):
    energy: TwoLevelEnergy

    def __call__(self, x):
        return self.energy(x, sigma=1.0)


class DriftsAtTheDefaultLevel(eb.AbstractStrategy):
    """Fits ``a`` at level 1 while ``b`` (the default level's scale) grows without limit, as
    an energy extrapolated to a level no loss constrains may; the guard watches level 1
    when ``watch_level_one``."""

    watch_level_one: bool = False

    def loss(self, model, batch, state, key):
        e = model.energy_module
        return (e.a - 1.0) ** 2 - e.b, (state, {})

    def watched_model(self, model):
        return eb.EBM(AtLevelOne(model.energy_module), event_shape=(2,)) if self.watch_level_one else model


def test_the_guard_watches_the_density_the_strategy_trains():
    data = _data()
    model = eb.EBM(TwoLevelEnergy(jnp.float32(0.5), jnp.float32(0.0)), event_shape=(2,))
    kw = dict(optimizer=optax.adam(0.1), num_steps=300, batch_size=32, chunk_size=50, key=jax.random.key(0),
              progress=False)
    with pytest.raises(eb.TrainingDivergedError, match="energy spread"):
        eb.fit(model, data, DriftsAtTheDefaultLevel(), **kw)
    r = eb.fit(model, data, DriftsAtTheDefaultLevel(watch_level_one=True), **kw)
    assert r.step == 300 and abs(float(r.model.energy_module.a) - 1.0) < 0.1
    assert float(r.model.energy_module.b) > 20.0  # the unwatched level did drift


@pytest.mark.parametrize("bad", [dict(max_growth=0), dict(healthy_growth=200.0), dict(lr_factor=2.0),
                                 dict(rollback="yes"), dict(num_probe=0)])
def test_guard_bad_hyperparameters(bad):
    with pytest.raises((TypeError, ValueError), match=next(iter(bad))):
        eb.DivergenceGuard(**bad)


def test_progress_modes(capsys):
    kw = dict(strategy=PersistentCD(Langevin(0.05), steps=2), num_steps=20, batch_size=32, chunk_size=10,
              key=jax.random.key(1))
    m = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    eb.fit(m, _data(), progress="bar", **kw)
    err = capsys.readouterr().err
    assert "20/20" in err and "step" in err and "energy_data" in err  # tqdm's bar with the metrics
    eb.fit(m, _data(), progress="log", **kw)
    err = capsys.readouterr().err
    assert "[declebm] step 20/20" in err
    eb.fit(m, _data(), progress=False, **kw)
    assert capsys.readouterr().err == ""
