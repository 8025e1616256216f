"""A ``fit`` callback that draws the model's samples every so many steps and writes them
as one image."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from .._checks import check_key, check_positive
from .._hosts import host_copy, is_writer
from .._sample import sample
from .._sampler import AbstractSampler


def scatter_image(x: Any, *, bounds=(-5.0, 5.0), size: int = 256) -> np.ndarray:
    """Points ``x`` of shape ``(n, 2)`` drawn by ``declebm.plot.samples`` on a square of
    ``bounds``, rendered to an RGB ``uint8`` image of ``size x size`` pixels (matplotlib's
    Agg canvas; pyplot's state is not touched)."""
    from ..plot import samples as plot_samples
    from ..plot._plots import _plt

    _plt()  # matplotlib, or the ImportError naming the extra that installs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 4), dpi=size / 4)
    canvas = FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    plot_samples(x, bounds=bounds, ax=ax, s=8.0)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class SampleGrid:
    """Every ``every`` steps, draw ``num_samples`` samples of the model being trained and
    write them as one image to ``writer`` (``writer.write_images(step, {name: image})``).

    Images (an event shape ``(C, H, W)``, ``(H, W)``, or flat with ``image_shape``, or a
    flat square size) are tiled by ``declebm.plot.image_grid`` (``vmin``/``vmax`` map to
    black/white); 2-D points are drawn as a scatter on the square of ``bounds``
    (``declebm.plot.samples``, rendered to an image). Samples are
    ``declebm.sample(model, sampler, num_samples=..., num_steps=..., key=fold_in(key, step))``
    from the model's default start (its base density, else a standard normal).

    It is a ``fit`` callback: ``fit(..., callbacks=[writer, SampleGrid(writer, MALA(0.05),
    every=1000, key=key)])``. ``fit`` calls callbacks at the end of each chunk, so a grid is
    written at the first chunk's end and then at the end of each chunk that reaches the
    next multiple of ``every``. The writer is any object with CLU's
    ``write_images(step, images)`` (every declebm writer, a CLU ``MetricWriter``). With
    several processes only process 0 samples and writes. Never stops training.

    Arguments:
        writer: where the images go.
        sampler: a declebm sampler (``MALA(step_size=0.05)``, ``Langevin(...)``).
        every: steps between grids.
        num_samples, num_steps: chains and their length.
        key: a ``jax.random.key``.
        name: the image's name in the writer.
        image_shape: ``(H, W)`` or ``(C, H, W)`` of one flat example.
        vmin, vmax: the value range of image samples shown black to white.
        bounds: the square of 2-D scatters.
        **energy_kwargs: extra inputs of the energy (a noise level ``sigma=...``).
    """

    def __init__(
        self,
        writer: Any,
        sampler: AbstractSampler,
        *,
        every: int,
        key: PRNGKeyArray,
        num_samples: int = 64,
        num_steps: int = 100,
        name: str = "samples",
        image_shape: Sequence[int] | None = None,
        vmin: float = 0.0,
        vmax: float = 1.0,
        bounds=(-5.0, 5.0),
        **energy_kwargs: Any,
    ):
        if not callable(getattr(writer, "write_images", None)):
            raise TypeError(f"writer: expected a writer with write_images(step, images), got {type(writer).__name__}")
        if not isinstance(sampler, AbstractSampler):
            raise TypeError(f"sampler: expected a sampler such as MALA(step_size=...), got {type(sampler).__name__}")
        check_positive(every, "every", integer=True)
        check_positive(num_samples, "num_samples", integer=True)
        check_positive(num_steps, "num_steps", integer=True)
        check_key(key)
        if not isinstance(name, str) or not name:
            raise TypeError(f"name: expected a non-empty string, got {name!r}")
        self.writer, self.sampler, self.every, self.key, self.name = writer, sampler, int(every), key, name
        self.num_samples, self.num_steps = int(num_samples), int(num_steps)
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.vmin, self.vmax, self.bounds, self.energy_kwargs = vmin, vmax, bounds, energy_kwargs
        self.last_step: int | None = None

    def image(self, x: np.ndarray) -> np.ndarray:
        """The image of samples ``x`` of shape ``(n, *event_shape)``: a tiled grid for
        images, a scatter for 2-D points."""
        from ..plot import image_grid

        event = x.shape[1:]
        if self.image_shape is None and event == (2,):
            return scatter_image(x, bounds=self.bounds)
        square = len(event) == 1 and round(np.sqrt(event[0])) ** 2 == event[0]
        if self.image_shape is not None or len(event) in (2, 3) or square:
            return image_grid(x, image_shape=self.image_shape, vmin=self.vmin, vmax=self.vmax)
        raise ValueError(
            f"image_shape: samples of shape {event} are neither 2-D points nor images; "
            "give image_shape=(H, W) or (C, H, W) of one example"
        )

    def __call__(self, step: int, metrics: Any, model: Any) -> None:
        due = self.last_step is None or step // self.every > self.last_step // self.every
        if not due or not is_writer():
            return None
        self.last_step = int(step)
        model = host_copy(model)  # parameters are replicated: this process's copy, no collective
        x = sample(model, self.sampler, num_samples=self.num_samples, num_steps=self.num_steps,
                   key=jax.random.fold_in(self.key, step), **self.energy_kwargs)
        self.writer.write_images(step, {self.name: self.image(np.asarray(x))})
        return None
