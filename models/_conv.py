"""Convolutional energies for images, with optional spectral normalisation.

They take one example ``(C, H, W)`` and compute channel-last inside with ``conv2d``,
which stays fast inside compiled loops (see ``declebm/_conv2d.py``)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from declebm._conv2d import conv2d


def spectral_normalise(weight: Float[Array, "out ..."], num_iterations: int) -> Float[Array, "out ..."]:
    r"""``weight / sigma``, ``sigma = largest_singular_value(weight, num_iterations)``
    (Miyato et al. 2018): the normalised matrix has spectral norm about 1."""
    return weight / largest_singular_value(weight, num_iterations)


def largest_singular_value(weight: Float[Array, "out ..."], num_iterations: int) -> Float[Array, ""]:
    r"""``sigma``, the largest singular value of ``weight`` reshaped to ``(out, -1)``,
    estimated by ``num_iterations`` power iterations (Miyato et al. 2018).

    A pure function: the iteration starts from a fixed vector at every call instead of
    carrying ``u`` between calls, as ``eqx.nn.SpectralNorm`` does in an ``eqx.nn.State``
    (which ``fit`` has no place for, since an energy is called as ``E(x)``). The
    vectors are held constant for the gradient, as in Miyato et al. The estimate
    approaches ``sigma`` from below, so the normalised matrix has norm ``>= 1`` by a
    small margin that shrinks with ``num_iterations``.
    """
    w = weight.reshape(weight.shape[0], -1)
    u = jnp.ones((w.shape[0],), w.dtype) / math.sqrt(w.shape[0])
    w_sg = jax.lax.stop_gradient(w)

    def body(_, u):
        v = w_sg.T @ u
        v = v / (jnp.linalg.norm(v) + 1e-12)
        u = w_sg @ v
        return u / (jnp.linalg.norm(u) + 1e-12)

    u = jax.lax.fori_loop(0, num_iterations, body, u)
    v = w_sg.T @ u
    v = v / (jnp.linalg.norm(v) + 1e-12)
    return u @ w @ v


def _check_image_shape(owner: str, event_shape, image_shape) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    def as_shape(name, s):
        try:
            s = tuple(s)
        except TypeError:
            raise ValueError(f"{owner}({name}=...): expected a tuple of positive integers, got {s!r}") from None
        if not s or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in s):
            raise ValueError(f"{owner}({name}=...): expected a tuple of positive integers, got {s!r}")
        return s

    event_shape = as_shape("event_shape", event_shape)
    if image_shape is None:
        if len(event_shape) not in (2, 3):
            raise ValueError(
                f"{owner}(event_shape=...): expected an image shape (H, W) or (C, H, W), got {event_shape}; "
                "for flattened images give image_shape=(C, H, W) too"
            )
        image_shape = event_shape
    image_shape = as_shape("image_shape", image_shape)
    if len(image_shape) == 2:
        image_shape = (1,) + image_shape
    if len(image_shape) != 3:
        raise ValueError(f"{owner}(image_shape=...): expected (H, W) or (C, H, W), got {image_shape}")
    if math.prod(image_shape) != math.prod(event_shape):
        raise ValueError(
            f"{owner}(image_shape=...): {image_shape} holds {math.prod(image_shape)} numbers, "
            f"but event_shape {event_shape} holds {math.prod(event_shape)}"
        )
    return event_shape, image_shape


class _ConvNet(eqx.Module):
    """``channels`` 3x3 convolutions (the first with stride 1, the others stride 2, padding
    1) with an activation after each, then a linear map of the flattened features to a
    scalar."""

    convs: tuple[eqx.nn.Conv2d, ...]
    head: eqx.nn.Linear
    activation: Callable[[Array], Array]
    spectral_norm: bool = eqx.field(static=True)
    power_iterations: int = eqx.field(static=True)

    def __init__(self, owner, in_channels, hw, channels, activation, spectral_norm, power_iterations, key):
        channels = tuple(channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"{owner}(channels=...): expected a non-empty sequence of positive integers, got {channels!r}")
        if isinstance(power_iterations, bool) or not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError(f"{owner}(power_iterations=...): expected a positive integer, got {power_iterations!r}")
        keys = jax.random.split(key, len(channels) + 1)
        convs = []
        h, w = hw
        c_in = in_channels
        for i, (c, k) in enumerate(zip(channels, keys[:-1])):
            stride = 1 if i == 0 else 2
            convs.append(eqx.nn.Conv2d(c_in, c, 3, stride=stride, padding=1, key=k))
            h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
            c_in = c
        self.convs = tuple(convs)
        self.head = eqx.nn.Linear(c_in * h * w, "scalar", key=keys[-1])
        self.activation = activation
        self.spectral_norm = bool(spectral_norm)
        self.power_iterations = power_iterations

    def structure_kwargs(self) -> dict:
        """The structural arguments shared by ``ConvEnergy`` and ``NoiseConditionedConvEnergy``."""
        return dict(
            channels=tuple(conv.out_channels for conv in self.convs),
            activation=self.activation,
            spectral_norm=self.spectral_norm,
            power_iterations=self.power_iterations,
        )

    def _w(self, weight):
        return spectral_normalise(weight, self.power_iterations) if self.spectral_norm else weight

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, ""]:
        # Channel-last inside (see ``conv2d``): the weights keep Equinox's OIHW storage,
        # so files saved before the change load unchanged; the transposes are of the
        # weights (once per call, not per example under vmap) and of the last activation.
        h = jnp.transpose(x, (1, 2, 0))
        for conv in self.convs:
            kernel = jnp.transpose(self._w(conv.weight), (2, 3, 1, 0))  # OIHW -> HWIO
            h = conv2d(h, kernel, stride=conv.stride, padding=conv.padding)
            h = self.activation(h + conv.bias.reshape(-1))
        features = jnp.transpose(h, (2, 0, 1)).reshape(-1)  # the head reads (C, H, W) order
        return (self._w(self.head.weight) @ features)[0] + jnp.reshape(self.head.bias, ())


class ConvEnergy(eqx.Module):
    r"""``E(x) = ConvNet(x)``: a small convolutional energy for images.

    ``len(channels)`` 3x3 convolutions with padding 1 (the first keeps the size, the
    others halve it with stride 2), each followed by Swish/SiLU (smooth, so scores and
    Langevin are well posed, as in Du & Mordatch 2019's and Nijkamp et al. 2019's image
    EBMs), then a linear map of the flattened features to a scalar. On 8x8 digits with
    the default ``channels=(32, 64, 64)``: 8x8x32 -> 4x4x64 -> 2x2x64 -> 1.

    With ``spectral_norm=True`` every weight is divided by its largest singular value
    (Miyato et al. 2018; Du & Mordatch 2019 use it to keep EBM training stable), which
    makes each layer about 1-Lipschitz. The normalisation is functional (a fixed number
    of power iterations from a fixed start at every call, ``spectral_normalise``)
    rather than ``eqx.nn.SpectralNorm``, whose power-iteration vector lives in an
    ``eqx.nn.State`` that an energy called as ``E(x)`` inside ``fit`` cannot thread.

    Arguments:
        event_shape: the shape of one example: ``(H, W)``, ``(C, H, W)``, or a
            flattened ``(C*H*W,)`` together with ``image_shape``.
        image_shape: ``(C, H, W)`` or ``(H, W)`` to reshape a flattened example to.
        channels: output channels of each convolution.
        activation: the nonlinearity (SiLU by default).
        spectral_norm: normalise every weight by its spectral norm.
        power_iterations: power iterations per call for that estimate.
        key: a ``jax.random.key`` for the initial weights.
    """

    net: _ConvNet
    event_shape: tuple[int, ...] = eqx.field(static=True)
    image_shape: tuple[int, int, int] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: Sequence[int],
        *,
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (32, 64, 64),
        activation: Callable[[Array], Array] = jax.nn.silu,
        spectral_norm: bool = False,
        power_iterations: int = 10,
        key: PRNGKeyArray,
    ):
        self.event_shape, self.image_shape = _check_image_shape("ConvEnergy", event_shape, image_shape)
        c, h, w = self.image_shape
        self.net = _ConvNet("ConvEnergy", c, (h, w), channels, activation, spectral_norm, power_iterations, key)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(event_shape=self.event_shape, image_shape=self.image_shape, **self.net.structure_kwargs())

    def __call__(self, x: Float[Array, "*event"]) -> Float[Array, ""]:
        return self.net(x.reshape(self.image_shape))


class NoiseConditionedConvEnergy(eqx.Module):
    r"""A convolutional energy that takes the noise level as input, NCSN style:

    .. math:: E(x, \sigma) = \mathrm{ConvNet}([x, \log\sigma \cdot 1]) / \sigma

    ``log sigma`` enters as one extra constant input channel; dividing by ``sigma``
    makes the score scale as ``1/sigma`` (Song & Ermon 2020, technique 3), as in
    ``NoiseConditionedMLPEnergy``, whose conventions this follows: called as
    ``energy(x, sigma=s)`` with one scalar level per example (the framework maps a
    per-example array of levels over the batch); without ``sigma`` it uses
    ``default_sigma`` (set it to the smallest level trained on).

    Arguments: as ``ConvEnergy``, plus ``default_sigma`` (positive).
    """

    net: _ConvNet
    event_shape: tuple[int, ...] = eqx.field(static=True)
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    default_sigma: float = eqx.field(static=True)

    def __init__(
        self,
        event_shape: Sequence[int],
        *,
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (32, 64, 64),
        activation: Callable[[Array], Array] = jax.nn.silu,
        spectral_norm: bool = False,
        power_iterations: int = 10,
        default_sigma: float = 0.1,
        key: PRNGKeyArray,
    ):
        owner = "NoiseConditionedConvEnergy"
        self.event_shape, self.image_shape = _check_image_shape(owner, event_shape, image_shape)
        if isinstance(default_sigma, bool) or not isinstance(default_sigma, (int, float)) or not default_sigma > 0:
            raise ValueError(f"{owner}(default_sigma=...): expected a positive number, got {default_sigma!r}")
        self.default_sigma = float(default_sigma)
        c, h, w = self.image_shape
        self.net = _ConvNet(owner, c + 1, (h, w), channels, activation, spectral_norm, power_iterations, key)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(event_shape=self.event_shape, image_shape=self.image_shape, default_sigma=self.default_sigma,
                    **self.net.structure_kwargs())

    def __call__(self, x: Float[Array, "*event"], sigma: ArrayLike | None = None) -> Float[Array, ""]:
        if sigma is None:
            sigma = self.default_sigma
        sigma = jnp.asarray(sigma, x.dtype)
        if sigma.size != 1:
            raise ValueError(f"sigma: expected one noise level per example (a scalar), got shape {sigma.shape}")
        sigma = sigma.reshape(())
        img = x.reshape(self.image_shape)
        level = jnp.full((1,) + self.image_shape[1:], jnp.log(sigma), x.dtype)
        return self.net(jnp.concatenate([img, level])) / sigma
