"""WandbWriter: a clear ImportError without wandb; its calls, on a fake wandb module."""

import sys
import types

import numpy as np
import pytest

from declebm.callbacks import WandbWriter


def test_without_wandb_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ImportError, match=r"^WandbWriter needs wandb, .*pip install 'declebm\[wandb\]'"):
        WandbWriter(project="p")


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        run = FakeRun(**kwargs)
        module.runs.append(run)
        return run

    class Image:
        def __init__(self, data):
            self.data = data

    module.init, module.Image = init, Image
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_the_writer_starts_logs_to_and_finishes_its_run(fake_wandb):
    w = WandbWriter(project="ebm", config={"lr": 1e-3})
    assert fake_wandb.runs == []  # started at the first write, not before
    w(100, {"loss": np.float32(0.5), "levels": np.array([1.0, 2.0])}, model=None)
    w.write_images(100, {"samples": np.full((2, 3), 1.0)})
    (run,) = fake_wandb.runs
    assert run.kwargs == {"project": "ebm", "config": {"lr": 1e-3}}
    assert run.logged[0] == (100, {"loss": 0.5, "levels/0": 1.0, "levels/1": 2.0})
    step, images = run.logged[1]
    assert step == 100 and list(images) == ["samples"]
    np.testing.assert_array_equal(images["samples"].data, np.full((2, 3), 255, np.uint8))  # grey as (H, W)
    w.close()
    assert run.finished


def test_a_run_of_yours_is_logged_to_and_left_open(fake_wandb):
    mine = FakeRun()
    with WandbWriter(run=mine) as w:
        w.write_scalars(7, {"acc": 1.0})
    assert mine.logged == [(7, {"acc": 1.0})] and not mine.finished and fake_wandb.runs == []
    with pytest.raises(ValueError, match="^init_kwargs:"):
        WandbWriter(run=mine, project="p")
    with pytest.raises(TypeError, match="^run:"):
        WandbWriter(run="my-run")


def test_only_process_0_starts_a_run(fake_wandb, monkeypatch):
    import declebm.callbacks._writer as writer_module

    monkeypatch.setattr(writer_module, "is_writer", lambda: False)
    with WandbWriter(project="p") as w:
        w.write_scalars(1, {"loss": 1.0})
    assert fake_wandb.runs == []
