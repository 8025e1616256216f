"""2-D toy distributions (the definitions of the FFJORD/LSD/particle-dynamics code),
generated on device with ``jax.random``; exact log densities where one exists."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import _describe, check_array, check_key, check_positive

_SQRT2 = 1.414  # the constant the LSD / particle-dynamics code divides 8gaussians by


def _eight_gaussian_centres() -> Array:
    d = 1.0 / math.sqrt(2.0)
    c = jnp.array([(1, 0), (-1, 0), (0, 1), (0, -1), (d, d), (d, -d), (-d, d), (-d, -d)], dtype=jnp.float32)
    return 4.0 * c / _SQRT2


_EIGHT_STD = 0.5 / _SQRT2


def _eight_gaussians(key, n):
    kc, kn = jax.random.split(key)
    idx = jax.random.randint(kc, (n,), 0, 8)
    return _eight_gaussian_centres()[idx] + _EIGHT_STD * jax.random.normal(kn, (n, 2))


def _eight_gaussians_log_prob(x):
    c = _eight_gaussian_centres()
    sq = jnp.sum((x[..., None, :] - c) ** 2, axis=-1)
    comp = -0.5 * sq / _EIGHT_STD**2 - jnp.log(2 * jnp.pi * _EIGHT_STD**2)
    return jax.nn.logsumexp(comp, axis=-1) - jnp.log(8.0)


def _moons(key, n):
    # sklearn.make_moons(noise=0.1) * 2 + [-1, -0.2]
    kc, kt, kn = jax.random.split(key, 3)
    upper = jax.random.bernoulli(kc, 0.5, (n,))
    t = jax.random.uniform(kt, (n,)) * jnp.pi
    outer = jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
    inner = jnp.stack([1 - jnp.cos(t), 1 - jnp.sin(t) - 0.5], -1)
    x = jnp.where(upper[:, None], outer, inner) + 0.1 * jax.random.normal(kn, (n, 2))
    return x * 2 + jnp.array([-1.0, -0.2])


def _swissroll(key, n):
    # sklearn.make_swiss_roll(noise=1.0)[:, [0, 2]] / 5
    kt, kn = jax.random.split(key)
    t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(kt, (n,)))
    x = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], -1) + jax.random.normal(kn, (n, 2))
    return x / 5.0


def _checkerboard(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,)) * 4 - 2
    x2 = jax.random.uniform(k2, (n,)) - jax.random.randint(k3, (n,), 0, 2) * 2.0
    x2 = x2 + jnp.floor(x1) % 2
    return jnp.stack([x1, x2], -1) * 2


def _checkerboard_log_prob(x):
    # Uniform on the 8 cells (2x2 each) of [-4, 4]^2 where floor(x1/2) + floor(x2/2) is even.
    inside = jnp.all((x >= -4) & (x < 4), axis=-1)
    cell = (jnp.floor(x[..., 0] / 2) + jnp.floor(x[..., 1] / 2)) % 2
    return jnp.where(inside & (cell == 0), -jnp.log(32.0), -jnp.inf)


def _rings(key, n):
    # four concentric circles, radii 0.75, 1.5, 2.25, 3, Gaussian noise 0.08 (x3 scale of FFJORD's)
    kr, kt, kn = jax.random.split(key, 3)
    radius = (jax.random.randint(kr, (n,), 0, 4) + 1) * 0.75
    t = jax.random.uniform(kt, (n,)) * 2 * jnp.pi
    x = radius[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
    return x + 0.08 * jax.random.normal(kn, (n, 2))


def _circles(key, n):
    # sklearn.make_circles(factor=0.5, noise=0.08) * 3
    kr, kt, kn = jax.random.split(key, 3)
    radius = jnp.where(jax.random.bernoulli(kr, 0.5, (n,)), 1.0, 0.5)
    t = jax.random.uniform(kt, (n,)) * 2 * jnp.pi
    x = radius[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], -1) + 0.08 * jax.random.normal(kn, (n, 2))
    return 3.0 * x


def _pinwheel(key, n):
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    kc, kf = jax.random.split(key)
    rads = jnp.linspace(0, 2 * jnp.pi, num_classes, endpoint=False)
    labels = jax.random.randint(kc, (n,), 0, num_classes)
    f = jax.random.normal(kf, (n, 2)) * jnp.array([radial_std, tangential_std]) + jnp.array([1.0, 0.0])
    angles = rads[labels] + rate * jnp.exp(f[:, 0])
    rot = jnp.stack([jnp.cos(angles), -jnp.sin(angles), jnp.sin(angles), jnp.cos(angles)], -1).reshape(n, 2, 2)
    return 2 * jnp.einsum("ti,tij->tj", f, rot)


_SAMPLERS: dict[str, Callable] = {
    "8gaussians": _eight_gaussians,
    "moons": _moons,
    "swissroll": _swissroll,
    "checkerboard": _checkerboard,
    "rings": _rings,
    "circles": _circles,
    "pinwheel": _pinwheel,
}
_LOG_PROBS: dict[str, Callable] = {
    "8gaussians": _eight_gaussians_log_prob,
    "checkerboard": _checkerboard_log_prob,
}

TOY_NAMES: tuple[str, ...] = tuple(_SAMPLERS)


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name: expected the name of a toy dataset (a str), got {_describe(name)}")
    if name not in _SAMPLERS:
        raise ValueError(f"name: unknown toy dataset {name!r}; choose one of {', '.join(TOY_NAMES)}")


def toy(name: str, n: int, *, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """``n`` draws from a 2-D toy distribution, float32 of shape ``(n, 2)``.

    Names: ``8gaussians`` (centres at radius 4/1.414 on the 8 compass directions,
    std 0.5/1.414, as in the LSD and particle-dynamics code; true mean log-density
    about -2.83 nats), ``moons``, ``swissroll``, ``checkerboard``, ``rings``,
    ``circles``, ``pinwheel`` (the FFJORD definitions).
    """
    _check_name(name)
    check_positive(n, "n", integer=True)
    check_key(key)
    return _SAMPLERS[name](key, n).astype(jnp.float32)


def has_log_prob(name: str) -> bool:
    """Whether ``toy_log_prob`` knows the exact density of ``name``."""
    _check_name(name)
    return name in _LOG_PROBS


def toy_log_prob(name: str, x: Float[Array, "*batch 2"]) -> Float[Array, "*batch"]:
    """Exact log density of a toy distribution (``8gaussians``, ``checkerboard``).

    ``x`` has shape ``(..., 2)``; points at infinity have log density ``-inf``, NaN is
    refused. Raises ``ValueError`` for toys whose density has no closed form.
    """
    _check_name(name)
    if name not in _LOG_PROBS:
        raise ValueError(
            f"name: {name!r} has no closed-form density; exact log densities exist for {', '.join(_LOG_PROBS)}"
        )
    if not isinstance(x, jax.core.Tracer):
        x = check_array(x, "x", finite=False)
        if x.ndim < 1 or x.shape[-1] != 2:
            raise ValueError(f"x: expected 2-D points, shape (..., 2), got shape {tuple(x.shape)}")
        if bool(jnp.any(jnp.isnan(x))):
            raise ValueError(f"x: contains {int(jnp.sum(jnp.isnan(x)))} NaN values")
    return _LOG_PROBS[name](x)


# Toys that are mixtures of isotropic Gaussians: their centres and the components' std.
_MODES: dict[str, Callable[[], tuple[Array, float]]] = {
    "8gaussians": lambda: (_eight_gaussian_centres(), _EIGHT_STD),
}


def toy_mode_fraction(name: str, x: Float[Array, "n 2"], *, num_std: float = 2.0) -> Float[Array, ""]:
    r"""The fraction of the points ``x`` that lie within ``num_std`` standard deviations of
    one of the modes of a toy made of isotropic Gaussians (``8gaussians``):

    .. math:: \frac{1}{n} \sum_i \mathbb{1}\bigl[\min_k \|x_i - c_k\| < \text{num\_std}\,\sigma\bigr]

    A mode-sensitive check of samples: the data score ``1 - exp(-num_std^2 / 2)`` (0.865 at
    2 std), samples that fill the ring between the modes much less. A median-bandwidth MMD
    cannot see the modes (its bandwidth is the ring's size); ``evaluate.mmd`` with a small
    fixed bandwidth can, for any toy. Raises ``ValueError`` for toys without such modes.
    """
    _check_name(name)
    if name not in _MODES:
        raise ValueError(
            f"name: {name!r} is not made of Gaussian modes (mode fractions exist for {', '.join(_MODES)}); "
            f"compare samples with evaluate.mmd(samples, data, bandwidth=...) at a small bandwidth instead"
        )
    check_positive(num_std, "num_std")
    x = check_array(x, "x")
    if x.ndim != 2 or x.shape[-1] != 2:
        raise ValueError(f"x: expected 2-D points, shape (n, 2), got shape {tuple(x.shape)}")
    centres, std = _MODES[name]()
    dist = jnp.sqrt(jnp.min(jnp.sum((x[:, None, :] - centres) ** 2, axis=-1), axis=1))
    return jnp.mean(dist < num_std * std)


def toy_sample_metrics(name: str, samples: Float[Array, "n 2"], test: Float[Array, "m 2"]) -> dict[str, float]:
    r"""How close ``samples`` are to held-out ``test`` points of the toy ``name``: MMD^2
    (``evaluate.mmd``) at the median bandwidth (about the data's overall size, so blind to
    modes), MMD^2 at a tenth of the test data's per-axis standard deviation
    :math:`h = 0.1\sqrt{\overline{\mathrm{Var}}}` (0.2 on 8gaussians: it sees the modes), and
    for toys made of Gaussian modes ``toy_mode_fraction`` (the data's: 0.865). Keys:
    ``sample_mmd2_median_bw``, ``sample_mmd2_bw_<h>`` and ``sample_mode_fraction``."""
    from ..evaluate import mmd  # evaluate imports this package

    _check_name(name)
    test = check_array(test, "test")
    h = 0.1 * float(jnp.sqrt(jnp.mean(jnp.var(test, 0))))
    out = {"sample_mmd2_median_bw": round(float(mmd(samples, test)), 5),
           f"sample_mmd2_bw_{h:.2g}": round(float(mmd(samples, test, bandwidth=h)), 5)}
    if name in _MODES:
        out["sample_mode_fraction"] = round(float(toy_mode_fraction(name, samples)), 3)
    return out
