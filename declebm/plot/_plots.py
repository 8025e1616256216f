"""Plots people would rather see than read: densities, samples, training curves."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

MISSING_MATPLOTLIB = (
    "declebm.plot needs matplotlib, which the `plot` extra installs: "
    "pip install 'declebm[plot]' (from a clone: pip install '.[plot]'), or pip install matplotlib"
)


def _plt():
    """``matplotlib.pyplot``, imported on the first plot (``import declebm`` does not
    import matplotlib), or an ImportError naming the extra that installs it."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(MISSING_MATPLOTLIB) from e
    return plt


def _ax(ax):
    return ax if ax is not None else _plt().subplots(figsize=(4, 4))[1]


def density(model: Any, *, bounds=(-5.0, 5.0), resolution: int = 200, ax=None, title: str | None = None, log: bool = False):
    """Heatmap of a 2-D model's grid-normalised density ``p(x)`` (or ``log p`` with ``log=True``)."""
    from ..evaluate import grid_log_prob

    ax = _ax(ax)  # first, so that a missing matplotlib is said before the grid is computed
    axes, log_p = grid_log_prob(model, bounds=bounds, resolution=resolution)
    values = np.asarray(log_p if log else np.exp(log_p)).T  # rows = y
    (x0, x1), (y0, y1) = (float(axes[0][0]), float(axes[0][-1])), (float(axes[1][0]), float(axes[1][-1]))
    ax.imshow(values, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", aspect="equal",
              vmin=(max(values.min(), values.max() - 10) if log else None))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def samples(
    x: Any,
    *,
    dims: tuple[int, int] | None = None,
    bounds=(-5.0, 5.0),
    ax=None,
    title: str | None = None,
    s: float = 1.0,
    color: str = "C0",
):
    """Scatter of points ``x`` of shape ``(n, d)`` on the same square as ``density``.

    ``dims=(i, j)`` picks the two coordinates drawn (horizontal ``i``, vertical ``j``);
    needed when ``d > 2``: without it the first two are drawn with a warning saying so.
    For images use ``plot.images``.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(
            f"x: expected points of shape (n, d) with d >= 2, got shape {x.shape}"
            + ("; for images use plot.images" if x.ndim > 2 else "")
        )
    d = x.shape[1]
    if dims is None:
        if d > 2:
            warnings.warn(
                f"plot.samples: x has {d} dimensions; drawing dimensions (0, 1) only. "
                f"Pass dims=(i, j) to choose which two",
                stacklevel=2,
            )
        dims = (0, 1)
    if (
        not isinstance(dims, (tuple, list))
        or len(dims) != 2
        or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and -d <= i < d for i in dims)
    ):
        raise ValueError(f"dims: expected two indices of x's {d} dimensions, such as (0, 1), got {dims!r}")
    ax = _ax(ax)
    ax.scatter(x[:, dims[0]], x[:, dims[1]], s=s, alpha=0.5, color=color, linewidths=0)
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
    """Training curves from ``FitResult.history`` against the step count.

    Arguments:
        history: ``FitResult.history`` (a dict of equal-length sequences with ``"step"``).
        keys: the metrics to draw; default every metric the history has (all but
            ``"step"`` and ``"time"``). Each strategy reports its own metrics (MCMC:
            ``energy_data``, ``energy_samples``; score matching: ``score_sq_norm``; NCE:
            ``accuracy``, ``log_z``), so requested keys the history lacks are skipped with
            a warning naming the ones it has; a ValueError if it has none of them.
    """
    if not isinstance(history, dict) or "step" not in history:
        raise TypeError(f"history: expected FitResult.history, a dict with a 'step' entry, got {type(history).__name__}")
    available = [k for k in history if k not in ("step", "time")]
    if keys is None:
        keys = available
    else:
        if isinstance(keys, str):
            keys = [keys]
        missing = [k for k in keys if k not in history]
        keys = [k for k in keys if k in history]
        if not keys:
            raise ValueError(f"keys: none of {missing} is in the history; it has {available}")
        if missing:
            warnings.warn(f"plot.curves: the history has no {missing} (it has {available}); skipped", stacklevel=2)
    ax = _ax(ax)
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


def image_grid(
    x: Any,
    *,
    image_shape: Sequence[int] | None = None,
    ncols: int | None = None,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    pad: int = 1,
) -> np.ndarray:
    """A batch of images tiled into one image, as a NumPy array (no matplotlib needed):
    ``(rows, cols)`` for grey images, ``(rows, cols, C)`` for colour ones, values in
    ``[0, 1]`` (``vmin`` maps to 0, ``vmax`` to 1, values clipped), background 1.

    Arguments:
        x: ``(n, H, W)`` grey images, ``(n, C, H, W)`` with ``C`` 1 or 3 (channels first,
            as ``models.ConvEnergy``), or flattened ``(n, D)`` with ``image_shape`` (a
            square ``D`` is taken as ``sqrt(D) x sqrt(D)`` without it).
        image_shape: ``(H, W)`` or ``(C, H, W)`` of one flattened image.
        ncols: images per row (default about ``sqrt(n)``).
        vmin, vmax: the value range shown black to white (``None`` for the images' own
            range). Digits from ``datasets.digits`` lie in [0, 1).
        pad: pixels of background between images.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty batch of images (n, ...), got shape {x.shape}")
    n = x.shape[0]
    if image_shape is not None:
        image_shape = tuple(int(s) for s in image_shape)
        if int(np.prod(image_shape)) != int(np.prod(x.shape[1:])):
            raise ValueError(f"image_shape: {image_shape} does not hold the {int(np.prod(x.shape[1:]))} numbers of one example")
        x = x.reshape((n,) + image_shape)
    elif x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"image_shape: examples of {x.shape[1]} numbers are not square images; give image_shape")
        x = x.reshape(n, side, side)
    if x.ndim == 4:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"x: expected 1 or 3 channels first (n, C, H, W), got shape {x.shape}")
        x = np.moveaxis(x, 1, -1)
        if x.shape[-1] == 1:
            x = x[..., 0]
    elif x.ndim != 3:
        raise ValueError(f"x: expected (n, H, W), (n, C, H, W) or (n, D), got shape {x.shape}")
    lo = float(np.nanmin(x)) if vmin is None else vmin
    hi = float(np.nanmax(x)) if vmax is None else vmax
    x = (np.clip(x, lo, hi) - lo) / max(hi - lo, 1e-12)
    ncols = int(ncols) if ncols is not None else int(np.ceil(np.sqrt(n)))
    if ncols < 1:
        raise ValueError(f"ncols: expected a positive integer, got {ncols}")
    if not isinstance(pad, (int, np.integer)) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad: expected a non-negative integer, got {pad!r}")
    nrows = -(-n // ncols)
    h, w = x.shape[1:3]
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad) + x.shape[3:])
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    return grid


def images(
    x: Any,
    *,
    image_shape: Sequence[int] | None = None,
    ncols: int | None = None,
    ax=None,
    title: str | None = None,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = "gray",
    pad: int = 1,
):
    """A grid of images (samples, data) in one panel: ``image_grid`` drawn with ``imshow``.

    Arguments:
        x, image_shape, ncols, vmin, vmax, pad: as for ``image_grid``.
        ax: the axes to draw on (a new figure without it).
        title: the panel's title.
        cmap: the colour map of grey images.

    Returns:
        the axes.
    """
    grid = image_grid(x, image_shape=image_shape, ncols=ncols, vmin=vmin, vmax=vmax, pad=pad)
    ax = _ax(ax)
    ax.imshow(grid, cmap=cmap if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax
