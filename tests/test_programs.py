"""Room for compiled programs: past a fraction of Linux's cap on memory mappings, JAX's
compiled programs are freed (declebm/_programs.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
import declebm._programs as programs
from declebm.inference import Langevin, PersistentCD
from declebm.models import MLPEnergy

pytestmark = [
    pytest.mark.skipif(programs.memory_maps() is None, reason="/proc tells the mappings on Linux only"),
    # They free every compiled program of the worker, which the tests after them compile again.
    pytest.mark.slow,
]


def _compiled_programs(n):
    """``n`` jitted functions, each compiled once, held so that only JAX's caches free them."""
    fs = [jax.jit(lambda x, i=i: jnp.sin(x * i) @ x.T + jnp.cumsum(x, 0)[:, :1] * i) for i in range(n)]
    for f in fs:
        f(jnp.ones((7, 7))).block_until_ready()
    return fs


def test_programs_are_freed_past_the_fraction_and_kept_below_it():
    fs = _compiled_programs(40)
    held, cap = programs.memory_maps()
    assert 0 < held < cap
    # Below the fraction nothing happens.
    assert not programs.make_room_for_programs(1.0, warn=False)
    assert all(f._cache_size() == 1 for f in fs)
    # Past it the programs go, and with them their mappings (about 9 per program here).
    with pytest.warns(RuntimeWarning, match=r"vm\.max_map_count = \d+.*jax\.clear_caches\(\)") as caught:
        assert programs.make_room_for_programs((held - 1) / cap)
    assert all(f._cache_size() == 0 for f in fs)
    after, _ = programs.memory_maps()
    assert after < held - 5 * 40, (held, after)
    assert f"held {held} memory mappings" in str(caught[0].message)
    # They compile again when called, to the same values.
    np.testing.assert_allclose(fs[3](jnp.ones((7, 7))), jax.jit(lambda x: jnp.sin(x * 3) @ x.T
                                                                 + jnp.cumsum(x, 0)[:, :1] * 3)(jnp.ones((7, 7))))


def test_fit_and_sample_make_room_before_they_compile(monkeypatch):
    f = _compiled_programs(1)[0]
    monkeypatch.setattr(programs, "FIT_FRACTION", 0.0)  # as if the process were at the cap
    data = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    with pytest.warns(RuntimeWarning, match="memory mappings") as caught:
        r = eb.fit(model, data, PersistentCD(Langevin(0.05), steps=2, num_chains=16), num_steps=4, batch_size=16,
                   key=jax.random.key(1), progress=False)
    assert f._cache_size() == 0 and r.step == 4
    assert any(w.filename == __file__ for w in caught)  # it points at the caller of fit
    f(jnp.ones((7, 7)))
    with pytest.warns(RuntimeWarning, match="memory mappings") as caught:
        x = eb.sample(r.model, Langevin(0.05), key=jax.random.key(2), num_samples=8, num_steps=3)
    assert f._cache_size() == 0 and x.shape == (8, 2)
    assert any(w.filename == __file__ for w in caught)
