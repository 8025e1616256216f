"""SampleGrid: when it writes, what it writes (a tiled grid for images, a scatter for 2-D
points), through fit, process 0 only, bad input."""

import os

import jax
import numpy as np
import pytest

import declebm as eb
from declebm.callbacks import JSONLWriter, SampleGrid
from declebm.inference import Langevin, MALA
from declebm.models import GaussianEnergy, MLPEnergy


class Recorder:
    """A writer with CLU's write_images, recording its calls."""

    def __init__(self):
        self.images = []

    def write_images(self, step, images):
        self.images.append((step, images))


def test_images_are_tiled_samples_and_grids_follow_every():
    model = eb.EBM(MLPEnergy(16, 8, 1, key=jax.random.key(0)))  # flat 16 = 4 x 4 images
    writer, key = Recorder(), jax.random.key(3)
    grid = SampleGrid(writer, Langevin(0.01), every=50, key=key, num_samples=4, num_steps=3, vmin=-2.0, vmax=2.0)
    for step in (30, 60, 90, 120, 150):  # fit's chunks of 30 steps
        assert grid(step, {}, model) is None
    # the first chunk, then each chunk that reaches the next multiple of 50
    assert [s for s, _ in writer.images] == [30, 60, 120, 150]
    step, images = writer.images[0]
    x = eb.sample(model, Langevin(0.01), num_samples=4, num_steps=3, key=jax.random.fold_in(key, 30))
    want = eb.plot.image_grid(np.asarray(x), vmin=-2.0, vmax=2.0)
    assert want.shape == (11, 11)  # 2 x 2 images of 4 x 4, one pixel of padding
    np.testing.assert_array_equal(images["samples"], want)


def test_two_dimensional_points_are_a_scatter_image():
    model = eb.EBM(GaussianEnergy([0.0, 0.0]))
    writer = Recorder()
    SampleGrid(writer, MALA(0.5), every=10, key=jax.random.key(0), num_samples=32, num_steps=2, name="xy")(10, {}, model)
    ((step, images),) = writer.images
    image = images["xy"]
    assert step == 10 and image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert (image < 200).any(axis=-1).sum() > 32  # the points are drawn (darker than the white background)


def test_through_fit_with_a_writer(tmp_path, tiny_fit):
    with JSONLWriter(tmp_path / "m.jsonl") as writer:
        tiny_fit(15, [writer, SampleGrid(writer, Langevin(0.01), every=10, key=jax.random.key(1), num_samples=8,
                                         num_steps=2)])
    assert sorted(os.listdir(tmp_path / "m_images")) == ["samples-00000005.png", "samples-00000010.png"]


def test_only_process_0_samples(monkeypatch):
    import declebm.callbacks._samples as samples_module

    monkeypatch.setattr(samples_module, "is_writer", lambda: False)
    monkeypatch.setattr(samples_module, "sample", lambda *a, **k: pytest.fail("sampled on process 1"))
    writer = Recorder()
    SampleGrid(writer, MALA(0.5), every=1, key=jax.random.key(0))(1, {}, eb.EBM(GaussianEnergy([0.0, 0.0])))
    assert writer.images == []


def test_bad_input_names_the_argument():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="^writer:"):
        SampleGrid(print, MALA(0.5), every=1, key=key)
    with pytest.raises(TypeError, match="^sampler:"):
        SampleGrid(Recorder(), "mala", every=1, key=key)
    with pytest.raises(ValueError, match="^every:"):
        SampleGrid(Recorder(), MALA(0.5), every=0, key=key)
    grid = SampleGrid(Recorder(), MALA(0.5), every=1, key=key)
    with pytest.raises(ValueError, match="^image_shape: samples of shape \\(5,\\)"):
        grid.image(np.zeros((3, 5)))
