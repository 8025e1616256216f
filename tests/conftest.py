import os

# One persistent compilation cache for the session, this process and every subprocess (the
# examples, benchmarks and workers inherit the environment): the same programs (a model's fit
# chunk, an AIS schedule) recur across tests and processes. Programs that compiled in under
# 0.5 s are not written. JAX reads both variables when it is imported (below, via declebm).
# (Not XLA's --xla_backend_optimization_level=0: it compiles faster, the whole suite 24 min 59 s
# -> 17 min 47 s on two cores, but jaxlib 0.10.2 then segfaulted in compilation, in the cache
# write or in backend_compile, late in a pytest worker's life in three runs of three.)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                                ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

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
