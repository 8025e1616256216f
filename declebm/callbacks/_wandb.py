"""Weights & Biases, when ``wandb`` is installed."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._writer import AbstractWriter

MISSING_WANDB = (
    "WandbWriter needs wandb, which the `wandb` extra installs: "
    "pip install 'declebm[wandb]' (from a clone: pip install '.[wandb]'), or pip install wandb"
)


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise ImportError(MISSING_WANDB) from e
    return wandb


class WandbWriter(AbstractWriter):
    """Metrics and images logged to a Weights & Biases run.

    Arguments:
        run: a run you started (``wandb.init(...)``); the writer logs to it and leaves it
            open at ``close()``. Without it the writer starts one at its first write, with
            ``wandb.init(**init_kwargs)``, and finishes it at ``close()``.
        **init_kwargs: passed to ``wandb.init`` (``project=``, ``name=``, ``config=``, and,
            to continue a run after ``fit(..., resume=True)``, ``id=`` and ``resume="allow"``).

    Each write is ``run.log({...}, step=step)`` with fit's step as W&B's step, so the x
    axis is the number of updates; images are ``wandb.Image``s. W&B ignores (with a
    warning) a step below the run's last one, so after ``fit(..., resume=True)`` into the
    same run (``id=``, ``resume="allow"``), the steps the stopped run had logged past its
    checkpoint keep their first values and appear once.

    Raises:
        ImportError: here, when ``wandb`` is not installed (saying what to install).
    """

    def __init__(self, *, run: Any = None, **init_kwargs: Any):
        self._wandb = _import_wandb()
        if run is not None and init_kwargs:
            raise ValueError(f"init_kwargs: give either run= or wandb.init's arguments, not both ({sorted(init_kwargs)})")
        if run is not None and not callable(getattr(run, "log", None)):
            raise TypeError(f"run: expected a wandb run (from wandb.init), got {type(run).__name__}")
        self.run = run
        self._owns_run = run is None
        self._init_kwargs = init_kwargs

    def _started(self) -> Any:
        if self.run is None:
            self.run = self._wandb.init(**self._init_kwargs)
        return self.run

    def _write_scalars(self, step: int, values: dict[str, float]) -> None:
        self._started().log(dict(values), step=step)

    def _write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        logged = {name: self._wandb.Image(image[..., 0] if image.shape[-1] == 1 else image) for name, image in images.items()}
        self._started().log(logged, step=step)

    def _close(self) -> None:
        if self._owns_run and self.run is not None:
            self.run.finish()
            self.run = None
