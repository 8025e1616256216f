"""The recovery-likelihood examples run end to end with tiny settings (every advertised option)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_recovery_digits_runs_with_every_option(tmp_path):
    pytest.importorskip("sklearn")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "recovery_digits.py"), "--strategy", "recovery",
           "--steps", "2", "--batch-size", "16", "--lr", "1e-3", "--energy", "mlp", "--width", "8",
           "--langevin-steps", "2", "--step-size-constant", "1e-3", "--num-samples", "4", "--ais-chains", "4",
           "--ais-steps", "5", "--out", str(tmp_path), "--seed", "1", "--quick"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "recovery_digits_mlp.json").read_text())
    assert metrics["energy"] == "mlp" and isinstance(metrics["test_log_likelihood_nats"], float)


def test_toy2d_trains_recovery_with_a_level_conditioned_energy(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import toy2d
    finally:
        sys.path.pop(0)
    metrics = toy2d.main(["--strategy", "recovery", "--steps", "3", "--out", str(tmp_path)])
    # the level-0 density is scored (finite), and the figure uses the ladder's samples
    assert metrics["strategy"] == "recovery" and metrics["test_nll"] == metrics["test_nll"]
