"""The particle_dynamics example runs end to end with tiny settings, every option used."""

import json
import os

import pytest

pytestmark = pytest.mark.slow  # the example's smoke runs: `pytest -m "not slow"` skips them

ROOT = os.path.join(os.path.dirname(__file__), "..")
SCRIPT = os.path.join(ROOT, "examples", "particle_dynamics.py")


def test_particle_dynamics_example_quick_then_reuse(tmp_path, run_script):
    out = str(tmp_path)
    stdout = run_script(SCRIPT, ["--quick", "--methods", "beta", "replay", "--seed", "1", "--steps", "12",
                                 "--batch-size", "32", "--num-particles", "32", "--width", "8", "--init-steps", "2",
                                 "--buffer-size", "64", "--eval-every", "6", "--num-test", "100", "--lr", "1e-3",
                                 "--minutes-per-run", "30", "--out", out])
    assert "beta seed 1: log-likelihood" in stdout and "replay seed 1: log-likelihood" in stdout
    with open(os.path.join(out, "runs", "beta_seed1.json")) as f:
        run = json.load(f)
    assert run["steps"] == 12 and run["curve"]["step"] == [0, 6, 12]
    assert run["settings"]["num_particles"] == 32 and run["settings"]["width"] == 8
    assert os.path.exists(os.path.join(out, "particle_dynamics_8gaussians.png"))
    # --reuse reads the saved runs instead of training again; --seeds selects them.
    stdout = run_script(SCRIPT, ["--methods", "beta", "--seeds", "1", "--reuse", "--out", out])
    assert "reused" in stdout and "| beta | 1 |" in stdout
