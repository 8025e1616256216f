"""Room for compiled programs: past a fraction of Linux's cap on memory mappings, JAX's
compiled programs are freed (declebm/_programs.py)."""

import os

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
    pytest.mark.slow,  # a subprocess
]


def _compiled_programs(n):
    """``n`` jitted functions, each compiled once, held so that only JAX's caches free them."""
    fs = [jax.jit(lambda x, i=i: jnp.sin(x * i) @ x.T + jnp.cumsum(x, 0)[:, :1] * i) for i in range(n)]
    for f in fs:
        f(jnp.ones((7, 7))).block_until_ready()
    return fs


def _check_freed():
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


def _check_fit_and_sample():
    f = _compiled_programs(1)[0]
    programs.FIT_FRACTION = 0.0  # as if the process were at the cap (a process of its own)
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


# The checks free every compiled program of their process: in a pytest worker the first took
# 11.8 s (some 30,000 memory mappings to unmap) and the worker's later tests compiled their small
# programs again. They run in a fresh interpreter of their own (with the suite's flags),
# once per suite run, and each test reads its check's outcome.
_RUN_CHECKS = """
import json, runpy, sys, traceback
ns, out = runpy.run_path(sys.argv[1]), {}
for name in ("_check_freed", "_check_fit_and_sample"):
    try:
        ns[name]()
        out[name] = "ok"
    except BaseException:
        out[name] = traceback.format_exc()[-3000:]
print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def checks(once_per_run, python_result):
    flags = os.environ.get("XLA_FLAGS", "")
    return once_per_run("programs-checks", lambda folder: python_result(_RUN_CHECKS, flags, args=(__file__,)))[1]


def test_programs_are_freed_past_the_fraction_and_kept_below_it(checks):
    assert checks["_check_freed"] == "ok", checks["_check_freed"]


def test_fit_and_sample_make_room_before_they_compile(checks):
    assert checks["_check_fit_and_sample"] == "ok", checks["_check_fit_and_sample"]
