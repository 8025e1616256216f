import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
from declebm.inference import Langevin, PersistentCD
from declebm.models import MLPEnergy

class NaNAfter(eb.AbstractStrategy):
    """A quadratic loss that turns NaN at step `when` (counted in the state)."""

    when: int

    def init(self, model, data, key, *, batch_size=None):
        return jnp.asarray(0, jnp.int32)

    def loss(self, model, batch, state, key):
        base = jnp.mean(model.energy_batch(batch))
        bad = state >= self.when
        return jnp.where(bad, jnp.nan, base), (state + 1, {"count": state.astype(jnp.float32)})


def _data(n=512):
    return eb.datasets.toy("8gaussians", n, key=jax.random.key(0))


def _model():
    return eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0)))


def test_fit_compiles_once_across_uneven_chunks(trace_counts):
    strategy = trace_counts.wrap(PersistentCD(Langevin(0.05), steps=2))
    # 250 steps in chunks of 100: three chunk calls, the last one partial. `fit` wraps its
    # chunk function in eqx.debug.assert_max_traces(max_traces=1), so a retrace would raise.
    result = eb.fit(_model(), _data(), strategy, num_steps=250, batch_size=32, chunk_size=100,
                    key=jax.random.key(1), progress=False)
    assert trace_counts.counts["loss"] == 1
    assert result.step == 250
    np.testing.assert_array_equal(result.history["step"], [100, 200, 250])
    assert set(result.history) >= {"loss", "energy_data", "energy_samples", "acceptance_rate", "step", "time"}


def test_fit_changes_parameters_and_sets_event_shape():
    m = eb.EBM(eqx.nn.MLP(2, "scalar", 8, 1, key=jax.random.key(0)))  # no declared shape
    assert m.event_shape is None
    r = eb.fit(m, _data(), PersistentCD(Langevin(0.05), steps=2), num_steps=20, batch_size=32,
               key=jax.random.key(1), progress=False)
    assert r.model.event_shape == (2,)
    before, after = jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array)), jax.tree.leaves(eqx.filter(r.model, eqx.is_inexact_array))
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_divergence_stops_with_the_last_good_model():
    m = _model()
    with pytest.raises(eb.TrainingDivergedError, match="diverged at step 8") as err:
        eb.fit(m, _data(), NaNAfter(7), num_steps=50, batch_size=32, chunk_size=5,
               optimizer=optax.sgd(1e-2), key=jax.random.key(1), progress=False)
    e = err.value
    assert e.step == 7
    assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(eqx.filter(e.model, eqx.is_inexact_array)))
    # The last good model is exactly 7 SGD steps from the start: redo them without the NaN.
    ok = eb.fit(m, _data(), NaNAfter(1000), num_steps=7, batch_size=32, chunk_size=5,
                optimizer=optax.sgd(1e-2), key=jax.random.key(1), progress=False)
    for a, b in zip(jax.tree.leaves(eqx.filter(e.model, eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter(ok.model, eqx.is_inexact_array))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_ema_and_callbacks():
    seen = []

    def cb(step, metrics, model):
        seen.append((step, metrics["loss"]))
        return step >= 20  # stop early

    r = eb.fit(_model(), _data(), PersistentCD(Langevin(0.05), steps=2), num_steps=100, batch_size=32,
               chunk_size=10, ema_decay=0.9, callbacks=[cb], key=jax.random.key(1), progress=False)
    assert [s for s, _ in seen] == [10, 20] and r.step == 20
    assert r.ema_model is not None
    a = jax.tree.leaves(eqx.filter(r.ema_model, eqx.is_inexact_array))
    b = jax.tree.leaves(eqx.filter(r.model, eqx.is_inexact_array))
    assert any(not np.allclose(x, y) for x, y in zip(a, b))


def test_progress_line(capsys):
    eb.fit(_model(), _data(), PersistentCD(Langevin(0.05), steps=2), num_steps=20, batch_size=32,
           chunk_size=10, key=jax.random.key(1))
    err = capsys.readouterr().err
    assert "step 20/20" in err and "steps/s" in err and "energy_data" in err


class VectorEnergy(eqx.Module):
    def __call__(self, x):
        return x * 2.0


@pytest.mark.parametrize(
    "data, kwargs, exc, match",
    [
        (np.zeros(100, np.float32), {}, ValueError, "data: expected shape"),
        (np.zeros((100, 3), np.float32), {}, ValueError, "event_shape"),
        (np.zeros((100, 2), np.int64), {}, TypeError, "floating-point"),
        (np.full((100, 2), np.nan, np.float32), {}, ValueError, "NaN"),
        (np.zeros((100, 2), np.float32), dict(batch_size=1000), ValueError, "batch_size"),
        (np.zeros((100, 2), np.float32), dict(num_steps=0), ValueError, "num_steps"),
        (np.zeros((100, 2), np.float32), dict(batch_size=2.5), TypeError, "batch_size"),
        (np.zeros((100, 2), np.float32), dict(key=0), TypeError, "key"),
        (np.zeros((100, 2), np.float32), dict(strategy="pcd"), TypeError, "strategy"),
        (np.zeros((100, 2), np.float32), dict(optimizer="adam"), TypeError, "optimizer"),
        (np.zeros((100, 2), np.float32), dict(ema_decay=1.0), ValueError, "ema_decay"),
        (np.zeros((100, 2), np.float32), dict(resume=True), ValueError, "checkpoint_dir"),
    ],
)
def test_bad_input(data, kwargs, exc, match):
    args = dict(strategy=PersistentCD(Langevin(0.05)), num_steps=10, batch_size=32, key=jax.random.key(0), progress=False)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        eb.fit(_model(), data, **args)


def test_non_scalar_energy_is_refused_before_training():
    with pytest.raises(TypeError, match="energy: must return a scalar"):
        eb.fit(eb.EBM(VectorEnergy()), _data(), PersistentCD(Langevin(0.05)), num_steps=10, batch_size=32,
               key=jax.random.key(0), progress=False)
