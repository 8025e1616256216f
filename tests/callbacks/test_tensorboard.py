"""TensorBoardWriter: event files read back with TensorBoard's EventAccumulator, values
and steps exact; a resumed run purges the steps it writes again; the CLU backend; a
missing backend."""

import importlib.machinery
import io
import sys
import types

import numpy as np
import pytest

from declebm.callbacks import TensorBoardWriter

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_scalars_and_arrays_read_back_exactly(tmp_path):
    with TensorBoardWriter(tmp_path) as w:
        assert w.backend == "tensorboardX"
        w(5, {"loss": 0.1, "acc": np.float32(0.75)}, model=None)  # as fit calls it
        w.write_scalars(10, {"loss": 0.2, "per_level": np.array([1.5, -2.5])})
    acc = read(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["acc", "loss", "per_level/0", "per_level/1"]
    # TensorBoard stores float32: the values are exactly the float32 of what was written
    assert scalars(acc, "loss") == [(5, float(np.float32(0.1))), (10, float(np.float32(0.2)))]
    assert scalars(acc, "acc") == [(5, 0.75)]
    assert scalars(acc, "per_level/0") == [(10, 1.5)] and scalars(acc, "per_level/1") == [(10, -2.5)]


def test_a_resumed_run_purges_the_steps_it_writes_again(tmp_path):
    with TensorBoardWriter(tmp_path) as w:
        for s in (10, 20, 30, 40, 50):
            w.write_scalars(s, {"loss": float(s)})
    # resumed from the checkpoint at step 30, in the same second (the files must not collide)
    with TensorBoardWriter(tmp_path) as w:
        w.write_scalars(40, {"loss": -40.0})
        w.write_scalars(50, {"loss": -50.0})
    assert scalars(read(tmp_path), "loss") == [(10, 10.0), (20, 20.0), (30, 30.0), (40, -40.0), (50, -50.0)]


def test_images_read_back_pixel_for_pixel(tmp_path):
    import matplotlib.image

    grey = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    colour = np.random.default_rng(0).integers(0, 256, (3, 4, 3)).astype(np.uint8)
    with TensorBoardWriter(tmp_path) as w:
        w.write_images(3, {"grey": grey, "colour": colour / 255.0})
    acc = read(tmp_path)
    for tag, want in (("grey", grey), ("colour", colour)):
        (event,) = acc.Images(tag)
        assert event.step == 3 and (event.height, event.width) == (3, 4)
        png = matplotlib.image.imread(io.BytesIO(event.encoded_image_string), format="png")
        back = np.round(png * 255).astype(np.uint8)
        np.testing.assert_array_equal(back[..., 0] if want.ndim == 2 else back[..., :3], want)


def test_the_clu_backend_gets_the_same_calls(tmp_path, monkeypatch):
    calls = []

    class SummaryWriter:
        def __init__(self, logdir):
            calls.append(("init", logdir))

        def write_scalars(self, step, scalars):
            calls.append(("scalars", step, dict(scalars)))

        def write_images(self, step, images):
            calls.append(("images", step, {k: v.shape for k, v in images.items()}))

        def flush(self):
            calls.append(("flush",))

        def close(self):
            calls.append(("close",))

    clu = types.ModuleType("clu")
    clu.__spec__ = importlib.machinery.ModuleSpec("clu", None, is_package=True)
    writers = types.ModuleType("clu.metric_writers")
    writers.__spec__ = importlib.machinery.ModuleSpec("clu.metric_writers", None)
    writers.SummaryWriter = SummaryWriter
    clu.metric_writers = writers
    monkeypatch.setitem(sys.modules, "clu", clu)
    monkeypatch.setitem(sys.modules, "clu.metric_writers", writers)
    with TensorBoardWriter(tmp_path, backend="clu") as w:
        w.write_scalars(2, {"loss": np.float32(0.5)})
        w.write_images(2, {"grid": np.zeros((4, 5))})
    assert calls == [("init", str(tmp_path)), ("scalars", 2, {"loss": 0.5}), ("images", 2, {"grid": (1, 4, 5, 1)}),
                     ("close",)]


def test_no_backend_installed_says_what_to_install(tmp_path, monkeypatch):
    import declebm.callbacks._tensorboard as tb

    monkeypatch.setattr(tb, "_installed", lambda module: False)
    with pytest.raises(ImportError, match=r"pip install 'declebm\[tensorboard\]'"):
        TensorBoardWriter(tmp_path)
    with pytest.raises(ValueError, match="^backend:"):
        TensorBoardWriter(tmp_path, backend="tf")
    with pytest.raises(TypeError, match="^logdir:"):
        TensorBoardWriter(None)
