r"""Residual image energies: IGEBM's (Du & Mordatch 2019) and the noise-level-conditioned
network of the diffusion-recovery-likelihood code (Gao et al. 2021).

Both take one example ``(C, H, W)`` (or a flattened one with ``image_shape``) and compute
channel-last inside with ``conv2d`` (activations ``(H, W, C)``, kernels stored HWIO), which
stays fast inside compiled loops on CPU (see ``declebm/_conv2d.py``)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from declebm._checks import check_callable, check_flag, check_number

from ._conv import _check_image_shape, largest_singular_value
from declebm._conv2d import conv2d


class LeakyReLU(eqx.Module):
    r"""``f(x) = x`` for ``x >= 0``, ``negative_slope * x`` otherwise, as a module so that a
    slope other than ``jax.nn.leaky_relu``'s 0.01 is saved with the model. The default 0.2 is
    TensorFlow's ``tf.nn.leaky_relu``, the activation of the IGEBM and recovery-likelihood
    code."""

    negative_slope: float = eqx.field(static=True)

    def __init__(self, negative_slope: float = 0.2):
        self.negative_slope = check_number(negative_slope, "negative_slope", low=0.0)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module (``declebm.save``/``load``)."""
        return dict(negative_slope=self.negative_slope)

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        return jax.nn.leaky_relu(x, self.negative_slope)


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}({name}=...): expected a positive integer, got {value!r}")
    return value


def _positive_ints(owner: str, name: str, values) -> tuple[int, ...]:
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"{owner}({name}=...): expected a non-empty sequence of positive integers, got {values!r}") from None
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{owner}({name}=...): expected a non-empty sequence of positive integers, got {values!r}")
    return values


class _Conv(eqx.Module):
    """A convolution's kernel ``(kh, kw, C_in, C_out)`` (HWIO) and bias, initialised as
    ``eqx.nn.Conv2d`` (uniform in ``±1/sqrt(fan_in)``), or zero with ``zero=True``."""

    kernel: Float[Array, "kh kw c_in c_out"]
    bias: Float[Array, " c_out"]

    def __init__(self, c_in: int, c_out: int, size: int, key: PRNGKeyArray, zero: bool = False):
        kw, kb = jax.random.split(key)
        bound = 1.0 / math.sqrt(c_in * size * size)
        shape = (size, size, c_in, c_out)
        self.kernel = jnp.zeros(shape) if zero else jax.random.uniform(kw, shape, minval=-bound, maxval=bound)
        self.bias = jnp.zeros((c_out,)) if zero else jax.random.uniform(kb, (c_out,), minval=-bound, maxval=bound)


class _Dense(eqx.Module):
    """A dense layer's weight ``(in, out)`` and bias, initialised as ``eqx.nn.Linear``."""

    weight: Float[Array, "d_in d_out"]
    bias: Float[Array, " d_out"]

    def __init__(self, d_in: int, d_out: int, key: PRNGKeyArray):
        kw, kb = jax.random.split(key)
        bound = 1.0 / math.sqrt(d_in)
        self.weight = jax.random.uniform(kw, (d_in, d_out), minval=-bound, maxval=bound)
        self.bias = jax.random.uniform(kb, (d_out,), minval=-bound, maxval=bound)


class _Normalisation(eqx.Module):
    """Spectral normalisation of every weight (Miyato et al. 2018), or none."""

    enabled: bool = eqx.field(static=True)
    power_iterations: int = eqx.field(static=True)

    def weight(self, w: Array, *, lower_bounded: bool = False) -> Array:
        """``w / sigma`` with ``sigma`` the largest singular value of ``w`` as a matrix
        ``(fan_in, out)`` (``largest_singular_value``); with ``lower_bounded``, ``w / max(sigma,
        1)``, the code's normalisation of its zero-initialised layers (which ``w / sigma``
        would blow up)."""
        if not self.enabled:
            return w
        sigma = largest_singular_value(w.reshape(-1, w.shape[-1]).T, self.power_iterations)  # (out, fan_in)
        return w / (jnp.maximum(sigma, 1.0) if lower_bounded else sigma)

    def conv(self, layer: _Conv, h: Array, *, stride: int = 1, lower_bounded: bool = False) -> Array:
        kernel = self.weight(layer.kernel, lower_bounded=lower_bounded)
        pad = layer.kernel.shape[0] // 2
        return conv2d(h, kernel, stride=stride, padding=pad) + layer.bias

    def dense(self, layer: _Dense, h: Array, *, normalise: bool = True) -> Array:
        return h @ (self.weight(layer.weight) if normalise else layer.weight) + layer.bias


def _average_pool(h: Float[Array, "h w c"]) -> Float[Array, "h2 w2 c"]:
    """2x2 average pooling with stride 2 (an odd last row or column is dropped)."""
    height, width, c = h.shape
    h = h[: 2 * (height // 2), : 2 * (width // 2)]
    return h.reshape(height // 2, 2, width // 2, 2, c).mean(axis=(1, 3))


def _check_downsampling(owner: str, image_shape, times: int) -> None:
    _, height, width = image_shape
    if min(height, width) < 2**times:
        raise ValueError(
            f"{owner}: {times} halvings of the {height}x{width} image leave less than one pixel; "
            f"downsample fewer times (or use larger images)"
        )


class _ResBlock(eqx.Module):
    """IGEBM's residual block: ``act(pool(shortcut(x) + conv_2(act(conv_1(x)))))``."""

    conv_1: _Conv
    conv_2: _Conv
    shortcut: _Conv | None
    downsample: bool = eqx.field(static=True)


class ResNetEnergy(eqx.Module):
    r"""``E(x) = w^T \sum_{h,w} \mathrm{relu}(\mathrm{ResNet}(x)) + b``: the residual energy
    of IGEBM (Du & Mordatch 2019, "Implicit generation and generalization in energy-based
    models"; openai/ebm_code_release, ``ResNet32``).

    A 3x3 convolution to ``channels[0]``, then one residual block per entry of
    ``channels``, each

    .. math:: x \mapsto a\bigl(\mathrm{pool}(s(x) + c_2(a(c_1(x))))\bigr)

    with ``c_1``, ``c_2`` 3x3 convolutions to that block's channels, ``s`` a 1x1
    convolution where the channels change (the identity otherwise), ``pool`` 2x2 average
    pooling where ``downsample`` says so, and ``a`` the activation (leaky ReLU of slope 0.2,
    the code's; Swish/SiLU, ``jax.nn.silu``, is the smooth alternative IGEBM offers); then a
    ReLU, a sum over the spatial positions and a linear map to a scalar. With
    ``spectral_norm=True`` (IGEBM's setting) every convolution is divided by its largest
    singular value (``largest_singular_value``: a fixed number of power iterations from a fixed
    start at every call, so the energy is a pure function ``E(x)``; ``eqx.nn.SpectralNorm``
    keeps its vector in an ``eqx.nn.State`` that ``fit`` has no place for); the output
    layer is not normalised, as in the code.

    Sizes. The defaults are IGEBM's CIFAR-10 network for 32x32: 128 filters, blocks of
    ``(128, 128, 256, 256, 256, 256)`` channels downsampling at the 1st, 3rd and 5th
    (32 -> 16 -> 8 -> 4). IGEBM's MNIST network is not residual; a residual one of the
    same width for 28x28 is ``channels=(64, 64, 128, 128)``, ``downsample=(True, False,
    True, False)`` (28 -> 14 -> 7). For the 8x8 digits, ``channels=(32, 64)``,
    ``downsample=(True, False)``.

    Arguments:
        event_shape: the shape of one example: ``(H, W)``, ``(C, H, W)``, or a flattened
            ``(C*H*W,)`` together with ``image_shape``.
        image_shape: ``(C, H, W)`` or ``(H, W)`` to reshape a flattened example to.
        channels: the output channels of each residual block.
        downsample: for each block, whether it halves the image (the same length as
            ``channels``).
        activation: the nonlinearity ``a`` (``LeakyReLU(0.2)``; any callable).
        spectral_norm: normalise every convolution by its spectral norm.
        power_iterations: power iterations per call for that estimate.
        key: a ``jax.random.key`` for the initial weights.
    """

    conv_in: _Conv
    blocks: tuple[_ResBlock, ...]
    head: _Dense
    activation: Callable[[Array], Array]
    norm: _Normalisation
    event_shape: tuple[int, ...] = eqx.field(static=True)
    image_shape: tuple[int, int, int] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: Sequence[int],
        *,
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (128, 128, 256, 256, 256, 256),
        downsample: Sequence[bool] = (True, False, True, False, True, False),
        activation: Callable[[Array], Array] = LeakyReLU(0.2),
        spectral_norm: bool = True,
        power_iterations: int = 10,
        key: PRNGKeyArray,
    ):
        owner = "ResNetEnergy"
        self.event_shape, self.image_shape = _check_image_shape(owner, event_shape, image_shape)
        channels = _positive_ints(owner, "channels", channels)
        downsample = tuple(downsample) if not isinstance(downsample, (bool, str)) else downsample
        if not isinstance(downsample, tuple) or len(downsample) != len(channels) or not all(
            isinstance(d, bool) for d in downsample
        ):
            raise ValueError(
                f"{owner}(downsample=...): expected one bool per block ({len(channels)} for channels={channels}), "
                f"got {downsample!r}"
            )
        _check_downsampling(owner, self.image_shape, sum(downsample))
        check_callable(activation, "activation", "a function such as jax.nn.silu or LeakyReLU(0.2)")
        check_flag(spectral_norm, "spectral_norm")
        _positive_int(owner, "power_iterations", power_iterations)
        keys = jax.random.split(key, 2 + 3 * len(channels))
        self.conv_in = _Conv(self.image_shape[0], channels[0], 3, keys[0])
        blocks, c_in = [], channels[0]
        for i, (c, down) in enumerate(zip(channels, downsample)):
            k1, k2, k3 = keys[1 + 3 * i : 4 + 3 * i]
            shortcut = _Conv(c_in, c, 1, k3) if c != c_in else None
            blocks.append(_ResBlock(_Conv(c_in, c, 3, k1), _Conv(c, c, 3, k2), shortcut, down))
            c_in = c
        self.blocks = tuple(blocks)
        self.head = _Dense(c_in, 1, keys[-1])
        self.activation = activation
        self.norm = _Normalisation(spectral_norm, power_iterations)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(
            event_shape=self.event_shape,
            image_shape=self.image_shape,
            channels=tuple(int(b.conv_1.kernel.shape[-1]) for b in self.blocks),
            downsample=tuple(b.downsample for b in self.blocks),
            activation=self.activation,
            spectral_norm=self.norm.enabled,
            power_iterations=self.norm.power_iterations,
        )

    def __call__(self, x: Float[Array, "*event"]) -> Float[Array, ""]:
        act, norm = self.activation, self.norm
        h = norm.conv(self.conv_in, jnp.transpose(x.reshape(self.image_shape), (1, 2, 0)))
        for block in self.blocks:
            skip = h if block.shortcut is None else norm.conv(block.shortcut, h)
            h = skip + norm.conv(block.conv_2, act(norm.conv(block.conv_1, h)))
            h = act(_average_pool(h) if block.downsample else h)
        features = jnp.sum(jax.nn.relu(h), axis=(0, 1))
        return norm.dense(self.head, features, normalise=False)[0]


def level_embedding(log_sigma: Float[Array, ""], size: int) -> Float[Array, " size"]:
    r"""The sinusoidal embedding of the recovery-likelihood code (``get_timestep_embedding``,
    the transformer's) applied to ``10 log sigma`` instead of the integer level ``t``:
    ``[sin(10 log(sigma) f_k), cos(10 log(sigma) f_k)]`` with ``f_k = 10000^{-k/(size/2 - 1)}``,
    ``k = 0..size/2-1`` (a zero appended for odd ``size``). The factor 10 puts the T = 6
    ladder's levels (sigma 0.32 .. 1.0) 2.6 to 4.7 radians apart at the top frequency,
    about as far as consecutive integers."""
    half = size // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
    angle = 10.0 * log_sigma * freqs
    emb = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)])
    return jnp.pad(emb, (0, size - 2 * half))


class _LevelBlock(eqx.Module):
    """The code's ``resnet_block``: ``s(x) + g * c_2(a(c_1(a(x)) + W a(emb)))``."""

    conv_1: _Conv
    embed: _Dense
    conv_2: _Conv
    scale: Float[Array, " c"]
    shortcut: _Conv | None


class NoiseConditionedResNetEnergy(eqx.Module):
    r"""The residual energy of the diffusion-recovery-likelihood code (Gao et al. 2021;
    ruiqigao/recovery_likelihood, ``net_res_temb2``), conditioned on the noise level:

    .. math:: E(x, \sigma) = -\sum_c \Bigl[\sum_{h,w} \mathrm{relu}(\mathrm{ResNet}(x, e))\Bigr]_c
              \bigl[W_{\text{out}}\, a(e)\bigr]_c, \qquad e = \mathrm{MLP}(\mathrm{emb}(\log\sigma))

    (``f = -E`` is the code's network output, the log density up to a constant; with
    ``divide_by_sigma=True`` it is divided by ``sigma`` as NCSN's, Song & Ermon 2020, so the
    score scales as ``1/sigma``). ``emb`` is the code's sinusoidal embedding of width
    ``width`` (``level_embedding``: of ``10 log sigma``, since the framework passes levels as
    noise scales, not integer steps), then two dense layers to ``4 width`` with the
    activation between. The image goes through a 3x3 convolution to ``width`` and then, at
    each resolution ``i``, ``blocks_per_level`` residual blocks of ``width *
    channel_multipliers[i]`` channels

    .. math:: x \mapsto s(x) + g \odot c_2\bigl(a(c_1(a(x)) + W a(e))\bigr)

    (``s`` a 3x3 convolution where the channels change, the code's ``res_conv_shortcut``;
    ``c_2`` starts at zero and has a learnt per-channel scale ``g``, ``res_use_scale``), with
    2x2 average pooling between resolutions (``resamp_with_conv=False``). The code's
    defaults without normalisation layers, dropout or attention (``use_attention=False``)
    are followed; ``a`` is leaky ReLU of slope 0.2 (``act='lrelu'``; Swish is the other).
    With ``spectral_norm=True`` (the code's setting) every convolution and dense layer but
    the output one is divided by its spectral norm, the zero-initialised ``c_2`` by
    ``max(sigma, 1)`` as the code's lower-bounded normalisation.

    Sizes. The code's CIFAR-10 (32x32) network: ``width=128``, ``channel_multipliers=(1,
    2, 2, 2)`` (32 -> 16 -> 8 -> 4), 2 blocks per level by default, 8 for its CIFAR-10
    results (README: ``--num_res_blocks=8``). For 28x28 (MNIST), ``(1, 2, 2)`` (28 -> 14 ->
    7); for the 8x8 digits, ``width=32``, ``(1, 2)``.

    Called as ``energy(x, sigma=s)`` with one scalar level per example (the framework maps
    a per-example array of levels over the batch; ``DiffusionRecoveryLikelihood`` and
    ``DenoisingScoreMatching`` pass ``sigma``); without ``sigma`` it uses ``default_sigma``.

    Arguments:
        event_shape, image_shape: as ``ResNetEnergy``.
        width: the base number of channels (the code's ``ch``).
        channel_multipliers: the channels of each resolution in units of ``width``
            (``ch_mult``).
        blocks_per_level: residual blocks per resolution (``num_res_blocks``).
        activation: the nonlinearity ``a``.
        spectral_norm, power_iterations: as ``ResNetEnergy``.
        default_sigma: the level used when none is given (positive).
        divide_by_sigma: divide the energy by ``sigma`` (NCSN's convention).
        key: a ``jax.random.key`` for the initial weights.
    """

    level_1: _Dense
    level_2: _Dense
    level_out: _Dense
    conv_in: _Conv
    levels: tuple[tuple[_LevelBlock, ...], ...]
    activation: Callable[[Array], Array]
    norm: _Normalisation
    event_shape: tuple[int, ...] = eqx.field(static=True)
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    default_sigma: float = eqx.field(static=True)
    divide_by_sigma: bool = eqx.field(static=True)

    def __init__(
        self,
        event_shape: Sequence[int],
        *,
        image_shape: Sequence[int] | None = None,
        width: int = 128,
        channel_multipliers: Sequence[int] = (1, 2, 2, 2),
        blocks_per_level: int = 2,
        activation: Callable[[Array], Array] = LeakyReLU(0.2),
        spectral_norm: bool = True,
        power_iterations: int = 10,
        default_sigma: float = 0.1,
        divide_by_sigma: bool = False,
        key: PRNGKeyArray,
    ):
        owner = "NoiseConditionedResNetEnergy"
        self.event_shape, self.image_shape = _check_image_shape(owner, event_shape, image_shape)
        self.width = _positive_int(owner, "width", width)
        multipliers = _positive_ints(owner, "channel_multipliers", channel_multipliers)
        _positive_int(owner, "blocks_per_level", blocks_per_level)
        _check_downsampling(owner, self.image_shape, len(multipliers) - 1)
        check_callable(activation, "activation", "a function such as jax.nn.silu or LeakyReLU(0.2)")
        check_flag(spectral_norm, "spectral_norm")
        check_flag(divide_by_sigma, "divide_by_sigma")
        _positive_int(owner, "power_iterations", power_iterations)
        self.default_sigma = check_number(default_sigma, "default_sigma", low=0.0, low_open=True)
        self.divide_by_sigma = divide_by_sigma
        k_level, k_in, k_blocks = jax.random.split(key, 3)
        k1, k2, k3 = jax.random.split(k_level, 3)
        self.level_1 = _Dense(width, 4 * width, k1)
        self.level_2 = _Dense(4 * width, 4 * width, k2)
        self.level_out = _Dense(4 * width, width * multipliers[-1], k3)
        self.conv_in = _Conv(self.image_shape[0], width, 3, k_in)
        levels, c_in = [], width
        block_keys = iter(jax.random.split(k_blocks, 4 * len(multipliers) * blocks_per_level))
        for m in multipliers:
            c = width * m
            blocks = []
            for _ in range(blocks_per_level):
                shortcut = _Conv(c_in, c, 3, next(block_keys)) if c != c_in else None
                blocks.append(_LevelBlock(_Conv(c_in, c, 3, next(block_keys)), _Dense(4 * width, c, next(block_keys)),
                                          _Conv(c, c, 3, next(block_keys), zero=True), jnp.ones((c,)), shortcut))
                c_in = c
            levels.append(tuple(blocks))
        self.levels = tuple(levels)
        self.activation = activation
        self.norm = _Normalisation(spectral_norm, power_iterations)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(
            event_shape=self.event_shape,
            image_shape=self.image_shape,
            width=self.width,
            channel_multipliers=tuple(int(level[0].scale.shape[0]) // self.width for level in self.levels),
            blocks_per_level=len(self.levels[0]),
            activation=self.activation,
            spectral_norm=self.norm.enabled,
            power_iterations=self.norm.power_iterations,
            default_sigma=self.default_sigma,
            divide_by_sigma=self.divide_by_sigma,
        )

    def __call__(self, x: Float[Array, "*event"], sigma: ArrayLike | None = None) -> Float[Array, ""]:
        if sigma is None:
            sigma = self.default_sigma
        sigma = jnp.asarray(sigma, x.dtype)
        if sigma.size != 1:
            raise ValueError(f"sigma: expected one noise level per example (a scalar), got shape {sigma.shape}")
        sigma = sigma.reshape(())
        act, norm = self.activation, self.norm
        e = norm.dense(self.level_1, level_embedding(jnp.log(sigma), self.width).astype(x.dtype))
        e = norm.dense(self.level_2, act(e))
        h = norm.conv(self.conv_in, jnp.transpose(x.reshape(self.image_shape), (1, 2, 0)))
        for i, level in enumerate(self.levels):
            if i > 0:
                h = _average_pool(h)
            for block in level:
                r = norm.conv(block.conv_1, act(h)) + norm.dense(block.embed, act(e))
                r = block.scale * norm.conv(block.conv_2, act(r), lower_bounded=True)
                h = (h if block.shortcut is None else norm.conv(block.shortcut, h)) + r
        features = jnp.sum(jax.nn.relu(h), axis=(0, 1))
        f = jnp.sum(features * norm.dense(self.level_out, act(e), normalise=False))
        return -f / sigma if self.divide_by_sigma else -f
