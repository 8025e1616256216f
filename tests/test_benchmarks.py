"""Every benchmark's command line runs with tiny settings, every advertised option used once
(the examples' convention is in tests/test_examples.py; benchmarks have no --quick).

As the examples, each runs in the test's own process (conftest's ``run_script``); the
benchmarks that time fresh processes or other device counts start those themselves.
"""

import glob
import os
import re
import sys

import pytest

pytestmark = pytest.mark.slow  # the benchmarks' smoke runs: `pytest -m "not slow"` skips them

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Benchmarks have no --quick; each gets tiny settings here, and between its runs every option
# it advertises is given. A new benchmark fails test_every_benchmark_has_a_smoke_run until added.
BENCHMARKS = {
    "bench_ais.py": [["--quick", "--seeds", "1", "--dims", "2"]],
    "bench_log_z.py": [["--quick", "--dims", "3", "--mixture-dims", "--low", "0.5", "--high", "5", "--seeds", "1",
                        "--out", "log_z.md"]],  # no mixture: one target compiles once
    "bench_fit.py": [["--steps", "20", "--chunk", "10", "--repeats", "1"]],
    "bench_fit_setup.py": [["--repeats", "1", "--baseline", sys.executable]],
    # (the plain `--quick --out` run, breakdown included, is test_bench_images_quick_without_torch below)
    "bench_images.py": [["--quick", "--repeats", "1", "--cores", "1", "--seconds", "0.1", "--kinds", "recovery", "dsm",
                         "--shapes", "8x8x1", "--batches", "4", "--no-breakdown", "--out", "images_kinds.md"]],
    "gpu_check.py": [["--quick", "--steps", "3", "--budget", "300", "--out", "gpu.md"]],
    "bench_sliced_memory.py": [["--dims", "4", "--batch-size", "8", "--projections", "2", "--model", "gaussian",
                                "--no-time", "--train-steps", "10"]],
    "bench_pcd_defaults.py": [["--quick", "--steps", "4", "--eval-every", "2", "--seed", "1", "--out", "pcd",
                               "--configs", "mala", "ula", "mala-adapt", "hmc-adapt", "default"]],
    "bench_scaling.py": [["--quick", "--steps", "5", "--repeats", "1", "--width", "8", "--chains", "8",
                          "--max-devices", "1", "--out", "scaling.md"]],
}


def test_every_benchmark_has_a_smoke_run_using_every_option():
    paths = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))
    assert sorted(os.path.basename(p) for p in paths) == sorted(BENCHMARKS)
    for path in paths:
        with open(path) as f:  # options hidden from --help (argparse.SUPPRESS) are internal
            advertised = {m for line in f if "SUPPRESS" not in line
                          for m in re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", line)}
        used = {a for argv in BENCHMARKS[os.path.basename(path)] for a in argv if a.startswith("--")}
        assert advertised <= used, f"{os.path.basename(path)}: options never exercised {advertised - used}"


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_with_tiny_settings(name, tmp_path, monkeypatch, run_script):
    monkeypatch.chdir(tmp_path)
    for argv in BENCHMARKS[name]:
        assert "|" in run_script(os.path.join(ROOT, "benchmarks", name), argv)  # its table


def test_bench_images_quick_without_torch_writes_a_declebm_row(tmp_path, monkeypatch, run_script):
    """``bench_images.py --quick`` where torch cannot be imported (blocked here, whether or not
    it is installed): the PyTorch contender is skipped with a line saying so, and the table
    and the runs' JSON lines hold a declebm run with a positive ms/iteration and FLOP count."""
    import json

    out = tmp_path / "images.md"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    stdout = run_script(os.path.join(ROOT, "benchmarks", "bench_images.py"), ["--quick", "--out", str(out)])
    assert "skipping the PyTorch contender" in stdout
    runs = [json.loads(line) for line in (tmp_path / "images.jsonl").read_text().splitlines()]
    assert [r["contender"] for r in runs] == ["declebm"]
    assert runs[0]["ms"] > 0 and runs[0]["flops"] > 0 and runs[0]["peak_mib"] > 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| shortrun 8x8x1"))
    cells = [c.strip() for c in row.split("|")]
    assert float(cells[2]) > 0 and cells[3] == "n/a"  # declebm ms/it; no torch column value
