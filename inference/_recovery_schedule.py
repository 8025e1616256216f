r"""The noise ladder of diffusion recovery likelihood (Gao et al. 2021), as plain numbers.

Levels ``t = 0 .. T``. Level 0 is the data with a little noise (``sigma_0``); level
``t + 1`` is level ``t`` shrunk and noised,

.. math:: x_{t+1} = a_{t+1} x_t + \sigma_{t+1} \epsilon, \qquad a_{t+1} = \sqrt{1 - \sigma_{t+1}^2},

so that, cumulatively, ``x_t = abar_t x_0 + sigmabar_t eps`` with
``abar_t = prod_{i <= t} a_i`` and ``sigmabar_t = sqrt(1 - abar_t^2)`` (``x_0`` the clean
data). The model learns ``T`` conditionals ``p(x_t | x_{t+1})``, ``t = 0 .. T-1``, each in
the scaled variable ``y = a_{t+1} x_t``:

.. math:: \log p(y \mid x_{t+1}) = f_\theta(y, t) / s_t^2 - \|y - x_{t+1}\|^2 / (2\sigma_{t+1}^2)

(the top conditional, ``t = T - 1``, has no Gaussian tether and ``y = x``). Its Langevin
step size is ``s_t^2 = b^2 (sigmabar_t / sigmabar_0) sigma_{t+1}^2`` (the ratio is not
squared) and its loss weight ``sigma_1 / sigma_{t+1}``.

Everything here is NumPy in float64: the schedule is fixed before tracing.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class RecoverySchedule(NamedTuple):
    r"""Per-level constants of diffusion recovery likelihood; see the module docstring.

    Arrays indexed by level ``0 .. T`` (length ``T + 1``): ``sigma`` (``sigma_0`` is the
    data level), ``a = sqrt(1 - sigma^2)``, ``abar``, ``sigmabar``.

    Arrays indexed by conditional ``t = 0 .. T-1`` (length ``T``), for ``p(x_t | x_{t+1})``:
    ``scale`` (``a_{t+1}``, 1 at the top: ``y = scale * x``), ``tether_sigma``
    (``sigma_{t+1}``), ``tether`` (1, or 0 at the top), ``step_size`` (``s_t``, the
    Langevin step in ``y``), ``weight`` (``sigma_1 / sigma_{t+1}``).
    """

    sigma: np.ndarray
    a: np.ndarray
    abar: np.ndarray
    sigmabar: np.ndarray
    scale: np.ndarray
    tether_sigma: np.ndarray
    tether: np.ndarray
    step_size: np.ndarray
    weight: np.ndarray

    @property
    def num_levels(self) -> int:
        """``T``, the number of conditionals."""
        return len(self.sigma) - 1


def ddpm_level_sigmas(
    num_levels: int = 6, *, beta_start: float = 1e-4, beta_end: float = 0.02, num_diffusion_steps: int = 1000
) -> tuple[float, ...]:
    r"""``sigma_0 .. sigma_T`` from the DDPM linear beta schedule, grouped as in Gao et al.'s code.

    ``beta = linspace(beta_start, beta_end, num_diffusion_steps)``; level boundaries at
    step indices ``i * (num_diffusion_steps // (2 (T - 1)))`` for ``i = 0 .. T-1`` and the
    last step (for ``T = 6``: 0, 100, 200, 300, 400, 500, 999). Level ``t``'s
    ``a_t = prod sqrt(1 - beta)`` over the steps after the previous boundary up to its own
    (level 0: the first step alone), ``sigma_t = sqrt(1 - a_t^2)``. For ``T = 6``:
    ``sigma = 0.0100, 0.324, 0.516, 0.632, 0.713, 0.773, 0.9997``.
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, (int, np.integer)) or num_levels < 2:
        raise ValueError(f"num_levels: expected an integer >= 2 for the DDPM ladder, got {num_levels!r}")
    if not (0 < beta_start < beta_end < 1):
        raise ValueError(f"beta_start, beta_end: expected 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    stride = num_diffusion_steps // (2 * (num_levels - 1))
    if stride < 1 or (num_levels - 1) * stride >= num_diffusion_steps - 1:
        raise ValueError(
            f"num_diffusion_steps: {num_diffusion_steps} steps cannot be split into {num_levels} levels"
        )
    betas = np.linspace(beta_start, beta_end, num_diffusion_steps, dtype=np.float64)
    log_sqrt_alpha = 0.5 * np.log1p(-betas)
    bounds = [i * stride for i in range(num_levels)] + [num_diffusion_steps - 1]
    log_a = [log_sqrt_alpha[0]] + [log_sqrt_alpha[lo + 1 : hi + 1].sum() for lo, hi in zip(bounds[:-1], bounds[1:])]
    a = np.exp(np.asarray(log_a))
    return tuple(float(s) for s in np.sqrt(1.0 - a**2))


def check_level_sigmas(sigmas: Sequence[float], name: str = "schedule") -> tuple[float, ...]:
    """Validate a ladder ``sigma_0 .. sigma_T``: at least 3 numbers, strictly increasing,
    each in (0, 1]. Returns them as a tuple of floats."""
    if isinstance(sigmas, (str, bytes)) or not hasattr(sigmas, "__len__"):
        raise TypeError(f"{name}: expected a sequence of noise levels sigma_0 < ... < sigma_T, got {sigmas!r}")
    try:
        values = np.asarray([float(s) for s in sigmas], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected numbers, got {sigmas!r}") from e
    if values.size < 3:
        raise ValueError(
            f"{name}: expected at least 3 levels (sigma_0 for the data and two conditionals), got {values.size}"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0) or np.any(values > 1):
        raise ValueError(f"{name}: every level must lie in (0, 1], got {tuple(values)}")
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"{name}: levels must be strictly increasing, got {tuple(values)}")
    return tuple(float(v) for v in values)


def recovery_schedule(sigmas: Sequence[float], step_size_constant: float = 2e-4) -> RecoverySchedule:
    r"""The per-level constants for the ladder ``sigmas = (sigma_0, ..., sigma_T)`` and the
    Langevin constant ``b^2 = step_size_constant``: ``s_t^2 = b^2 (sigmabar_t / sigmabar_0)
    sigma_{t+1}^2``. With the default DDPM ladder and ``b^2 = 2e-4``:
    ``s = 0.0046, 0.042, 0.068, 0.089, 0.104, 0.139`` and weights ``1.0 .. 0.324``."""
    sigma = np.asarray(check_level_sigmas(sigmas), dtype=np.float64)
    if isinstance(step_size_constant, bool) or not np.isfinite(step_size_constant) or not step_size_constant > 0:
        raise ValueError(f"step_size_constant: expected a positive number (b^2), got {step_size_constant!r}")
    a = np.sqrt(1.0 - sigma**2)
    abar = np.cumprod(a)
    sigmabar = np.sqrt(1.0 - abar**2)
    num = len(sigma) - 1
    tether = np.ones(num)
    tether[-1] = 0.0
    scale = a[1:].copy()
    scale[-1] = 1.0
    step_sq = step_size_constant * (sigmabar[:-1] / sigmabar[0]) * sigma[1:] ** 2
    return RecoverySchedule(
        sigma=sigma,
        a=a,
        abar=abar,
        sigmabar=sigmabar,
        scale=scale,
        tether_sigma=sigma[1:].copy(),
        tether=tether,
        step_size=np.sqrt(step_sq),
        weight=sigma[1] / sigma[1:],
    )
