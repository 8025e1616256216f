"""benchmarks/peers without PyTorch: the shared grid formula against declebm's, the driver's
skip lines and tables, and one tiny end-to-end run of the declebm worker through the driver."""

import importlib.util
import json
import os
import subprocess
import sys

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.models import GaussianEnergy

pytestmark = pytest.mark.slow  # subprocess smoke runs: `pytest -m "not slow"` skips them

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PEERS = os.path.join(ROOT, "benchmarks", "peers")


def _load(name):
    sys.path.insert(0, PEERS)
    try:
        spec = importlib.util.spec_from_file_location(f"peers_{name}", os.path.join(PEERS, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(PEERS)


common = _load("common")


def test_shared_grid_nll_is_declebms_grid_nll():
    model = eb.EBM(GaussianEnergy(jnp.array([0.3, -0.5]), covariance=jnp.array([[0.8, 0.2], [0.2, 0.5]])))
    data = common.make_data(0, train_size=10, test_size=2000)["test"]
    grid, _ = common.grid_points()
    logp = eqx.filter_jit(lambda x: model.log_prob_unnorm_batch(x))
    ours = common.scores(np.asarray(logp(jnp.asarray(grid))), np.asarray(logp(jnp.asarray(data))), data)["nll"]
    theirs = float(eb.evaluate.grid_nll(model, data, bounds=common.BOUNDS, resolution=common.RESOLUTION))
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_true_density_scores_its_own_nll_and_mass():
    data = common.make_data(1, train_size=10, test_size=5000)["test"]
    assert np.allclose(data.std(0), np.sqrt(common.RADIUS**2 / 2 + common.STD**2), rtol=0.05)
    grid, _ = common.grid_points()
    s = common.scores(common.true_log_prob(grid), common.true_log_prob(data), data)
    assert s["nll"] == pytest.approx(s["nll_true"], abs=1e-3)  # the grid normalises the true density
    assert s["mass_3std"] == pytest.approx(1 - np.exp(-4.5), abs=2e-3)  # chi-square, 2 dof, at 3 std
    assert s["edge_mass"] < 1e-6


def test_driver_skips_missing_peers_and_marks_methods_they_lack(monkeypatch, tmp_path):
    run = _load("run")
    real = importlib.util.find_spec
    monkeypatch.setattr(run.importlib.util, "find_spec", lambda name: None if name in ("torch", "ebm") else real(name))
    libs, lines = run.available(["declebm", "ebmkit", "torch"])
    assert libs == ["declebm"]
    assert lines == ["skipped ebmkit: `import ebm` is not available in this environment",
                     "skipped torch: `import torch` is not available in this environment"]
    rec = dict(library="declebm", method="nce", seed=0, config="protocol", iterations=20, ms_per_iter=2.0,
               train_wall_s=5.0, process_wall_s=6.0, peak_rss_mib=600.0, nll=3.5, nll_true=1.1, mass_3std=0.2,
               nll_declebm_grid_nll=3.5, load_before=1.0, load_after=1.5)
    a = run.build_parser().parse_args(["--methods", "nce"])
    path = tmp_path / "R.md"
    run.write_report(a, str(path), [rec], ["declebm", "torchebm"], lines, [], run.machine(), "cmd", "now")
    text = path.read_text()
    assert "| nce | declebm | 1 | 2.00 | 2.00 | 1.00 |" in text
    assert "| nce | torchebm | | —, not in torchebm 0.8.9 | | |" in text
    assert "skipped ebmkit" in text


def test_quick_run_of_the_declebm_worker_writes_the_tables(tmp_path):
    out = tmp_path / "RESULTS.md"
    fake = tmp_path / "no_torch"  # any `import torch` in the driver or the declebm worker fails
    fake.mkdir()
    (fake / "torch.py").write_text("raise ImportError('this test runs without PyTorch')\n")
    # No empty PYTHONPATH entry: Python reads one as the cwd, and from the repository root the
    # source folder declebm/ would shadow the installed package (see conftest.py).
    path = os.pathsep.join(p for p in (str(fake), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, os.path.join(PEERS, "run.py"), "--quick", "--libraries", "declebm", "--methods", "dsm",
         "--budgets", "1", "--budget-methods", "dsm", "--out", str(out), "--workdir", str(tmp_path / "w"),
         "--chunk", "5", "--threads", "2", "--max-minutes", "5", "--seeds", "1", "--iterations", "10",
         "--long-iterations", "0", "--long-methods"],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "### 10 iterations" in text and "| dsm | declebm | 1 |" in text
    assert "## Quality per second" in text and "| dsm | declebm | 0 | 1 |" in text.split("## Quality per second")[1]
    recs = [json.loads(line) for line in (tmp_path / "w" / "results.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in recs][0] == 10
    assert abs(recs[0]["nll"] - recs[0]["nll_declebm_grid_nll"]) < 1e-3


def test_report_only_rewrites_the_report_from_a_runs_records(tmp_path):
    run = _load("run")
    work = tmp_path / "w"
    work.mkdir()
    argv = ["--libraries", "declebm", "--methods", "dsm", "--seeds", "1", "--budgets", "30", "--budget-methods",
            "pcd", "--long-iterations", "0", "--workdir", str(work)]
    meta = dict(argv=argv, command="python benchmarks/peers/run.py " + " ".join(argv), started="then", libs=["declebm"],
                skipped=[], machine=run.machine(), seeds=1, iterations=2000, chunk=100, budgets=[30.0],
                long_iterations=0)
    (work / "meta.json").write_text(json.dumps(meta))
    rec = dict(library="declebm", method="pcd", seed=0, config="recommended", budget=30.0, iterations=None,
               steps=-1, diverged=True, ms_per_iter=float("nan"), train_wall_s=20.0, nll=8.5, nll_true=1.1,
               mass_3std=0.5, notes=["TrainingDivergedError: training diverged by step 900: ... after 800 steps."])
    (work / "results.jsonl").write_text(json.dumps(rec) + "\n")
    out = tmp_path / "R.md"
    run.main(["--report-only", "--workdir", str(work), "--out", str(out)])
    text = out.read_text()
    assert "diverged by 900 (TrainingDivergedError; scored: its last healthy model, step 800)" in text
    assert "declebm dsm seed 0 2000 iterations: not started before --max-minutes" in text  # the one not run
