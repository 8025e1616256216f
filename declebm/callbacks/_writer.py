"""The writer contract: CLU's ``MetricWriter`` methods, and a ``fit`` callback.

A writer is called by ``fit`` after every chunk, ``writer(step, metrics, model)``, and
writes the chunk's mean metrics at that step. Its methods follow CLU's
``clu.metric_writers.MetricWriter`` (``write_scalars(step, scalars)``,
``write_images(step, images)``, ``flush()``, ``close()``), so a CLU writer and a declebm
writer serve the same callbacks (``SampleGrid``).

In a run of several processes (``jax.distributed``) every process calls its callbacks;
only process 0 writes (the others' writers do nothing and open no file), as for
checkpoints (``declebm._hosts``).
"""

from __future__ import annotations

import abc
import operator
from typing import Any, Mapping

import numpy as np

from .._hosts import is_writer


def _check_step(step: Any) -> int:
    """``step`` as a Python int: an integer (Python, NumPy or a 0-d JAX array), at least 0."""
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"step: expected a non-negative integer, got {step!r}")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"step: expected a non-negative integer, got {type(step).__name__}") from None
    if value < 0:
        raise ValueError(f"step: expected a non-negative integer, got {value}")
    return value


def scalar_values(scalars: Mapping[str, Any]) -> dict[str, float]:
    """``scalars`` as ``{name: float}``: numbers and one-element arrays (NumPy or JAX) become
    floats; an array of ``k > 1`` elements becomes ``k`` scalars ``name/0`` ... ``name/{k-1}``
    (row-major flat index), such as one loss per noise level."""
    if not isinstance(scalars, Mapping):
        raise TypeError(f"scalars: expected a mapping from names to numbers, got {type(scalars).__name__}")
    out: dict[str, float] = {}
    for name, value in scalars.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"scalars: metric names must be non-empty strings, got {name!r}")
        if name == "step":
            raise ValueError("scalars: 'step' is the writer's own column; rename the metric")
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"scalars: metric {name!r} is not a number or an array of numbers ({type(value).__name__})") from None
        if array.size == 0:
            raise ValueError(f"scalars: metric {name!r} is an empty array")
        if array.size == 1:
            out[name] = float(array.reshape(()))
        else:
            out.update({f"{name}/{i}": float(v) for i, v in enumerate(array.reshape(-1))})
    return out


def image_values(images: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``images`` as ``{name: uint8 array (H, W, C)}`` with ``C`` 1, 3 or 4: an image is
    ``(H, W)`` (grey) or ``(H, W, C)``, floats in ``[0, 1]`` (clipped; NaN is black) or
    ``uint8``. (``declebm.plot.image_grid`` tiles a batch into one such image.)"""
    if not isinstance(images, Mapping):
        raise TypeError(f"images: expected a mapping from names to images, got {type(images).__name__}")
    out = {}
    for name, value in images.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"images: names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
            raise ValueError(f"images: {name!r} must be an image (H, W) or (H, W, C) with C 1, 3 or 4, got shape {array.shape}")
        if array.dtype != np.uint8:
            if array.dtype.kind not in "fiub":
                raise TypeError(f"images: {name!r} must hold numbers, got dtype {array.dtype}")
            array = np.round(np.clip(np.nan_to_num(array.astype(np.float64), nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
        out[name] = array
    return out


class AbstractWriter(abc.ABC):
    """Writes metrics (and images) at training steps; a ``fit`` callback.

    ``writer(step, metrics, model)`` writes ``metrics`` at ``step`` and returns ``None``
    (it never stops training), so ``fit(..., callbacks=[writer])`` logs every chunk's mean
    metrics. A writer is a context manager; ``close()`` flushes and closes its files, and
    writing after it is an error.

    Only process 0 of a multi-process run writes: elsewhere every method returns at once
    and no file is opened.

    Subclasses implement ``_write_scalars(step, {name: float})`` and
    ``_write_images(step, {name: uint8 (H, W, C)})``, and may override ``_flush`` and
    ``_close``; the public methods check and convert the arguments first.
    """

    _closed: bool = False

    def __call__(self, step: int, metrics: Mapping[str, Any], model: Any = None) -> None:
        self.write_scalars(step, metrics)
        return None

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Write ``scalars`` (numbers or arrays; see ``scalar_values``) at ``step``."""
        step, values = _check_step(step), scalar_values(scalars)
        self._check_open()
        if is_writer() and values:
            self._write_scalars(step, values)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """Write ``images`` (``{name: (H, W) or (H, W, C)}``, floats in [0, 1] or uint8) at ``step``."""
        step, values = _check_step(step), image_values(images)
        self._check_open()
        if is_writer() and values:
            self._write_images(step, values)

    def flush(self) -> None:
        """Push what was written to disk (or to the service)."""
        if not self._closed and is_writer():
            self._flush()

    def close(self) -> None:
        """Flush and close; later writes are an error, a second ``close`` does nothing."""
        if not self._closed:
            self._closed = True
            if is_writer():
                self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__}: the writer is closed")

    @abc.abstractmethod
    def _write_scalars(self, step: int, values: dict[str, float]) -> None: ...

    @abc.abstractmethod
    def _write_images(self, step: int, images: dict[str, np.ndarray]) -> None: ...

    def _flush(self) -> None:
        pass

    def _close(self) -> None:
        self._flush()
