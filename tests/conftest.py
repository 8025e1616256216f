import os
import shutil
import subprocess
import sys
import tempfile

# ---- the suite's XLA settings: set before JAX starts, inherited by every subprocess ------
# Compilation, not running, is most of the suite's time, and the tests' programs are small.
# Three XLA flags compile them faster, and a fourth runs them with less contention (two
# PCD fits of an MLP of width 128, the second with a fresh optimizer, on a busy 2-core
# machine: 8.2-8.9 s of XLA compilation at the defaults, 5.8-6.0 s with the first flag,
# 2.4-2.9 s with the first two; the whole suite took 25 min before these flags and the
# cache below, 12.5-17 min with the first two, 10.75-13.5 min with all three and the smoke
# runs in the workers, see run_script):
# - LLVM's optimisation level 0; an MLP then runs up to 2x slower and a convolution up to
#   4x (the few tests that train for long keep their nets small);
# - XLA:CPU's loop emitters instead of its MLIR fusion emitters (same running speed);
# - one LLVM module per program instead of split ones compiled in parallel: on two
#   cores shared by two workers the split only adds work (an MLP and a conv fit, one
#   process: 3.5-3.9 s of XLA compilation instead of 4.2-5.4 s);
# - Eigen's matrix products and convolutions on one thread: two workers share two cores,
#   and two thread pools per core compete instead (six test files, 188 tests, two workers,
#   two interleaved pairs: 201 and 210 s, 350 and 370 CPU s, against 207 and 225 s, 365
#   and 389 CPU s with the pools).
# And one compilation cache for the whole run, in a temporary folder: a program a test
# compiles again (a fresh optax optimizer, another worker, a subprocess, a worker that
# freed its programs, see _room_for_compiled_programs) is read back instead. A size limit
# makes JAX lock the folder (filelock) while reading or writing an entry, so that two
# processes never read a half-written one; it also makes every write scan the folder, so
# only programs that took 50 ms or more to compile are kept (keeping all of them, 3,500
# entries by mid-run, slowed the suite down instead).
# The controller (or a -n0 run) decides once, before it starts the workers, which inherit
# the environment; an XLA flag this jaxlib does not know would abort every process, so a
# subprocess tries the flags first and the suite runs without the ones it refuses. A test
# that sets XLA_FLAGS for a subprocess appends to this value.
SUITE_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                   "--xla_cpu_parallel_codegen_split_count=1", "--xla_cpu_multi_thread_eigen=false")
_OWN_CACHE = None
if "DECLEBM_TESTS_XLA_SET" not in os.environ:
    def _jax_starts_with(flags):
        return subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], capture_output=True,
                              env=dict(os.environ, XLA_FLAGS=" ".join(flags))).returncode == 0

    _flags = os.environ.get("XLA_FLAGS", "").split()
    if _jax_starts_with([*_flags, *SUITE_XLA_FLAGS]):
        _flags += SUITE_XLA_FLAGS
    else:
        _flags += [f for f in SUITE_XLA_FLAGS if _jax_starts_with([*_flags, f])]
    if _flags:
        os.environ["XLA_FLAGS"] = " ".join(_flags)
    _OWN_CACHE = tempfile.mkdtemp(prefix="declebm-tests-xla-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_OWN_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.05",
                      JAX_COMPILATION_CACHE_MAX_SIZE=str(16 << 30), DECLEBM_TESTS_XLA_SET="1")


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


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

import jax  # noqa: E402

import declebm as eb  # noqa: E402

# The workers lower their programs without Shardy, JAX's default partitioner. A worker has
# one CPU device, so none of its programs is ever partitioned, yet with Shardy on its
# dialect and passes still run on every program lowered. A compile benchmark (PCD and DSM
# fits of an MLP, a conv PCD fit, AIS and SMC on a 10-D MLP; one process, two interleaved
# pairs): 18.5 and 17.2 s without, 20.5 and 19.6 s with (22.7 and 21.9 CPU s against 25.3
# and 24.8). Five test files (log Z accuracy, SMC, AIS, NCE, conv; 77 tests; two workers;
# two interleaved pairs): 139 and 126 s without, 156 and 149 s with (260 and 233 CPU s
# against 291 and 278). Only the worker is set, not the environment: every test that runs
# on several devices (a forced device count, jax.distributed) runs in a subprocess, on the
# default.
jax.config.update("jax_use_shardy_partitioner", False)

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

_PROGRAMS = collections.Counter()  # executables made (compiled or read from the cache) and tests since the last look


def _count_programs(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _PROGRAMS["made"] += 1


jax.monitoring.register_event_duration_secs_listener(_count_programs)


class _ProgramsIn:
    """A block's count of programs made (the counter above): ``len()`` of it, after the block."""

    def __enter__(self):
        self.start, self.end = _PROGRAMS["made"], None
        return self

    def __exit__(self, *exc):
        self.end = _PROGRAMS["made"]

    def __len__(self):
        return (_PROGRAMS["made"] if self.end is None else self.end) - self.start


@pytest.fixture
def programs_compiled():
    """``with programs_compiled() as made: ...``: ``len(made)`` is the number of programs XLA
    compiled inside the block (JAX's compile event, counted above; one read back from the
    cache is not one). The counter is reset only between tests."""
    return _ProgramsIn


@pytest.fixture(autouse=True)
def _room_for_compiled_programs():
    """A pytest worker compiles thousands of programs, and XLA:CPU keeps each one's code in
    memory mappings of its own; at Linux's cap (vm.max_map_count, 65530) the next compilation
    kills the worker (at stop 29, one worker of every full run segfaulted inside XLA
    compilation). Between tests, past 65% of the cap, the compiled programs are freed,
    below the 75% at which fit and sample do it with a warning. Freeing is not free: 5-7 s
    to unmap some 30,000 mappings (measured), and the worker's later tests compile their
    small programs again; at half the cap it happened about once a run. The 35% left (some
    23,000 mappings) is four times what the largest test makes (the images example's smoke
    runs: 5,400 in a fresh process). Reading /proc/self/maps takes 27 ms at 30,000
    mappings (measured), so it is read only after 20 new programs (JAX's compile event,
    counted above) or 50 tests."""
    yield
    _PROGRAMS["tests"] += 1
    if _PROGRAMS["made"] >= 20 or _PROGRAMS["tests"] >= 50:
        _PROGRAMS.clear()
        make_room_for_programs(0.65, warn=False)


# ---- an expensive result computed once per run, whichever worker asks first ------------
import json  # noqa: E402
import pathlib  # noqa: E402

from filelock import FileLock  # noqa: E402


@pytest.fixture(scope="session")
def once_per_run(tmp_path_factory, worker_id):
    """``once_per_run(name, make) -> (folder, result)``: ``make(folder)`` (a JSON-able result,
    files in ``folder``) runs in the first pytest worker that asks; the other workers wait
    for it and read the same result back. A module-scoped fixture would run once per
    worker that gets one of its tests, and again whenever a worker returns to the module
    after another (two-process training, the 8-device subprocess: about a minute each)."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker_id != "master" else root  # the run's folder, shared by its workers

    def get(name: str, make) -> tuple[pathlib.Path, object]:
        folder, done = root / name, root / f"{name}.json"
        with FileLock(str(root / f"{name}.lock")):
            if not done.exists():
                folder.mkdir(exist_ok=True)
                done.write_text(json.dumps(make(folder)))
        return folder, json.loads(done.read_text())

    return get


# ---- a result computed in a fresh interpreter --------------------------------------------
def _python_result(code: str, xla_flags: str, *, args: tuple = (), timeout: float = 600):
    """Run ``python -c CODE ARGS`` on the CPU with ``XLA_FLAGS=xla_flags``; a non-zero exit
    fails the test; returns the JSON the code printed on its line starting ``RESULT ``."""
    proc = subprocess.run([sys.executable, "-c", code, *args], env=dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])


@pytest.fixture
def python_result():
    """``python_result(code, xla_flags, args=(), timeout=600) -> result``: ``code`` run in a fresh
    interpreter (for what needs its own process: a forced device count, other XLA flags),
    which prints its JSON result on a line starting ``RESULT ``."""
    return _python_result


@pytest.fixture
def at_default_level():
    """``at_default_level(path, function) -> result``: ``function()`` of the file ``path``
    (a JSON-able result) in a fresh interpreter that compiles at XLA's default settings,
    without the suite's flags: for the few tests bound by running, not by compiling. The
    level-0 recovery fit (1500 steps of 150 Langevin steps each) takes 50 s at the suite's
    LLVM level 0 and 9 s at the default level (the same results to 1e-7), plus 3 s to start."""

    def run(path: str, function: str):
        flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f not in SUITE_XLA_FLAGS)
        return _python_result(f"import json, runpy; print('RESULT ' + json.dumps(runpy.run_path({str(path)!r})"
                              f"[{function!r}]()))", flags)

    return run


# ---- a script's command line, run in this process ---------------------------------------
import runpy  # noqa: E402


@pytest.fixture
def run_script(monkeypatch, capsys):
    """``run_script(path, argv) -> stdout``: the command line ``python PATH ARGV`` run in the
    test's process (``runpy`` as ``__main__``, ``sys.argv`` set), as the examples' and the
    benchmarks' smoke runs run: it shares the programs the worker has compiled instead of
    importing everything and compiling every small program again in a new process. A
    non-zero exit fails the test. Afterwards ``sys.argv``, ``sys.path`` and ``sys.modules``
    (the modules the script imported from its own folder, as ``gpu_check.py`` imports
    ``bench_images``) are as before, and matplotlib's figures are closed."""

    def run(path: str, argv: list[str]) -> str:
        monkeypatch.setenv("MPLBACKEND", "Agg")  # before a first figure imports matplotlib
        monkeypatch.setattr(sys, "argv", [path, *argv])
        monkeypatch.setattr(sys, "path", list(sys.path))
        modules, folder = set(sys.modules), os.path.dirname(os.path.abspath(path))
        capsys.readouterr()
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            assert e.code in (0, None), f"{os.path.basename(path)} {' '.join(argv)}: exit status {e.code}"
        finally:
            for name in set(sys.modules) - modules:
                if os.path.dirname(os.path.abspath(getattr(sys.modules[name], "__file__", None) or "/")) == folder:
                    del sys.modules[name]
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close("all")
        return capsys.readouterr().out

    return run


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
