"""What every worker shares, in NumPy only (no JAX, no PyTorch): the data, the grid, the
metrics. Every library's model is scored by the same function here, from its energies on
the same grid and test points."""

from __future__ import annotations

import math
import resource

import numpy as np

# ebmkit 0.16.0's `ebm.datasets.eight_gaussians` (radius 2, angles k * 2pi/8, std 0.15).
RADIUS, STD, N_MODES = 2.0, 0.15, 8
TRAIN_SIZE, TEST_SIZE = 200_000, 10_000
BOUNDS, RESOLUTION = (-4.0, 4.0), 300


def modes() -> np.ndarray:
    angles = np.arange(N_MODES) * (2 * math.pi / N_MODES)
    return RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1)


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws, float32 ``(n, 2)``, the same mixture as ebmkit's generator."""
    idx = rng.integers(0, N_MODES, n)
    return (modes()[idx] + STD * rng.standard_normal((n, 2))).astype(np.float32)


def make_data(seed: int, train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE) -> dict[str, np.ndarray]:
    """The fixed training pool and test set of one seed (every library gets these arrays)."""
    rng = np.random.default_rng(seed)
    return {"train": eight_gaussians(train_size, rng), "test": eight_gaussians(test_size, rng)}


def true_log_prob(x: np.ndarray) -> np.ndarray:
    """Log density of the mixture of 8 isotropic Gaussians (equal weights)."""
    x = np.asarray(x, np.float64)
    d2 = np.sum((x[:, None, :] - modes()[None]) ** 2, -1)
    log_comp = -0.5 * d2 / STD**2 - math.log(2 * math.pi * STD**2)
    return _logsumexp(log_comp, axis=1) - math.log(N_MODES)


def _logsumexp(a: np.ndarray, axis=None) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def grid_points(bounds=BOUNDS, resolution: int = RESOLUTION) -> tuple[np.ndarray, float]:
    """Cell centres ``(resolution^2, 2)`` float32 (row-major, ``indexing="ij"``) and the cell area."""
    lo, hi = bounds
    h = (hi - lo) / resolution
    axis = lo + (np.arange(resolution) + 0.5) * h
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32), h * h


def scores(logp_grid: np.ndarray, logp_test: np.ndarray, test: np.ndarray, bounds=BOUNDS,
           resolution: int = RESOLUTION) -> dict[str, float]:
    """From ``log p~`` (= -E, up to a constant) on ``grid_points()`` and on ``test``:

    - ``nll``: ``-mean log p~(test) + log Z``, ``log Z = logsumexp(log p~(grid)) + log(cell area)``;
    - ``nll_true``: the true mixture's NLL of the same test set;
    - ``mass_3std``: the model's grid mass within ``3 * std`` of any mode;
    - ``edge_mass``: the grid mass in the outermost ring of cells (a box too small if large).
    """
    points, cell = grid_points(bounds, resolution)
    lg = np.asarray(logp_grid, np.float64).reshape(-1)
    lt = np.asarray(logp_test, np.float64).reshape(-1)
    log_z = float(_logsumexp(lg)) + math.log(cell)
    nll = float(-np.mean(lt) + log_z)
    w = np.exp(lg - np.max(lg)) if np.all(np.isfinite(lg)) else np.full_like(lg, np.nan)
    w = w / np.sum(w)
    d = np.sqrt(np.min(np.sum((points[:, None, :].astype(np.float64) - modes()[None]) ** 2, -1), 1))
    ring = np.ones((resolution, resolution), bool)
    ring[1:-1, 1:-1] = False
    return {
        "nll": nll,
        "nll_true": float(-np.mean(true_log_prob(test))),
        "mass_3std": float(np.sum(w[d <= 3 * STD])),
        "edge_mass": float(np.sum(w[ring.reshape(-1)])),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_ms(chunk_times: list[float], chunk_steps: list[int]) -> float:
    """Median over chunks of wall time / steps, the first chunk (compilation, warm-up) left out
    when there is more than one."""
    per = [t / s * 1e3 for t, s in zip(chunk_times, chunk_steps) if s > 0]
    if len(per) > 1:
        per = per[1:]
    return float(np.median(per)) if per else float("nan")
