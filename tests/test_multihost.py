"""Checkpoints, the run fingerprint and ``save`` with two ``jax.distributed`` processes
(gloo over loopback on one machine; tests/multihost_worker.py is one process)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import declebm as eb

pytestmark = pytest.mark.slow  # two processes joined through jax.distributed: `-m "not slow"` skips them

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _launch(mode: str, directory, n: int = 2, *, logs_out: list | None = None) -> list[dict]:
    """Run the worker in ``n`` processes joined over loopback; each one's record (and,
    into ``logs``, each one's stderr)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    outs = [os.path.join(str(directory), f"{mode}-{i}.json") for i in range(n)]
    procs = [subprocess.Popen([sys.executable, WORKER, f"127.0.0.1:{port}", str(n), str(i), mode, str(directory),
                               outs[i]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    try:
        logs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, logs):
        assert p.returncode == 0, err[-3000:]
    if logs_out is not None:
        logs_out.extend(err for _, err in logs)
    return [json.load(open(o)) for o in outs]


def _train(directory) -> list[dict]:
    logs: list = []
    records = _launch("train", directory, logs_out=logs)
    for r, log in zip(records, logs):
        r["stderr"] = log
    return records


@pytest.fixture
def trained(once_per_run):
    return once_per_run("multihost-trained", _train)


def test_two_processes_checkpoint_and_resume(trained):
    """Both processes compute the run's fingerprint (each hashing its own rows), process 0
    writes each checkpoint once with the chains of both processes, and a resume in two
    processes finishes bit-identical to the uninterrupted run."""
    _, records = trained
    for me, r in enumerate(records):
        assert "error" not in r, (me, r.get("traceback"))
        assert r["steps"] == ["step-00000006", "step-00000009"]
        assert r["resumed"]["history_step"] == r["straight"]["history_step"] == [3, 6, 9]
        assert r["resumed"]["model"] == r["straight"]["model"]
        assert r["resumed"]["chains"] == r["straight"]["chains"]  # this process's own chains
    assert records[0]["resumed"]["chains"] != records[1]["resumed"]["chains"]  # split, not copied


def test_two_processes_save_writes_once(trained):
    """``save`` called on both processes: process 0 alone writes the file, which loads
    with the trained values."""
    directory, records = trained
    assert [r["writes"] for r in records] == [1, 0]
    assert sorted(n for n in os.listdir(str(directory)) if "model" in n) == ["model.eqx"]
    loaded = eb.load(os.path.join(str(directory), "model.eqx"))
    leaves = [np.asarray(x) for x in jax.tree.leaves(loaded) if isinstance(x, jax.Array)]
    assert [x.tolist() for x in leaves] == records[0]["resumed"]["model"]


def test_two_processes_resume_with_other_rows_refused(trained):
    """A resume where process 1 passes other rows than the run it continues is refused
    on both processes (the fingerprint combines every process's digest), naming the data."""
    _, records = trained
    for me, r in enumerate(records):
        assert r["other"] is not None and r["other"].startswith("ValueError: resume:"), (me, r["other"])
        assert "different data" in r["other"] and "per_process[1]" in r["other"], r["other"]


def test_two_processes_resume_from_different_folders_refused(trained):
    """Every process reads the checkpoint: when process 1 finds none (its checkpoint_dir is
    not the folder process 0 wrote, as without a shared file system), both processes refuse
    to resume, naming what each one found, instead of training from different states."""
    _, records = trained
    for r in records:
        assert r["apart"] is not None and r["apart"].startswith("ValueError: checkpoint_dir: the processes found"), r
        assert "process 0: step 9, process 1: no checkpoint" in r["apart"], r["apart"]


def test_two_processes_sample_with_the_chains_split_over_them(trained):
    """``sample(..., devices=jax.devices())`` over two processes: each one holds its half of
    the chains, equal to the same chains sampled on one device."""
    _, records = trained
    for me, r in enumerate(records):
        reference = np.asarray(r["sample"]["reference"])
        np.testing.assert_allclose(np.asarray(r["sample"]["mine"]), reference[32 * me:32 * (me + 1)], rtol=1e-5, atol=1e-6)


def test_two_processes_estimate_log_z_with_the_chains_split_over_them(trained):
    """``evaluate.log_z(..., devices=jax.devices())`` over two processes, AIS and SMC on a
    two-component mixture: both processes get the same whole estimate, reliable, within 4
    combined standard errors of the same estimator on one device (the same draws; an
    accept/reject within rounding of its uniform can flip, so not bit for bit).
    ``log_likelihood`` with the chains split: the same ``log Z`` on both processes."""
    _, records = trained
    for name in ("AIS", "SMC"):
        (split0, one0), (split1, _) = records[0]["log_z"][name], records[1]["log_z"][name]
        assert split0 == split1, name
        assert split0[2] and one0[2], (name, split0, one0)
        assert abs(split0[0] - one0[0]) < 4 * np.hypot(split0[1], one0[1]), (name, split0, one0)
    assert records[0]["log_likelihood"][1] == records[1]["log_likelihood"][1]
    assert np.isfinite(records[0]["log_likelihood"][0])


def test_progress_is_reported_by_process_0_only(trained):
    _, records = trained
    logs = [r["stderr"].split("--- progress ---", 1)[1] for r in records]
    assert "[declebm] step 6/6" in logs[0]
    assert "[declebm] step" not in logs[1], logs[1][-2000:]


def _kill_inside_a_write(mode: str, directory) -> None:
    """Launch the worker's ``mode`` in two processes; once one of them stops inside the write
    of step 6's checkpoint, ``kill -9`` both."""
    import signal
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, WORKER, f"127.0.0.1:{port}", "2", str(i), mode, str(directory),
                               os.path.join(str(directory), f"{mode}-{i}.json")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(os.path.join(str(directory), "inside")) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs if p.poll() is not None]
            time.sleep(0.05)
        assert os.path.exists(os.path.join(str(directory), "inside")), "no process reached the instant in 240 s"
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
            p.stderr.close()


@pytest.mark.parametrize("mode", ["kill-arrays", "kill-written"])
def test_two_processes_killed_inside_a_checkpoint_write_resume_exactly(tmp_path, trained, mode):
    """``kill -9`` of both processes inside the write of a checkpoint (after Orbax wrote the
    arrays of both; after process 0 wrote everything, before the rename) leaves the previous
    checkpoint, from which two processes resume and finish bit-identical to an
    uninterrupted run."""
    _, records = trained
    _kill_inside_a_write(mode, tmp_path)
    assert _checkpoints(tmp_path / "ckpt") == [3]
    assert any(n.startswith(".tmp-") for n in os.listdir(tmp_path / "ckpt"))  # the write it was killed in
    resumed = _launch("resume", tmp_path)
    for me, r in enumerate(resumed):
        assert "error" not in r, (me, r.get("traceback"))
        assert r["resumed_from"] == 3
        assert r["model"] == records[me]["straight"]["model"]
        assert r["chains"] == records[me]["straight"]["chains"]
    assert _checkpoints(tmp_path / "ckpt") == [3, 9]
    assert not any(n.startswith(".tmp-") for n in os.listdir(tmp_path / "ckpt"))  # tidied by the resume


def test_a_checkpoint_of_two_processes_resumes_in_one_process(trained):
    """The checkpoint of step 9 written by two processes (one device each) resumes in one
    process that passes both processes' rows. Orbax reads the state onto that process's
    devices: on one device as on two, the model is the two processes' and the chains are
    both processes' chains in process order, bit for bit. On two devices (the same split of
    the chains and of the rows) the run then finishes bit-identical to the uninterrupted
    two-process run; on one device each step draws its batch from all rows instead of each
    device's own (README, "Many hosts"), so it trains on, on other batches."""
    directory, records = trained
    for devices in (2, 1):
        (r,) = _launch(f"single{devices}", directory, n=1)
        assert "error" not in r, r.get("traceback")
        assert r["resumed_from"] == 9 and r["devices"] == devices
        assert r["restored"]["model"] == records[0]["resumed"]["model"]
        both = [a + b for a, b in zip(records[0]["resumed"]["chains"], records[1]["resumed"]["chains"])]
        mine = r["restored"]["chains"]  # the first device's chains: all 64 on one device, 32 on two
        assert mine == (both if devices == 1 else records[0]["resumed"]["chains"])
        if devices == 2:
            assert r["model"] == records[0]["straight12"]["model"]
            assert r["chains"] == records[0]["straight12"]["chains"]
        else:
            assert all(np.isfinite(np.asarray(x)).all() for x in r["model"])


EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "multihost.py")


def _checkpoints(folder) -> list[int]:
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(n[len("step-"):]) for n in names if n.startswith("step-") and n[len("step-"):].isdigit())


def test_the_example_resumes_after_kill_9_of_both_processes(tmp_path):
    """``examples/multihost.py --launch-local 2 --checkpoint-dir``: two processes on
    loopback (gloo on CPU), each with its own rows, train one model; ``kill -9`` of the
    launcher and both processes once a checkpoint is complete, then the same command with
    ``--resume`` continues from the newest checkpoint and finishes the run."""
    import signal
    import time

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    command = [sys.executable, EXAMPLE, "--launch-local", "2", "--quick", "--steps", "300",
               "--checkpoint-dir", str(ckpt), "--out", str(out)]
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _checkpoints(ckpt) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before a kill: {proc.stderr.read()[-2000:]}"
        assert _checkpoints(ckpt), "no checkpoint within 240 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both processes: one process group
        proc.wait()
    written = _checkpoints(ckpt)
    assert written and written[-1] < 300 and not (out / "multihost.json").exists()
    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.load(open(out / "multihost.json"))
    assert record["processes"] == 2 and record["devices"] == 2 and record["steps"] == 300, record
    assert record["resumed_from"] is not None and record["resumed_from"] >= written[-1], (record, written)
    assert np.isfinite(record["test_nll"]), record
