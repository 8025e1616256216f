"""JSONLWriter and CSVWriter (and TensorBoardWriter through fit): through fit, across a resume, arrays, non-finite values,
process 0 only, closing, bad input."""

import csv
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from declebm.callbacks import CSVWriter, JSONLWriter, TensorBoardWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_writers_log_fit_history_and_continue_a_resumed_run_without_duplicate_steps(tmp_path, tiny_fit):
    jsonl, csv_path = tmp_path / "m.jsonl", tmp_path / "m.csv"
    ckpt = dict(checkpoint_dir=tmp_path / "ckpt", checkpoint_every=10)
    with JSONLWriter(jsonl) as a, CSVWriter(csv_path) as b, TensorBoardWriter(tmp_path / "tb") as c:
        tiny_fit(15, [a, b, c], **ckpt)  # checkpoints at 10 and 15 (the end); logs 5, 10, 15
    # A crash after step 15 was logged but before its checkpoint was complete: the newest
    # checkpoint left is step 10, and resuming writes step 15 again.
    shutil.rmtree(tmp_path / "ckpt" / "step-00000015")
    with JSONLWriter(jsonl) as a, CSVWriter(csv_path) as b, TensorBoardWriter(tmp_path / "tb") as c:
        result = tiny_fit(20, [a, b, c], resume=True, **ckpt)
    assert result.resumed_from == 10
    history = result.history
    assert list(history["step"]) == [5, 10, 15, 20]
    records, rows = read_jsonl(jsonl), read_csv(csv_path)
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    for key in set(history) - {"step", "time"}:  # exactly the history's floats (JSON and repr round-trip)
        assert [r[key] for r in records] == [float(v) for v in history[key]], key
        assert [float(r[key]) for r in rows] == [float(v) for v in history[key]], key
        events = accumulator.Scalars(key)  # TensorBoard keeps float32
        assert [(e.step, e.value) for e in events] == [(s, float(np.float32(v))) for s, v in zip(history["step"], history[key])]


@pytest.mark.parametrize("Writer, read", [(JSONLWriter, read_jsonl), (CSVWriter, read_csv)])
def test_an_existing_file_keeps_only_the_steps_before_the_first_one_written(tmp_path, Writer, read):
    path = tmp_path / "sub" / "m.txt"  # the folder is made at the first write
    with Writer(path) as w:
        for s in (10, 20, 30, 40, 50):
            w.write_scalars(s, {"loss": float(s)})
    with Writer(path) as w:  # resumed from step 30: writes 40 and 50 again, with other values
        w.write_scalars(40, {"loss": -40.0})
        w.write_scalars(50, {"loss": -50.0})
    got = [(int(r["step"]), float(r["loss"])) for r in read(path)]
    assert got == [(10, 10.0), (20, 20.0), (30, 30.0), (40, -40.0), (50, -50.0)]
    with Writer(path) as w:  # continuing past the end keeps everything
        w.write_scalars(60, {"loss": 60.0})
    assert [int(r["step"]) for r in read(path)] == [10, 20, 30, 40, 50, 60]
    # A last line cut short by a crash (no newline) is dropped, not glued to the next record.
    text = path.read_text()
    path.write_text(text[: len(text) - 3])
    with Writer(path) as w:
        w.write_scalars(60, {"loss": 6.0})
    assert [(int(r["step"]), float(r["loss"])) for r in read(path)][-2:] == [(50, -50.0), (60, 6.0)]


@pytest.mark.parametrize("Writer", [JSONLWriter, CSVWriter])
def test_a_file_of_something_else_is_refused(tmp_path, Writer):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    w = Writer(path)
    with pytest.raises(ValueError, match="^path: .*not a"):
        w.write_scalars(1, {"loss": 1.0})


def test_array_metrics_new_columns_and_non_finite_values(tmp_path):
    jsonl, csv_path = tmp_path / "m.jsonl", tmp_path / "m.csv"
    with JSONLWriter(jsonl) as a, CSVWriter(csv_path) as b:
        for w in (a, b):
            w.write_scalars(np.int64(1), {"loss": jnp.float32(0.5), "per_level": np.array([[1.0, 2.0], [3.0, 4.0]])})
            w.write_scalars(jnp.asarray(2), {"loss": float("nan"), "acc": np.array([0.25]), "big": float("inf")})
    assert read_jsonl(jsonl) == [
        {"step": 1, "loss": 0.5, "per_level/0": 1.0, "per_level/1": 2.0, "per_level/2": 3.0, "per_level/3": 4.0},
        {"step": 2, "loss": None, "acc": 0.25, "big": None},  # JSON has no NaN: null
    ]
    with open(csv_path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["step", "loss", "per_level/0", "per_level/1", "per_level/2", "per_level/3", "acc", "big"]
    rows = read_csv(csv_path)
    assert rows[0]["acc"] == "" and rows[0]["per_level/3"] == "4.0"
    assert np.isnan(float(rows[1]["loss"])) and float(rows[1]["big"]) == np.inf and rows[1]["per_level/0"] == ""


def test_a_writer_is_a_fit_callback_that_never_stops_training(tmp_path):
    w = JSONLWriter(tmp_path / "m.jsonl")
    assert w(3, {"loss": 1.0}, model=None) is None
    w.close()
    w.close()  # a second close does nothing
    with pytest.raises(ValueError, match="closed"):
        w.write_scalars(4, {"loss": 1.0})
    assert read_jsonl(tmp_path / "m.jsonl") == [{"step": 3, "loss": 1.0}]


def test_only_process_0_writes(tmp_path, monkeypatch):
    import declebm.callbacks._writer as writer_module

    monkeypatch.setattr(writer_module, "is_writer", lambda: False)  # as on process 1 of a multi-host run
    with JSONLWriter(tmp_path / "m.jsonl") as a, CSVWriter(tmp_path / "m.csv") as b:
        for w in (a, b):
            w.write_scalars(1, {"loss": 1.0})
            w.write_images(1, {"x": np.zeros((2, 2))})
    assert os.listdir(tmp_path) == []


def test_images_go_to_png_files_beside(tmp_path):
    import matplotlib.image

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    colour = np.random.default_rng(0).integers(0, 256, (3, 4, 3)).astype(np.uint8)
    with JSONLWriter(tmp_path / "m.jsonl") as w:
        w.write_images(7, {"samples/grid": grey, "rgb": colour / 255.0})
    folder = tmp_path / "m_images"
    assert sorted(os.listdir(folder)) == ["rgb-00000007.png", "samples_grid-00000007.png"]
    back = np.round(matplotlib.image.imread(folder / "samples_grid-00000007.png") * 255).astype(np.uint8)
    np.testing.assert_array_equal(back[..., 0], grey)
    back = np.round(matplotlib.image.imread(folder / "rgb-00000007.png") * 255).astype(np.uint8)
    np.testing.assert_array_equal(back[..., :3], colour)


def test_bad_input_names_the_argument(tmp_path):
    with pytest.raises(TypeError, match="^path:"):
        JSONLWriter(3)
    with pytest.raises(ValueError, match="^path:"):
        CSVWriter(tmp_path)  # a folder
    w = JSONLWriter(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="^step:"):
        w.write_scalars(-1, {"loss": 1.0})
    with pytest.raises(TypeError, match="^step:"):
        w.write_scalars(1.5, {"loss": 1.0})
    with pytest.raises(TypeError, match="^scalars: metric 'loss'"):
        w.write_scalars(1, {"loss": "low"})
    with pytest.raises(ValueError, match="^scalars: 'step'"):
        w.write_scalars(1, {"step": 1.0})
    with pytest.raises(ValueError, match="^images: 'x' must be an image"):
        w.write_images(1, {"x": np.zeros((2, 3, 5))})
    assert not os.path.exists(tmp_path / "m.jsonl")
