import os

# Compilation, not running, is most of the suite's time, and the tests' programs are small:
# LLVM's optimisation level 0 compiles them faster (a fit chunk 13.5 -> 8.5 CPU-s; the whole
# suite 24 min 59 s -> 17 min 47 s on two cores), though convolutions then run up to 4x
# slower (the few tests that train a conv net for hundreds of steps keep it small). Set
# before JAX starts its backend, in the environment so that every subprocess a test starts
# (examples, benchmarks, workers) inherits it; a test that sets XLA_FLAGS for a subprocess
# appends to this value.
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)
# No persistent compilation cache: writing executables compiled at level 0 to JAX's cache
# crashed a pytest worker (a segfault in compilation_cache.put_executable_and_time, jaxlib
# 0.10.2) in two runs of the suite out of two; JAX_COMPILATION_CACHE_DIR, if you set one,
# is yours.

# Every Python subprocess a test starts (``python -c ...``, examples, benchmarks, workers)
# imports the INSTALLED declebm, as the tests themselves do (--import-mode=importlib).
# Without this, ``python -c`` run from the repository root puts the root first on
# sys.path, and the source folder ``declebm/`` shadows the installed package (it imports
# too, ``declebm/__init__.py`` finding ``models/`` and ``inference/`` beside it, but the
# tests check the install). PYTHONSAFEPATH (Python >= 3.11) leaves the cwd and the
# script's folder off sys.path.
os.environ["PYTHONSAFEPATH"] = "1"


# ---- counting traces: one strategy wrapper for every "fit compiles once" test ----------
import collections  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402

import declebm as eb  # noqa: E402

_TRACES: collections.Counter = collections.Counter()


class CountingStrategy(eb.AbstractStrategy):
    """Forwards every method to ``inner`` and counts how often ``loss`` and
    ``after_update`` are traced (Python runs them only while JAX traces)."""

    inner: eb.AbstractStrategy

    def init(self, model, data, key, *, batch_size=None):
        return self.inner.init(model, data, key, batch_size=batch_size)

    def init_model(self, model, data, key):
        return self.inner.init_model(model, data, key)

    def loss(self, model, batch, state, key):
        _TRACES["loss"] += 1
        return self.inner.loss(model, batch, state, key)

    def after_update(self, old_model, new_model, state, key):
        _TRACES["after_update"] += 1
        return self.inner.after_update(old_model, new_model, state, key)

    def per_chain(self, state):
        return self.inner.per_chain(state)


@pytest.fixture
def trace_counts():
    """``(wrap, counts)``: ``wrap(strategy)`` counts its traces into ``counts`` (reset here)."""
    _TRACES.clear()
    return types.SimpleNamespace(wrap=CountingStrategy, counts=_TRACES)
