"""The numpyro_prior example runs end to end with tiny settings, every option used."""

import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")
SCRIPT = os.path.join(ROOT, "examples", "numpyro_prior.py")


def test_numpyro_prior_example_tiny(tmp_path):
    out = str(tmp_path)
    args = ["--quick", "--strategy", "nce", "--steps", "3", "--width", "8", "--obs", "0", "2", "--noise", "0.5",
            "--num-samples", "30", "--num-chains", "2", "--seed", "1", "--out", out]
    run = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "observation y = [0. 2.], noise 0.5" in run.stdout
    means = re.search(r"NUTS \[(.*?)\], exact \(grid\) \[(.*?)\]", run.stdout)
    nuts, grid = (np.array(m.split(), float) for m in means.groups())
    # 60 draws of a posterior with sd <= 0.5: the two means agree to a few tenths
    assert np.all(np.isfinite(nuts)) and np.max(np.abs(nuts - grid)) < 0.5
    assert os.path.getsize(os.path.join(out, "numpyro_prior_nce.png")) > 0
