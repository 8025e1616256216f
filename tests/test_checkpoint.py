"""Checkpoints: published whole, verified on load, tied to the run that wrote them."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import declebm as eb
from declebm._checkpoint import (
    _meta_checksum,
    check_checkpoint_dir,
    load_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from declebm.inference import MALA, Langevin, PersistentCD
from declebm.models import MLPEnergy

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- the module on its own --------------------------------------------------------------


class Carry(eqx.Module):
    params: jax.Array
    step: jax.Array


def _carry(step, width=4):
    return Carry(jnp.arange(width, dtype=jnp.float32) * step, jnp.asarray(step, jnp.int32))


def _run(**change):
    kw = dict(model=eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), data=np.ones((64, 2), np.float32),
              strategy=PersistentCD(Langevin(0.05), steps=1), optimizer=optax.adam(1e-3), key=jax.random.key(0),
              batch_size=16, ema_decay=None)
    kw.update(change)
    return run_fingerprint(**kw)


@pytest.fixture(scope="module")
def run():
    return _run()


def _save(d, steps, run, width=4):
    for s in steps:
        save_checkpoint(str(d), _carry(s, width), {"step": [s], "loss": [0.5 * s]}, step=s, run=run)


def _entries(d):
    return sorted(os.listdir(d))


def test_the_two_newest_are_kept_and_the_newest_is_loaded(tmp_path, run):
    _save(tmp_path, [10, 20, 30], run)
    assert _entries(tmp_path) == ["step-00000020", "step-00000030"]
    carry, history = load_checkpoint(str(tmp_path), _carry(0), run=run, num_steps=100)
    assert int(carry.step) == 30 and carry.params[1] == 30.0
    assert history["loss"].tolist() == [15.0]
    assert load_checkpoint(str(tmp_path / "empty"), _carry(0), run=run, num_steps=100) is None


def test_a_resume_after_a_kill_between_publishing_and_retiring_keeps_the_two_newest(tmp_path, run, monkeypatch):
    # A kill after a checkpoint is published and before the oldest is retired leaves three;
    # the resume that follows retires the extra one (before, three stayed until the next
    # save, and none came when the run was already complete).
    import declebm._checkpoint as ckpt

    _save(tmp_path, [10, 20], run)
    with monkeypatch.context() as m:
        m.setattr(ckpt, "_retire", lambda *a, **k: None)  # the kill window: nothing retired
        _save(tmp_path, [30], run)
    assert _entries(tmp_path) == ["step-00000010", "step-00000020", "step-00000030"]
    carry, _ = load_checkpoint(str(tmp_path), _carry(0), run=run, num_steps=100)
    assert int(carry.step) == 30 and _entries(tmp_path) == ["step-00000020", "step-00000030"]


def test_a_relative_checkpoint_dir_saves_and_loads(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _save("runs/ckpt", [10, 20], run)
    carry, _ = load_checkpoint("runs/ckpt", _carry(0), run=run, num_steps=100)
    assert int(carry.step) == 20 and _entries(tmp_path / "runs" / "ckpt") == ["step-00000010", "step-00000020"]


@pytest.mark.slow
def test_one_process_writes_one_file_and_never_loads_orbax(tmp_path):
    """A single process writes state.eqx (format 2) and does not import Orbax, which is
    loaded only with several processes (with it in the process, jaxlib 0.10.2 segfaulted
    in XLA compilations: _checkpoint's docstring)."""
    code = (
        "import sys, jax, declebm as eb\n"
        "from declebm.inference import Langevin, PersistentCD\n"
        "from declebm.models import MLPEnergy\n"
        "d = eb.datasets.toy('8gaussians', 64, key=jax.random.key(0))\n"
        "kw = dict(batch_size=16, key=jax.random.key(1), progress=False, checkpoint_dir=sys.argv[1])\n"
        "m = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))\n"
        "eb.fit(m, d, PersistentCD(Langevin(0.01), steps=1), num_steps=4, checkpoint_every=2, **kw)\n"
        "r = eb.fit(m, d, PersistentCD(Langevin(0.01), steps=1), num_steps=6, resume=True, **kw)\n"
        "print('RESUMED', r.resumed_from, 'orbax.checkpoint' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ckpt")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RESUMED 4 False" in out.stdout, out.stdout
    assert sorted(os.listdir(_newest(tmp_path / "ckpt"))) == ["meta.json", "state.eqx"]


def test_saving_the_same_step_again_replaces_it(tmp_path, run):
    _save(tmp_path, [10, 20, 20], run)
    assert _entries(tmp_path) == ["step-00000010", "step-00000020"]


def test_leftovers_of_killed_writers_are_removed_but_not_those_of_live_ones(tmp_path, run):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".tmp-{dead.pid}-step-5-abc", f".tmp-{os.getppid()}-step-5-abc"):
        os.mkdir(tmp_path / name)
        (tmp_path / name / "state.eqx").write_bytes(b"half")
    (tmp_path / f"checkpoint.eqx.tmp-{dead.pid}").write_bytes(b"old layout")
    _save(tmp_path, [10], run)
    assert _entries(tmp_path) == [f".tmp-{os.getppid()}-step-5-abc", "step-00000010"]


def _newest(d):
    return os.path.join(d, _entries(d)[-1])


def _delete_state(path):
    os.remove(os.path.join(path, "state.eqx"))


def _delete_meta(path):
    os.remove(os.path.join(path, "meta.json"))


def _truncate(path):
    f = os.path.join(path, "state.eqx")
    data = open(f, "rb").read()
    open(f, "wb").write(data[: len(data) // 2])


def _garbage(path):
    open(os.path.join(path, "state.eqx"), "wb").write(os.urandom(300))


def _flip_byte(path):
    f = os.path.join(path, "state.eqx")
    data = bytearray(open(f, "rb").read())
    data[-3] ^= 0x40
    open(f, "wb").write(bytes(data))


def _edit_meta(path):  # a changed number in the history, valid JSON
    f = os.path.join(path, "meta.json")
    meta = json.load(open(f))
    meta["history"]["loss"] = [123.0]
    json.dump(meta, open(f, "w"))


def _rewrite_meta(path, edit):  # as a tool rewriting meta.json would: its checksum recomputed
    f = os.path.join(path, "meta.json")
    meta = json.load(open(f))
    edit(meta)
    meta["checksum"] = _meta_checksum(meta)
    json.dump(meta, open(f, "w"))


def _edit_history_rechecked(path):
    _rewrite_meta(path, lambda meta: meta["history"].update(loss=[123.0]))


def _ragged_history_rechecked(path):
    _rewrite_meta(path, lambda meta: meta["history"].update(loss=[1.0, 2.0]))


def _path_outside_rechecked(path):
    _rewrite_meta(path, lambda meta: meta["files"].update({"../../etc/passwd": {"bytes": 1, "sha256": "0"}}))


def _no_run_rechecked(path):
    _rewrite_meta(path, lambda meta: meta.pop("run"))


def _garbage_meta(path):
    open(os.path.join(path, "meta.json"), "w").write("{not json")


def _other_width(path):  # the state file of a wider model's checkpoint
    other = os.path.join(os.path.dirname(path), "..", "other")
    save_checkpoint(other, _carry(30, width=9), {}, step=30, run={})
    shutil.copy(os.path.join(_newest(other), "state.eqx"), os.path.join(path, "state.eqx"))


DAMAGE = {
    "deleted state.eqx": (_delete_state, "state.eqx is missing"),
    "deleted meta.json": (_delete_meta, "meta.json is missing"),
    "truncated": (_truncate, "state.eqx is truncated"),
    "garbage": (_garbage, "state.eqx is truncated"),
    "byte flipped": (_flip_byte, "state.eqx is corrupt"),
    "edited meta.json": (_edit_meta, "meta.json is corrupt"),
    "garbage meta.json": (_garbage_meta, "meta.json is not valid JSON"),
    "history edited, checksum recomputed": (
        _edit_history_rechecked, "meta.json: its history does not match the one recorded at the end of .*state.eqx"),
    "history of unequal lengths, checksum recomputed": (
        _ragged_history_rechecked, "meta.json: its history's entries have different lengths"),
    "no run entry, checksum recomputed": (_no_run_rechecked, "meta.json has no 'run' entry"),
    "a path outside the folder, checksum recomputed": (
        _path_outside_rechecked, "meta.json: its 'files' entry names '../../etc/passwd', a path outside"),
    "from another width": (_other_width, "state.eqx is"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, run, damage):
    d = tmp_path / "ckpt"
    _save(d, [10, 20], run)
    fn, reason = DAMAGE[damage]
    fn(_newest(d))
    with pytest.warns(UserWarning, match=f"{reason}.*resuming from the previous complete checkpoint .*step-00000010"):
        carry, history = load_checkpoint(str(d), _carry(0), run=run, num_steps=100)
    assert int(carry.step) == 10 and history["loss"].tolist() == [5.0]
    # The next save replaces the damaged later checkpoint instead of keeping it as "newest".
    _save(d, [15], run)
    assert _entries(d) == ["step-00000010", "step-00000015"]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_only_checkpoint_is_an_error_naming_the_file(tmp_path, run, damage):
    d = tmp_path / "ckpt"
    _save(d, [10], run)
    fn, reason = DAMAGE[damage]
    fn(_newest(d))
    with pytest.raises(ValueError, match=f"every checkpoint in .* is damaged: .*step-00000010.{reason}"):
        load_checkpoint(str(d), _carry(0), run=run, num_steps=100)


def _as_format_1(path):
    """Rewrite a checkpoint as format 1 wrote it: state.eqx without the history line."""
    f = os.path.join(path, "state.eqx")
    data = open(f, "rb").read()
    assert data.endswith(b"\n") and b"declebm-history sha256 " in data[-100:]
    data = data[: data.rindex(b"declebm-history sha256 ")]
    open(f, "wb").write(data)
    _rewrite_meta(path, lambda meta: meta.update(
        version=1, files={"state.eqx": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}))


def test_a_checkpoint_of_format_1_still_resumes_checked_as_then(tmp_path, run):
    _save(tmp_path, [10], run)
    _as_format_1(_newest(tmp_path))
    carry, history = load_checkpoint(str(tmp_path), _carry(0), run=run, num_steps=100)
    assert int(carry.step) == 10 and history["loss"].tolist() == [5.0]
    _flip_byte(_newest(tmp_path))
    with pytest.raises(ValueError, match="step-00000010.state.eqx is corrupt"):
        load_checkpoint(str(tmp_path), _carry(0), run=run, num_steps=100)


def test_a_committed_checkpoint_of_format_2_resumes(tmp_path, run):
    """tests/data/checkpoint_v2: ``_save(d, [10], _run())`` as the previous stop wrote it,
    with the data's record of then (the whole array's sha256, no per-row digest)."""
    d = tmp_path / "v2"
    shutil.copytree(os.path.join(HERE, "data", "checkpoint_v2"), d)
    carry, history = load_checkpoint(str(d), _carry(0), run=run, num_steps=100)
    assert int(carry.step) == 10 and carry.params.tolist() == [0.0, 10.0, 20.0, 30.0]
    assert history["loss"].tolist() == [5.0]


def test_num_steps_below_the_checkpoint_is_refused(tmp_path, run):
    _save(tmp_path, [30], run)
    with pytest.raises(ValueError, match="num_steps: 20 is below the step 30"):
        load_checkpoint(str(tmp_path), _carry(0), run=run, num_steps=20)
    assert load_checkpoint(str(tmp_path), _carry(0), run=run, num_steps=30) is not None


CHANGES = {
    "learning rate": (dict(optimizer=optax.adam(2e-3)), "learning rate/optimizer"),
    "optimizer": (dict(optimizer=optax.sgd(1e-3)), "learning rate/optimizer"),
    "schedule": (dict(optimizer=optax.adam(optax.linear_schedule(1e-3, 0.0, 100))), "learning rate/optimizer"),
    "adam b1": (dict(optimizer=optax.adam(1e-3, b1=0.8)), "learning rate/optimizer.*b1"),
    "key": (dict(key=jax.random.key(1)), "key"),
    "data": (dict(data=np.full((64, 2), 1.001, np.float32)), "data"),
    "data size": (dict(data=np.ones((65, 2), np.float32)), "data"),
    "sampler": (dict(strategy=PersistentCD(MALA(0.05), steps=1)), "strategy.*MALA"),
    "sampler step size": (dict(strategy=PersistentCD(Langevin(0.1), steps=1)), "strategy.*: strategy.sampler.step_size.*: 0.05.* in the checkpoint, 0.1.* now"),
    "sampler steps": (dict(strategy=PersistentCD(Langevin(0.05), steps=3)), "strategy.*: strategy.steps: 1 in the checkpoint, 3 now"),
    "num_chains": (dict(strategy=PersistentCD(Langevin(0.05), steps=1, num_chains=32)), "strategy.*: strategy.num_chains: null in the checkpoint, 32 now"),
    "batch_size": (dict(batch_size=32), "batch_size"),
    "ema_decay": (dict(ema_decay=0.99), "ema_decay"),
    "model width": (dict(model=eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0)))), "model structure.*shape"),
    "activation": (dict(model=eb.EBM(MLPEnergy(2, 8, 1, jnp.tanh, key=jax.random.key(0)))), "model structure.*tanh"),
    "temperature": (dict(model=eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)), inverse_temperature=2.0)),
                    "model structure.*inverse_temperature"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_refuses_a_different_run_naming_what_changed(tmp_path, run, change):
    _save(tmp_path, [10], run)
    kwargs, match = CHANGES[change]
    with pytest.raises(ValueError, match=f"resume: the checkpoint in .* was written with a different {match}"):
        load_checkpoint(str(tmp_path), _carry(0), run=_run(**kwargs), num_steps=100)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda p: 3, TypeError, "checkpoint_dir: expected a folder path"),
        (lambda p: b"dir", TypeError, "checkpoint_dir: expected a folder path"),
        (lambda p: "", ValueError, "checkpoint_dir: expected a folder path"),
        (lambda p: (p / "file").write_text("x") and p / "file", ValueError, "checkpoint_dir: .* is an existing file"),
        (lambda p: (p / "file").write_text("x") and p / "file" / "sub", ValueError, "checkpoint_dir: .* is not writable: cannot create"),
    ],
)
def test_check_checkpoint_dir_refuses_bad_paths(tmp_path, make, exc, match):
    with pytest.raises(exc, match=match):
        check_checkpoint_dir(make(tmp_path))


def test_check_checkpoint_dir_refuses_to_start_over_on_checkpoints(tmp_path, run):
    assert check_checkpoint_dir(tmp_path / "new") == str(tmp_path / "new") and (tmp_path / "new").is_dir()
    _save(tmp_path / "new", [10], run)
    with pytest.raises(ValueError, match="checkpoint_dir: .* already holds checkpoints up to step 10; pass resume=True"):
        check_checkpoint_dir(tmp_path / "new")
    assert check_checkpoint_dir(tmp_path / "new", resume=True) == str(tmp_path / "new")


# ---- through fit -----------------------------------------------------------------------------


def _data(n=256):
    return eb.datasets.toy("8gaussians", n, key=jax.random.key(0))


def _model():
    return eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))


KW = dict(strategy=PersistentCD(Langevin(0.05), steps=1), batch_size=16, chunk_size=10,
          key=jax.random.key(3), progress=False)


def _assert_same_result(a, b):
    for x, y in zip(jax.tree.leaves(eqx.filter(a.model, eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter(b.model, eqx.is_inexact_array))):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.state.chains, b.state.chains)
    np.testing.assert_array_equal(a.history["step"], b.history["step"])
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])


@pytest.fixture(scope="module")
def full():
    return eb.fit(_model(), _data(), num_steps=40, **KW)


def test_checkpoint_resume_is_exact(tmp_path, full):
    d = tmp_path / "ckpt"
    part = eb.fit(_model(), _data(), num_steps=30, checkpoint_dir=d, checkpoint_every=10, **KW)
    assert part.step == 30 and _entries(d) == ["step-00000020", "step-00000030"]
    resumed = eb.fit(_model(), _data(), num_steps=40, checkpoint_dir=d, resume=True, **KW)
    assert resumed.step == 40
    _assert_same_result(full, resumed)
    assert _entries(d) == ["step-00000030", "step-00000040"]


def test_resume_falls_back_over_a_damaged_checkpoint_and_still_finishes_exactly(tmp_path, full):
    d = tmp_path / "ckpt"
    eb.fit(_model(), _data(), num_steps=30, checkpoint_dir=d, checkpoint_every=10, **KW)
    os.remove(os.path.join(_newest(d), "state.eqx"))
    with pytest.warns(UserWarning, match="state.eqx is missing.*step-00000020"):
        resumed = eb.fit(_model(), _data(), num_steps=40, checkpoint_dir=d, resume=True, **KW)
    _assert_same_result(full, resumed)


def test_resume_of_a_damaged_only_checkpoint_is_an_error_not_a_restart(tmp_path):
    d = tmp_path / "ckpt"
    eb.fit(_model(), _data(), num_steps=10, checkpoint_dir=d, **KW)
    os.remove(os.path.join(_newest(d), "meta.json"))
    with pytest.raises(ValueError, match="meta.json is missing"):
        eb.fit(_model(), _data(), num_steps=20, checkpoint_dir=d, resume=True, **KW)
    assert _entries(d) == ["step-00000010"]  # nothing was overwritten


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(optimizer=optax.adam(3e-3)), "learning rate/optimizer"),
        (dict(batch_size=32), "batch_size"),
        (dict(strategy=PersistentCD(Langevin(0.05), steps=1, num_chains=8)), "num_chains"),
        (dict(key=jax.random.key(4)), "key"),
    ],
)
def test_fit_refuses_to_resume_a_different_run(tmp_path, change, match):
    eb.fit(_model(), _data(), num_steps=10, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match=f"resume: the checkpoint in .* different .*{match}"):
        eb.fit(_model(), _data(), num_steps=20, checkpoint_dir=tmp_path, resume=True, **dict(KW, **change))


def test_fit_refuses_num_steps_below_the_checkpoint_and_a_new_run_over_checkpoints(tmp_path):
    eb.fit(_model(), _data(), num_steps=20, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="num_steps: 10 is below the step 20"):
        eb.fit(_model(), _data(), num_steps=10, checkpoint_dir=tmp_path, resume=True, **KW)
    with pytest.raises(ValueError, match="checkpoint_dir: .* already holds checkpoints"):
        eb.fit(_model(), _data(), num_steps=10, checkpoint_dir=tmp_path, **KW)


TRACED = []


class RecordingCD(eb.AbstractStrategy):
    """Persistent CD that notes when its loss is traced (that is, when training starts)."""

    inner: PersistentCD

    def init(self, model, data, key, *, batch_size=None):
        return self.inner.init(model, data, key, batch_size=batch_size)

    def loss(self, model, batch, state, key):
        TRACED.append(1)
        return self.inner.loss(model, batch, state, key)


@pytest.mark.parametrize("bad, exc", [(3, TypeError), ("file", ValueError), ("file/sub", ValueError)])
def test_fit_checks_checkpoint_dir_before_training(tmp_path, bad, exc):
    (tmp_path / "file").write_text("x")
    if isinstance(bad, str):
        bad = str(tmp_path / bad)
    TRACED.clear()
    with pytest.raises(exc, match="checkpoint_dir"):
        eb.fit(_model(), _data(), num_steps=10, checkpoint_dir=bad,
               **dict(KW, strategy=RecordingCD(PersistentCD(Langevin(0.05), steps=1))))
    assert not TRACED  # refused before anything was traced or run


# ---- kill -9 -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_random_times_and_at_the_worst_instants_resumes_exactly(tmp_path):
    """Each life of the worker resumes from the folder; some are SIGKILLed by the parent at a
    random instant after their first chunk, others kill themselves inside save_checkpoint at
    the instants that matter (temp folder written but not published; published but older
    ones not removed; an old one renamed aside but not deleted). Every resume must succeed,
    no published checkpoint may ever be damaged, and the end result must be bit-identical
    to an uninterrupted run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("checkpoint_worker", os.path.join(HERE, "checkpoint_worker.py"))
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    from declebm._checkpoint import _complete_steps, _verify

    d, out = str(tmp_path / "ckpt"), str(tmp_path / "out.npz")
    rng = random.Random(0)
    # The worst instants first (each is then certain to be reached), then random kills.
    lives = [("written", 2), ("published", 3), ("removing", 1), ("random", None), ("random", None), ("random", None)]
    kills = 0
    for stage, nth in lives + [("finish", None)]:
        args = [sys.executable, os.path.join(HERE, "checkpoint_worker.py"), d, out]
        if nth is not None:
            args += [stage, str(nth)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if stage == "random":
            line = proc.stdout.readline()  # the first chunk ran: compilation is over
            assert line.startswith(("ready", "done")), proc.stderr.read()
            subprocess.run(["sleep", f"{rng.uniform(0.0, 0.3):.3f}"])
            proc.kill()
        stdout, stderr = proc.communicate(timeout=120)
        if stage == "finish":
            assert proc.returncode == 0, stderr
        else:
            # Killed (or, for a late random kill, already done): never a failed resume.
            assert proc.returncode in (0, -9), stderr
            if stage != "random":
                assert proc.returncode == -9, f"the instant {stage!r} was never reached"
            kills += proc.returncode == -9
        for _, path in _complete_steps(d):
            assert _verify(path)[0] is not None, _verify(path)[1]
    assert kills >= 4  # the three worst-instant kills and at least one random one
    assert [n for n in os.listdir(d) if n.startswith(".tmp")] == []
    assert len(_complete_steps(d)) == 2

    model, data, kwargs = worker.setup()
    reference = worker.summary(eb.fit(model, data, **kwargs))
    resumed = np.load(out)
    assert sorted(resumed.files) == sorted(reference)
    for k in reference:
        np.testing.assert_array_equal(resumed[k], reference[k], err_msg=k)


def test_a_state_holding_a_numpyro_density_resumes_in_a_process_whose_field_order_differs(tmp_path, run, monkeypatch):
    # NumPyro orders a density's leaves by a set of field names (PYTHONHASHSEED-dependent)
    import numpyro.distributions as dist

    state = {"base": dist.Normal(jnp.arange(3.0), jnp.arange(1.0, 4.0)), "step": jnp.asarray(5, jnp.int32)}
    save_checkpoint(str(tmp_path), state, {"step": [5]}, step=5, run=run)
    order = tuple(reversed(dist.Normal.gather_pytree_data_fields()))
    monkeypatch.setattr(dist.Normal, "gather_pytree_data_fields", classmethod(lambda c: order))
    like = {"base": dist.Normal(jnp.zeros(3), jnp.ones(3)), "step": jnp.asarray(0, jnp.int32)}
    carry, _ = load_checkpoint(str(tmp_path), like, run=run, num_steps=100)
    np.testing.assert_array_equal(carry["base"].loc, np.arange(3.0))
    np.testing.assert_array_equal(carry["base"].scale, np.arange(1.0, 4.0))


def test_a_resumed_fit_says_from_which_step_and_records_it(tmp_path, capsys):
    d = tmp_path / "ckpt"
    kw = {**KW, "progress": "log"}
    first = eb.fit(_model(), _data(), num_steps=30, checkpoint_dir=d, checkpoint_every=10, **kw)
    assert first.resumed_from is None and "resuming" not in capsys.readouterr().err
    resumed = eb.fit(_model(), _data(), num_steps=40, checkpoint_dir=d, resume=True, **kw)
    err = capsys.readouterr().err  # it resumed without a word
    assert "[declebm] resuming from step 30" in err and "10 of 40 steps left" in err
    assert resumed.resumed_from == 30
    # progress=False prints nothing; the result still says where it resumed from
    quiet = eb.fit(_model(), _data(), num_steps=50, checkpoint_dir=d, resume=True, **KW)
    assert capsys.readouterr().err == "" and quiet.resumed_from == 40 and quiet.step == 50
