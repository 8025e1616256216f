"""Plots people would rather see than read: densities, samples, training curves."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("declebm.plot needs matplotlib: pip install 'declebm[plot]'") from e
    return plt


def _ax(ax):
    return ax if ax is not None else _plt().subplots(figsize=(4, 4))[1]


def density(model: Any, *, bounds=(-5.0, 5.0), resolution: int = 200, ax=None, title: str | None = None, log: bool = False):
    """Heatmap of a 2-D model's grid-normalised density ``p(x)`` (or ``log p`` with ``log=True``)."""
    from ..evaluate import grid_log_prob

    axes, log_p = grid_log_prob(model, bounds=bounds, resolution=resolution)
    ax = _ax(ax)
    values = np.asarray(log_p if log else np.exp(log_p)).T  # rows = y
    (x0, x1), (y0, y1) = (float(axes[0][0]), float(axes[0][-1])), (float(axes[1][0]), float(axes[1][-1]))
    ax.imshow(values, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", aspect="equal",
              vmin=(max(values.min(), values.max() - 10) if log else None))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def samples(x: Any, *, bounds=(-5.0, 5.0), ax=None, title: str | None = None, s: float = 1.0, color: str = "C0"):
    """Scatter of 2-D points on the same square as ``density``."""
    x = np.asarray(x)
    ax = _ax(ax)
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=0.5, color=color, linewidths=0)
    b = np.asarray(bounds, dtype=float)
    (lo0, hi0), (lo1, hi1) = (b, b) if b.shape == (2,) else (b[0], b[1])
    ax.set_xlim(lo0, hi0)
    ax.set_ylim(lo1, hi1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def curves(history: dict, keys: Sequence[str] | None = None, *, ax=None, title: str | None = None):
    """Training curves from ``FitResult.history`` against the step count."""
    ax = _ax(ax)
    keys = keys if keys is not None else [k for k in history if k not in ("step", "time")]
    for k in keys:
        ax.plot(history["step"], history[k], label=k)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def figure(nrows: int, ncols: int, size: float = 3.0):
    """A grid of axes for side-by-side panels."""
    plt = _plt()
    fig, axs = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    return fig, axs
