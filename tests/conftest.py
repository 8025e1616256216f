import os

# Compilation, not running, is most of the suite's time, and the tests' programs are small:
# LLVM's optimisation level 0 compiles them faster (a fit of a new shape 6.6 -> 3.9 s),
# though convolutions then run up to 4x slower (the few tests that train a conv net for
# hundreds of steps keep it small). Set before JAX starts its backend, in the environment
# so that every subprocess a test starts (examples, benchmarks, workers) inherits it; a
# test that sets XLA_FLAGS for a subprocess appends to this value. (At stops 27 and 29 a
# worker died inside XLA compilation in every full run, with and without this level: the
# workers ran out of memory mappings, see _room_for_compiled_programs below.)
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)
# No persistent compilation cache: the suite ran at the same pace without it, and nothing
# serialises an executable; JAX_COMPILATION_CACHE_DIR, if you set one, is left out.
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

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


# ---- room for compiled programs in a pytest worker ---------------------------------------
from declebm._programs import make_room_for_programs  # noqa: E402


@pytest.fixture(autouse=True)
def _room_for_compiled_programs():
    """A pytest worker compiles thousands of programs, and XLA:CPU keeps each one's code in
    memory mappings of its own; at Linux's cap (vm.max_map_count, 65530) the next compilation
    kills the worker (at stop 29, one worker of every full run segfaulted inside XLA
    compilation). Between tests, past half the cap, the compiled
    programs are freed, below the 75% at which fit and sample do it with a warning."""
    yield
    make_room_for_programs(0.5, warn=False)


# ---- tiny image files in the standard formats, written by an independent writer ---------
import gzip  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402


def _write_idx(path, array, *, gz=False):
    """LeCun's IDX format written by hand: 0, 0, type 0x08 (ubyte), ndim, big-endian sizes, data."""
    array = np.ascontiguousarray(array, np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)


def _pixels(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write_cifar(folder, names, n_each, protocol=2):
    """CIFAR-10's python batches: dicts of bytes keys, ``data`` uint8 rows of 3072 (R, G, B planes)."""
    os.makedirs(folder, exist_ok=True)
    pixels, labels = [], []
    for i, name in enumerate(names):
        data = _pixels(n_each, (3072,), 10 + i)
        lab = [(i + j) % 10 for j in range(n_each)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": b"test", b"labels": lab, b"data": data, b"filenames": [b"x.png"] * n_each},
                        f, protocol=protocol)
        pixels.append(data)
        labels += lab
    return np.concatenate(pixels), labels


@pytest.fixture
def image_files():
    """Writers of the standard image files: ``idx(path, array, gz=)`` (MNIST's IDX),
    ``cifar(folder, names, n_each, protocol)`` (CIFAR-10's pickled batches), ``pixels(n,
    shape, seed)`` (random uint8 images)."""
    return types.SimpleNamespace(idx=_write_idx, cifar=_write_cifar, pixels=_pixels)
