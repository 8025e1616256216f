"""TensorBoard event files, through tensorboardX (or CLU's metric writers)."""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

import numpy as np

from ._writer import AbstractWriter

MISSING_TENSORBOARD = (
    "TensorBoardWriter needs tensorboardX, which the `tensorboard` extra installs: "
    "pip install 'declebm[tensorboard]' (from a clone: pip install '.[tensorboard]'), or pip install tensorboardX; "
    "CLU's metric writers (pip install clu) serve too, with backend='clu'"
)
_BACKENDS = ("auto", "tensorboardX", "clu")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


class TensorBoardWriter(AbstractWriter):
    """Metrics and images as TensorBoard event files in ``logdir``
    (``tensorboard --logdir <logdir>``).

    Arguments:
        logdir: the folder of the run's event files (created at the first write).
        backend: ``"tensorboardX"`` (``tensorboardX.SummaryWriter``), ``"clu"``
            (``clu.metric_writers.SummaryWriter``, which writes through TensorFlow), or
            ``"auto"`` (default): tensorboardX when it is installed, else CLU. Neither
            installed is an ``ImportError`` saying what to install, raised here.

    Scalars are written as TensorBoard stores them, float32 (array metrics as ``name/0``,
    ``name/1``, ...); images as PNG (``write_images``, e.g. from ``SampleGrid``).

    Resuming: when ``logdir`` already holds event files, the tensorboardX backend opens its
    file with ``purge_step`` at the first step it writes, which makes TensorBoard (and its
    ``EventAccumulator``) discard every earlier event at that step or later: the steps a
    run wrote after its last checkpoint, before it stopped, and then writes again after
    ``fit(..., resume=True)``, appear once. (CLU's writer has no such option: with it a
    resumed run shows those steps twice.)
    """

    def __init__(self, logdir: str | os.PathLike, *, backend: str = "auto"):
        if not isinstance(logdir, (str, os.PathLike)) or not os.fspath(logdir):
            raise TypeError(f"logdir: expected a folder name (str or os.PathLike), got {logdir!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
        if backend == "auto":
            backend = "tensorboardX" if _installed("tensorboardX") else "clu" if _installed("clu.metric_writers") else None
        if backend is None or not _installed("tensorboardX" if backend == "tensorboardX" else "clu.metric_writers"):
            raise ImportError(MISSING_TENSORBOARD)
        self.logdir = os.fspath(logdir)
        self.backend = backend
        self._writer: Any = None

    def _open(self, first_step: int) -> None:
        if self.backend == "tensorboardX":
            from tensorboardX import SummaryWriter

            earlier = os.path.isdir(self.logdir) and any("tfevents" in f for f in os.listdir(self.logdir))
            # tensorboardX names its file by the second and the host only: a second writer in
            # the same second would overwrite the first one's file. A suffix of nanoseconds
            # keeps them apart and in the order written (TensorBoard reads files sorted by name).
            self._writer = SummaryWriter(self.logdir, purge_step=first_step if earlier else None,
                                         filename_suffix=f".{time.time_ns()}")
        else:
            from clu import metric_writers

            self._writer = metric_writers.SummaryWriter(self.logdir)

    def _write_scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            self._open(step)
        if self.backend == "tensorboardX":
            for name, value in values.items():
                self._writer.add_scalar(name, value, global_step=step)
        else:
            self._writer.write_scalars(step, values)

    def _write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        if self._writer is None:
            self._open(step)
        if self.backend == "tensorboardX":
            for name, image in images.items():
                self._writer.add_image(name, image, global_step=step, dataformats="HWC")
        else:
            self._writer.write_images(step, {name: image[None] for name, image in images.items()})

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
