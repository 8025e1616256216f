"""The 2-D examples score their untrained baseline without a warning (issue 19, item 8).

Every toy2d run, README command 1 included, printed an edge-mass warning a user could not
act on: it scored the untrained model, whose density does not decay (no base), so no box
holds its mass, as if the box held it. These runs train with NCE, which gives the trained
model a base density (its fitted noise); the untrained baseline is the one model without
one, so the grid scores of models without a base are the baseline's.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import pytest

import declebm as eb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _example(name: str):
    path = os.path.join(ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # runs the examples
@pytest.mark.parametrize("name", ["toy2d", "compare_strategies"])
def test_scoring_the_untrained_baseline_warns_nothing(name, tmp_path, monkeypatch):
    scores = []  # (the model has no base, the edge-mass warnings of its grid NLL)
    grid_nll = eb.evaluate.grid_nll

    def recording(model, *args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = grid_nll(model, *args, **kwargs)
        scores.append((model.base is None, [str(w.message) for w in caught if "cells on the edge" in str(w.message)]))
        return out

    monkeypatch.setattr(eb.evaluate, "grid_nll", recording)
    _example(name).main(["--strategy", "nce", "--steps", "3", "--quick", "--out", str(tmp_path)])
    baseline = [found for no_base, found in scores if no_base]
    assert len(baseline) == 1 and len(scores) == 2
    assert baseline == [[]]
