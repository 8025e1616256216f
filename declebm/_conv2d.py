r"""A 2-D convolution that is fast inside compiled loops on every backend.

Every sampler, MCMC strategy, AIS/SMC run and ``fit`` chunk evaluates the energy inside
a ``lax.scan``/``while`` loop. On XLA:CPU a ``lax.conv_general_dilated`` inside a loop
body is slow: channel-first (NCHW) convolutions by 10-20x (jax-ml/jax#12868), and the
*kernel* gradient of a convolution in either layout (measured on a 32-64-128 conv energy,
batch 32 of 28x28x1: five parameter gradients in a ``lax.scan`` took 1,102 ms against
12.6 ms each outside one). Written as patches times a matrix (im2col),

.. math:: y[h, w, o] = \sum_{i, j, c} x_{\text{pad}}[s h + i, s w + j, c]\, W[i, j, c, o],

the forward pass, the input gradient (a scatter-add of the patch gradient, i.e. the
adjoint of slicing) and the kernel gradient (``patches^T @ dy``) are all slices, pads
and matrix products, which XLA:CPU runs at full speed in loop bodies. On other
backends (GPU, TPU) the convolution is ``lax.conv_general_dilated`` in NHWC/HWIO layout,
which cuDNN and the TPU compiler run natively; ``jax.lax.platform_dependent`` picks the
implementation when the program is lowered, so one model serves both.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Padding = int | tuple[tuple[int, int], tuple[int, int]]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"conv2d({name}=...): expected a positive integer or a pair of them, got {value!r}")
    return value  # type: ignore[return-value]


def _padding(value: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = ((value, value), (value, value))
    try:
        (pt, pb), (pl, pr) = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(
            f"conv2d(padding=...): expected an integer or ((top, bottom), (left, right)), got {value!r}"
        ) from None
    pads = (pt, pb, pl, pr)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in pads):
        raise ValueError(f"conv2d(padding=...): expected non-negative integers, got {value!r}")
    return (pt, pb), (pl, pr)


def conv2d_patches(
    x: Float[Array, "*batch h w c_in"],
    kernel: Float[Array, "kh kw c_in c_out"],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> Float[Array, "*batch h_out w_out c_out"]:
    """The convolution as im2col: ``kh*kw`` strided slices of the padded input,
    concatenated along channels, times the kernel reshaped to ``(kh*kw*c_in, c_out)``."""
    kh, kw, c_in, c_out = kernel.shape
    (pt, pb), (pl, pr) = padding
    sh, sw = stride
    lead = x.ndim - 3
    xp = jnp.pad(x, ((0, 0),) * lead + ((pt, pb), (pl, pr), (0, 0)))
    h, w = xp.shape[-3], xp.shape[-2]
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    taps = [
        xp[..., i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return patches @ kernel.reshape(kh * kw * c_in, c_out)


def conv2d_native(
    x: Float[Array, "*batch h w c_in"],
    kernel: Float[Array, "kh kw c_in c_out"],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> Float[Array, "*batch h_out w_out c_out"]:
    """The convolution as ``lax.conv_general_dilated`` in NHWC/HWIO layout."""
    lead = x.shape[:-3]
    xb = x.reshape((-1,) + x.shape[-3:])
    y = jax.lax.conv_general_dilated(xb, kernel, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(lead + y.shape[1:])


def conv2d(
    x: Float[Array, "*batch h w c_in"],
    kernel: Float[Array, "kh kw c_in c_out"],
    *,
    stride: int | Sequence[int] = 1,
    padding: Padding = 0,
) -> Float[Array, "*batch h_out w_out c_out"]:
    r"""A channel-last 2-D convolution (cross-correlation, as ``lax.conv``), fast inside
    ``lax.scan`` and ``while`` loops on CPU as well as on GPU/TPU:

    .. math:: y[h, w, o] = \sum_{i, j, c} x_{\text{pad}}[s_h h + i, s_w w + j, c]\, K[i, j, c, o]

    On CPU it is computed as patches times a matrix (im2col, see this module's
    docstring: XLA:CPU runs ``lax`` convolutions and their kernel gradients slowly in
    loop bodies); elsewhere as ``lax.conv_general_dilated`` with NHWC/HWIO dimension
    numbers. Both give the same numbers up to float rounding.

    Use it in your own image energies: write them channel-last (activations
    ``(H, W, C)``, kernels ``(kh, kw, C_in, C_out)``), transposing a ``(C, H, W)``
    example once at the start.

    Arguments:
        x: ``(..., H, W, C_in)``: one image or any leading batch axes.
        kernel: ``(kh, kw, C_in, C_out)`` (HWIO).
        stride: an integer or ``(s_h, s_w)``.
        padding: zeros added around the image: an integer, or ``((top, bottom), (left, right))``.
    """
    stride = _pair(stride, "stride")
    padding = _padding(padding)
    if x.ndim < 3 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"conv2d: expected x of shape (..., H, W, C_in) and kernel (kh, kw, C_in, C_out) with the same C_in, "
            f"got x {tuple(x.shape)} and kernel {tuple(kernel.shape)}"
        )
    return jax.lax.platform_dependent(
        x,
        kernel,
        cpu=lambda x, k: conv2d_patches(x, k, stride, padding),
        default=lambda x, k: conv2d_native(x, k, stride, padding),
    )
