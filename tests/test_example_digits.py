"""The digits example runs end to end with tiny settings, every option used."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
SCRIPT = os.path.join(ROOT, "examples", "digits.py")


def test_digits_example_tiny_conv_dsm(tmp_path):
    out = str(tmp_path)
    args = ["--quick", "--strategy", "dsm", "--energy", "conv", "--steps", "3", "--batch-size", "8", "--width", "16",
            "--lr", "1e-3", "--ais-chains", "4", "--ais-steps", "8", "--sample-steps", "16", "--seed", "1", "--out", out]
    run = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| 10-component GMM (reference) | 58.8 |" in run.stdout
    assert "| EBM, dsm (conv), AIS: estimate [lower, upper] |" in run.stdout
    assert "Sampler diagnosis: 64 chains x 16 steps" in run.stdout
    assert os.path.getsize(os.path.join(out, "digits_dsm.png")) > 0
    with open(os.path.join(out, "digits_dsm.json")) as f:
        result = json.load(f)
    assert result["settings"] == dict(steps=3, batch_size=8, width=16, ais_chains=4, ais_steps=8, sample_steps=16)
    assert result["seed"] == 1 and result["lr"] == 1e-3 and result["energy"] == "conv"
    for k in ("log_likelihood", "lower", "upper", "gaussian"):
        assert math.isfinite(result[k])
    # 3 updates from a zero last layer barely move the model off its Gaussian start
    assert abs(result["log_likelihood"] - result["gaussian"]) < 5.0
