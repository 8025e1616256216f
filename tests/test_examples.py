"""Every example's command line runs, for every ``--strategy`` value it accepts.

The convention every ``examples/*.py`` follows (this test relies on it):

- ``build_parser() -> argparse.ArgumentParser`` (all options) and ``main(argv=None)``,
  with ``if __name__ == "__main__": main()``.
- It accepts ``--steps N`` (parameter updates), ``--out DIR``, ``--seed S`` and
  ``--quick``: a smoke run, tiny everything (data, evaluation grids, sampling steps and
  chains, AIS temperatures, ...) and a few training steps (5 to 100, per example) unless
  ``--steps`` is given, so that ``--quick`` alone finishes in about a minute on two CPU
  cores and ``--steps 3 --quick`` sooner. An option given explicitly wins over
  ``--quick`` (give such options ``default=None`` and fill them in ``main``).
- An example that trains by more than one strategy has ``--strategy`` with ``choices=``
  (``nargs="+"`` where one run compares several); the test runs each choice (with
  ``nargs="+"``: the first alone, the rest together in one run). A choice the example cannot
  run is an error (non-zero exit), not a silent skip.
- Each run writes its numbers as ``.json`` into ``--out`` (subfolders allowed) and, when
  matplotlib is installed, a ``.png``.

Discovery is automatic: a new example, a new strategy name or a new option is covered
without editing this file. Per example, the test runs the script as ``__main__``
(``runpy`` with ``sys.argv`` set: the real command line; conftest's ``run_script``) once
per ``--strategy`` choice, in fresh ``--out`` folders, in the test's own process: it shares
the programs the worker has compiled, and the suite's XLA flags (tests/conftest.py); each
example used to start a process of its own, 3 s of imports and every small program
compiled again. The first run also gives every other option explicitly (a non-default
choice for options with choices, the default value for options with a non-None default,
every flag), so each advertised option is parsed and used at least once. No example
changes JAX's configuration in a one-process run (``multihost.py`` joins
``jax.distributed`` only with ``--num-processes`` above 1, which tests/test_multihost.py
runs).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os

import pytest

pytestmark = pytest.mark.slow  # the examples' smoke runs: `pytest -m "not slow"` skips them

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
CONVENTION = ("--steps", "--out", "--seed", "--quick")
STEPS = "3"


def _parser(path: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"_example_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # examples do their work in main(), not at import
    assert callable(getattr(module, "main", None)), f"{path}: no main(argv=None)"
    assert callable(getattr(module, "build_parser", None)), f"{path}: no build_parser()"
    return module.build_parser()


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _other_options(options: dict[str, argparse.Action]) -> list[str]:
    """Every option outside the convention and --strategy, given once explicitly."""
    argv = []
    for flag, action in options.items():
        if flag in CONVENTION or action.dest in ("strategy", "strategies") or "--strategy" in action.option_strings:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            argv.append(flag)
        elif action.choices is not None:
            choices = list(action.choices)
            default = action.default if not isinstance(action.default, list) else action.default[0]
            pick = next((c for c in reversed(choices) if c != default), choices[0])
            argv += [flag, str(pick)]
        elif action.default is not None:
            values = action.default if isinstance(action.default, (list, tuple)) else [action.default]
            argv += [flag, *(str(v) for v in values)]
    return argv


def test_examples_exist_and_follow_the_convention():
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        options = _options(_parser(path))
        missing = [o for o in CONVENTION if o not in options]
        assert not missing, f"{os.path.basename(path)} lacks {missing} (see this file's docstring)"


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_runs_for_every_strategy(path, tmp_path, image_files, monkeypatch, run_script):
    options = _options(_parser(path))
    strategy = next((a for a in options.values() if "--strategy" in a.option_strings), None)
    choices = list(strategy.choices) if strategy is not None and strategy.choices is not None else [None]
    # One run per choice; where --strategy takes several names (nargs="+"), the first run gives
    # the first choice and every other option, and a second run ALL the others at once (what
    # such an example is for: one data set, split, reference and figure for many strategies).
    groups = [[c] for c in choices]
    if strategy is not None and strategy.nargs == "+" and len(choices) > 2:
        groups = [choices[:1], choices[1:]]
    runs = []
    for i, group in enumerate(groups):
        out = str(tmp_path / (group[0] or "run"))
        argv = ["--steps", STEPS, "--seed", "0", "--quick", "--out", out]
        if group != [None]:
            argv += ["--strategy", *group]
        if i == 0:
            argv += _other_options(options)
            argv += FIRST_RUN_ARGS.get(os.path.basename(path), lambda *_: [])(tmp_path, image_files)
        runs.append((argv, out))
    for j, extra in enumerate(EXTRA_RUNS.get(os.path.basename(path), [])):
        out = str(tmp_path / f"extra{j}")
        runs.append((["--steps", STEPS, "--seed", "0", "--quick", "--out", out, *extra], out))
    monkeypatch.chdir(tmp_path)
    for argv, out in runs:
        run_script(path, argv)
        assert glob.glob(os.path.join(out, "**", "*.json"), recursive=True), f"{' '.join(argv)}: no .json in {out}"
    # Every run left its numbers; the figures too where matplotlib is installed.
    have_matplotlib = importlib.util.find_spec("matplotlib") is not None
    check = RESULT_CHECKS.get(os.path.basename(path))
    for argv, out in runs:
        pngs = glob.glob(os.path.join(out, "**", "*.png"), recursive=True)
        assert pngs or not have_matplotlib, f"{os.path.basename(path)} {' '.join(argv)}: no .png in {out}"
        for name in glob.glob(os.path.join(out, "**", "*.json"), recursive=True):
            with open(name) as f:
                result = json.load(f)
            skipped = result.get("skipped") if isinstance(result, dict) else None
            assert not skipped, f"{os.path.basename(path)} {' '.join(argv)}: skipped {skipped}"
            if check is not None:
                check(_flags(argv), result)


def _flags(argv: list[str]) -> dict[str, list[str]]:
    """``["--a", "1", "2", "--b"]`` -> ``{"--a": ["1", "2"], "--b": []}``."""
    flags: dict[str, list[str]] = {}
    for item in argv:
        if item.startswith("--"):
            current = flags.setdefault(item, [])
        else:
            current.append(item)
    return flags


# ---- what an example's numbers must say, beyond running (checked on every run's JSON) ----

def _check_numpyro_prior(flags, r):
    assert r["observation"] == [float(v) for v in flags.get("--obs", ["1.5", "1.5"])]
    assert all(math.isfinite(v) for v in (r["log_z"], *r["nuts_mean"], *r["grid_mean"]))
    # NUTS draws (>= 2 chains x 50 after --quick) of a posterior with sd <= noise = 1: the
    # standard error of their mean is ~0.1 per axis even with autocorrelation, so NUTS
    # agrees with the exact grid posterior mean within 0.5 (5 standard errors) unless the
    # EBMDistribution / potential bridge is wrong.
    assert max(abs(a - b) for a, b in zip(r["nuts_mean"], r["grid_mean"])) < 0.5, r


def _check_digits(flags, r):
    for k in ("log_likelihood", "lower", "upper", "gaussian", "bits_per_dim", "stderr"):
        assert math.isfinite(r[k]), (k, r)
    # the interval is the estimate +- 1.96 stderr, the reliability flag AIS's, its warnings listed
    lo, hi = r["interval"]
    assert lo <= r["log_likelihood"] <= hi and math.isclose(hi - lo, 2 * 1.96 * r["stderr"], rel_tol=1e-6), r
    assert isinstance(r["reliable"], bool) and r["reliable"] == (not r["warnings"]), r
    if "--lr" in flags:  # the run given every option explicitly: they reach the results
        assert r["settings"]["steps"] == int(STEPS) and r["lr"] == float(flags["--lr"][0])
        assert r["energy"] == flags["--energy"][0]
    if r.get("strategy") == "dsm" or flags.get("--strategy") == ["dsm"]:
        # 3 DSM updates from a zero last layer barely move the model off its Gaussian start
        assert abs(r["log_likelihood"] - r["gaussian"]) < 5.0, r


def _check_recovery_digits(flags, r):
    assert r["energy"] == flags.get("--energy", [r["energy"]])[0]
    assert math.isfinite(r["test_log_likelihood_nats"]), r
    # the judge is a working classifier, and it saw every sample it judged
    assert r["judge_test_accuracy"] > 0.8, r
    assert sum(r["classes_in_samples"]) >= 8 and 0.0 <= r["judge_sure_of_samples"] <= 1.0, r


def _check_sample_metrics(dataset, r):
    # samples are scored by a median-bandwidth MMD (blind to modes) and a mode-sensitive one
    # (a tenth of the data's std), and on 8gaussians by the fraction near a mode
    keys = [k for k in r if k.startswith("sample_mmd2")]
    assert "sample_mmd2_median_bw" in keys and len(keys) == 2, r
    assert all(math.isfinite(r[k]) for k in keys), r
    if dataset == "8gaussians":
        assert 0.0 <= r["sample_mode_fraction"] <= 1.0, r


def _check_toy2d(flags, r):
    # every strategy, recovery included (scored by its level-0 model), gets a finite NLL
    assert math.isfinite(r["test_nll"]), r
    _check_sample_metrics(r["dataset"], r)
    # the samples panel says how they were drawn: recovery's come down its ladder
    ladder = r["strategy"] == "recovery"
    assert r["samples"].startswith("progressive samples" if ladder else "model samples"), r


def _check_compare_strategies(flags, r):
    for row in r["rows"][1:]:  # the initial model draws no samples
        if not row.get("note", "").startswith("skipped"):
            _check_sample_metrics(r["settings"]["dataset"], row)


def _check_images(flags, r):
    if r.get("format") == "declebm-checkpoint":  # the run's checkpoints under OUT/checkpoints
        return
    assert r["dataset"] == flags.get("--dataset", ["digits"])[0] and r["energy"] == flags.get("--energy", ["conv"])[0]
    assert r["steps"] == int(STEPS) and r["finite"] in (True, False) and r["strategy"] in flags.get("--strategy", [r["strategy"]])
    if r["finite"]:  # FD and KD in the classifier's features, and how sure it is of the samples
        assert math.isfinite(r["fd"]) and r["fd"] >= 0 and math.isfinite(r["kd"]) and 0.0 <= r["sure"] <= 1.0, r
    if "--batch-size" in flags:  # the run given every option: they reach the results
        assert r["batch_size"] == int(flags["--batch-size"][0]) and r["num_samples"] == int(flags["--num-samples"][0])
    if "--ais-chains" in flags:
        assert r["ais_chains"] == int(flags["--ais-chains"][0]) and r["ais_steps"] == int(flags["--ais-steps"][0]), r
    if flags.get("--ais-steps", ["0"]) == ["0"]:  # --quick leaves AIS out unless --ais-steps is given
        assert "bits_per_dim" not in r, r
    else:  # the AIS figure in bits/dim, with AIS's verdict and warnings
        assert math.isfinite(r["bits_per_dim"]) and isinstance(r["ais_reliable"], bool), r
        assert r["ais_reliable"] == (not r["ais_warnings"]), r


def _cifar10_folder(tmp_path, image_files) -> list[str]:
    """``examples/images.py``'s first run reads CIFAR-10 (``--dataset``'s non-default
    choice): tiny batches in the standard format (conftest's writer); and it gives the
    options whose default depends on the dataset."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    image_files.cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], 8)
    image_files.cifar(folder, ["test_batch"], 16)
    return ["--data-dir", str(tmp_path / "data"), "--batch-size", "8", "--num-samples", "12"]


# Further runs of an example, in the same process, for choices the runs above leave out.
EXTRA_RUNS = {
    "images.py": [  # the first run trains a ResNetEnergy on CIFAR-10; here the noise-conditioned
        # residual energy and the MLP baseline (DSM's noise-conditioned MLP) on the digits, the
        # latter with AIS's bits/dim (on CIFAR-10's residual net, AIS's programs alone took 23-26 s
        # to compile)
        ["--energy", "resnet", "--strategy", "recovery"],
        ["--energy", "mlp", "--strategy", "dsm", "--ais-chains", "16", "--ais-steps", "4"],
    ],
}

def _checkpoint_folder(tmp_path, image_files) -> list[str]:
    """``examples/multihost.py``'s first run gives ``--resume``, which continues from a
    named ``--checkpoint-dir`` (empty here: a fresh run)."""
    return ["--checkpoint-dir", str(tmp_path / "checkpoints")]


# What an example's first run (every option given) needs beyond the options with a default:
# files it reads, written into the test's folder, and values for options whose default is None.
FIRST_RUN_ARGS = {"images.py": _cifar10_folder, "multihost.py": _checkpoint_folder}

RESULT_CHECKS = {
    "images.py": _check_images,
    "numpyro_prior.py": _check_numpyro_prior,
    "digits.py": _check_digits,
    "recovery_digits.py": _check_recovery_digits,
    "toy2d.py": _check_toy2d,
    "compare_strategies.py": _check_compare_strategies,
}


def test_result_checks_name_real_examples():
    names = {os.path.basename(p) for p in EXAMPLES}
    for table in RESULT_CHECKS, EXTRA_RUNS, FIRST_RUN_ARGS:
        assert set(table) <= names, set(table) - names

