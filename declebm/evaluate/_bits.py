r"""Bits per dimension of images: a log-likelihood in nats turned into the figure image
papers report, with the corrections for the pixel transform and the dequantisation.

For images of ``D`` numbers, each with ``L`` pixel levels (256 for 8-bit images, 17 for
scikit-learn's digits), dequantised into ``[0, 1)`` as ``x = (pixel + u) / L`` and mapped
by an invertible transform ``y = T(x)`` (``[-1, 1]`` scaling, logit) before the model sees
them, the model's log density of ``x`` is ``log p_y(y) + log|det dT/dx|``; a discrete image
has probability at least ``L^{-D} p_x(x)`` averaged over the dequantisation (Theis et al.
2016), so

.. math:: \text{bits/dim} = -\frac{\log p_y(y) + \log\lvert\det \partial T/\partial x\rvert
          - D \log L}{D \log 2},

an upper bound on the discrete model's bits per dimension (lower is better).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike

from .._checks import _describe, check_number
from ._log_z import LogLikelihoodEstimate


class BitsPerDim(NamedTuple):
    """Bits per dimension (lower is better).

    Attributes:
        bits_per_dim: the figure.
        stderr: its standard error, from the log-likelihood estimate's (``None`` when a
            plain number was given).
        reliable: the log-likelihood estimate's verdict (``LogZEstimate.reliable``;
            ``None`` for a plain number).
    """

    bits_per_dim: float
    stderr: float | None
    reliable: bool | None

    def __repr__(self) -> str:
        err = "" if self.stderr is None else f", stderr={self.stderr:.4g}"
        rel = "" if self.reliable is None else f", reliable={self.reliable}"
        return f"BitsPerDim(bits_per_dim={self.bits_per_dim:.4g}{err}{rel})"


def bits_per_dim(
    log_likelihood: LogLikelihoodEstimate | float | ArrayLike,
    event_shape: tuple[int, ...] | int,
    *,
    levels: int = 256,
    log_det: float | ArrayLike = 0.0,
) -> BitsPerDim:
    r"""Bits per dimension from a log-likelihood in nats per image (module docstring):
    ``-(LL + log_det - D log levels) / (D log 2)``.

    Arguments:
        log_likelihood: the mean test log-likelihood in nats per image of the data *as the
            model sees them*: an ``evaluate.log_likelihood`` result (its ``stderr`` and
            ``reliable`` are carried over), or a number.
        event_shape: the shape of one image, ``(C, H, W)`` (or the number ``D`` of values).
        levels: pixel levels per value before dequantisation (256 for 8-bit images; 17 for
            ``datasets.digits``).
        log_det: the log-determinant of the transform from dequantised pixels in ``[0, 1)``
            to the model's inputs, per image: the second value ``datasets.to_symmetric_range``
            and ``datasets.logit_transform`` return (an array of one per image is averaged),
            0 when the model sees the pixels in ``[0, 1)`` themselves.
    """
    if isinstance(event_shape, (int, np.integer)) and not isinstance(event_shape, bool):
        shape = (int(event_shape),)
    elif isinstance(event_shape, (tuple, list)) and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in event_shape
    ):
        shape = tuple(int(s) for s in event_shape)
    else:
        raise TypeError(f"event_shape: expected the shape of one image, e.g. (1, 28, 28), got {_describe(event_shape)}")
    if not shape or min(shape) < 1:
        raise ValueError(f"event_shape: expected positive sizes, got {shape}")
    levels = check_number(levels, "levels", integer=True, low=2)
    dim = math.prod(shape)
    det = np.asarray(log_det, dtype=np.float64)
    if det.ndim > 1 or not np.all(np.isfinite(det)):
        raise ValueError(f"log_det: expected a finite number or one per image (n,), got {_describe(log_det)}")
    det = float(np.mean(det)) if det.ndim else float(det)
    if isinstance(log_likelihood, LogLikelihoodEstimate):
        ll, stderr, reliable = float(log_likelihood.log_likelihood), float(log_likelihood.stderr), log_likelihood.reliable
    else:
        value = np.asarray(log_likelihood, dtype=np.float64)
        if value.ndim != 0:
            raise ValueError(f"log_likelihood: expected one number (nats per image), got {_describe(log_likelihood)}")
        ll, stderr, reliable = float(value), None, None
    if not math.isfinite(ll):
        raise ValueError(f"log_likelihood: expected a finite number of nats per image, got {ll}")
    scale = dim * math.log(2.0)
    bits = -(ll + det - dim * math.log(levels)) / scale
    return BitsPerDim(bits, None if stderr is None else stderr / scale, reliable)
