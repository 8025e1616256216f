"""The particle_dynamics example runs end to end with tiny settings, every option used."""

import json
import os
import runpy
import sys

import pytest

pytestmark = pytest.mark.slow  # the example's smoke runs: `pytest -m "not slow"` skips them

ROOT = os.path.join(os.path.dirname(__file__), "..")
SCRIPT = os.path.join(ROOT, "examples", "particle_dynamics.py")


def _run(monkeypatch, capsys, *args):
    """The command line ``python particle_dynamics.py ARGS`` in this process (as
    tests/test_examples.py runs the examples); its standard output."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [SCRIPT, *args])
    capsys.readouterr()
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), f"exit status {e.code}"
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    return capsys.readouterr().out


def test_particle_dynamics_example_quick_then_reuse(tmp_path, monkeypatch, capsys):
    out = str(tmp_path)
    stdout = _run(monkeypatch, capsys, "--quick", "--methods", "beta", "replay", "--seed", "1", "--steps", "12",
                  "--batch-size", "32", "--num-particles", "32", "--width", "8", "--init-steps", "2",
                  "--buffer-size", "64", "--eval-every", "6", "--num-test", "100", "--lr", "1e-3",
                  "--minutes-per-run", "30", "--out", out)
    assert "beta seed 1: log-likelihood" in stdout and "replay seed 1: log-likelihood" in stdout
    with open(os.path.join(out, "runs", "beta_seed1.json")) as f:
        run = json.load(f)
    assert run["steps"] == 12 and run["curve"]["step"] == [0, 6, 12]
    assert run["settings"]["num_particles"] == 32 and run["settings"]["width"] == 8
    assert os.path.exists(os.path.join(out, "particle_dynamics_8gaussians.png"))
    # --reuse reads the saved runs instead of training again; --seeds selects them.
    stdout = _run(monkeypatch, capsys, "--methods", "beta", "--seeds", "1", "--reuse", "--out", out)
    assert "reused" in stdout and "| beta | 1 |" in stdout
