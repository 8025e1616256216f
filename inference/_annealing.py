r"""What AIS and SMC share: the geometric bridge between a normalised start and the
model, the choice of that start, and the checks of estimator arguments."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float

from declebm import EBM, AbstractSampler
from declebm._checks import check_examples
from declebm._ebm import check_energy

from ._nce import _fitted_gaussian


class AnnealedTarget(eqx.Module):
    r"""The geometric bridge from a normalised start ``q`` to the model ``p~``:

    .. math:: \log f_\beta(x) = (1-\beta)\log q(x) + \beta\log\tilde p(x),\qquad \beta\in[0,1],

    so ``f_0 = q`` (``Z_0 = 1``) and ``f_1 = p~`` (``Z_1 = Z``). A "model" for the samplers:
    ``log_prob_unnorm(x, beta)`` for one example, with ``beta`` a keyword input.
    """

    model: Any
    base: Any

    def log_densities(self, x: Float[Array, "*event"]) -> tuple[Array, Array]:
        """``(log p~(x), log q(x))`` for one example."""
        return self.model.log_prob_unnorm(x), jnp.sum(self.base.log_prob(x))

    def log_ratio(self, x: Float[Array, "*event"]) -> Float[Array, ""]:
        r"""``log p~(x) - log q(x) = d log f_beta / d beta``."""
        lp, lq = self.log_densities(x)
        return lp - lq

    def log_prob_unnorm(self, x: Float[Array, "*event"], beta: Float[Array, ""]) -> Float[Array, ""]:
        lp, lq = self.log_densities(x)
        # An energy of +inf (zero density, a hard constraint) gives lp = -inf: at beta = 0
        # the bridge is q itself, not 0 * (-inf) = NaN.
        return jnp.where(beta == 0, lq, lq + beta * (lp - lq))


class WhitenedGaussian(eqx.Module):
    r"""``N(mu, L L^T)`` evaluated one example at a time through the whitening matrix
    ``W = L^{-1}``: ``log q(x) = -1/2 |W (x - mu)|^2 - sum log diag L - d/2 log 2 pi``.

    The same density as ``numpyro.distributions.MultivariateNormal(mu, scale_tril=L)``,
    whose per-example ``log_prob`` is a triangular solve: vmapped over chains that becomes
    many tiny batched solves, two orders of magnitude slower on CPU than one matmul.
    """

    loc: Float[Array, " d"]
    scale_tril: Float[Array, "d d"]
    whitening: Float[Array, "d d"]

    def __init__(self, loc: Array, scale_tril: Array):
        self.loc = loc
        self.scale_tril = scale_tril
        self.whitening = jax.scipy.linalg.solve_triangular(scale_tril, jnp.eye(loc.shape[0], dtype=loc.dtype), lower=True)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.loc.shape[0],)

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        z = self.whitening @ (x - self.loc)
        d = self.loc.shape[0]
        half_log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.scale_tril))))
        return -0.5 * jnp.sum(z**2) - half_log_det - 0.5 * d * jnp.log(2 * jnp.pi)

    def sample(self, key, sample_shape: tuple[int, ...] = ()) -> Array:
        z = jax.random.normal(key, tuple(sample_shape) + self.loc.shape, self.loc.dtype)
        return self.loc + z @ self.scale_tril.T


def per_example_density(base: Any) -> Any:
    """``base``, or an equivalent that is cheap to evaluate one example at a time
    (a full-covariance ``MultivariateNormal`` becomes a ``WhitenedGaussian``)."""
    if isinstance(base, dist.MultivariateNormal) and tuple(base.batch_shape) == ():
        return WhitenedGaussian(base.loc, base.scale_tril)
    return base


def check_kernel(kernel: Any) -> None:
    if not isinstance(kernel, AbstractSampler):
        raise TypeError(f"kernel: expected a declebm sampler such as MALA(step_size=...) or HMC(...), got {type(kernel).__name__}")
    if not type(kernel).is_chain_kernel:
        raise TypeError(
            f"kernel: {type(kernel).__name__} is not a Markov kernel of one chain (its step moves a set of particles "
            f"or a ladder of densities); use MALA, HMC, Barker or GHMC"
        )
    if kernel.needs_tuning:
        raise ValueError(f"kernel: {type(kernel).__name__} is not tuned yet; give its L and step_size (or .tuned(...))")


def check_distribution(base: Any, name: str = "base") -> None:
    for method in ("sample", "log_prob"):
        if not callable(getattr(base, method, None)):
            raise TypeError(
                f"{name}: expected a normalised density with `sample` and `log_prob` (e.g. a numpyro "
                f"distribution), got {type(base).__name__} without `{method}`"
            )


def event_shape_of(model: Any, data: Array | None) -> tuple[int, ...]:
    """The model's event shape (from the model, else from ``data``), checked against the energy."""
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    shape = model.event_shape
    if shape is None and data is not None:
        shape = tuple(data.shape[1:])
    if shape is None:
        raise ValueError(
            "model: its event_shape is unknown; declare it (EBM(energy, event_shape=...) or an energy with "
            "event_shape) or pass data="
        )
    check_energy(model, shape)
    return tuple(shape)


def prepare(
    owner: str, model: Any, data: Array | None, base: Any, extra: dict
) -> tuple[EBM, Array | None, tuple[int, ...], Any]:
    """What every estimator does first: refuse unknown keyword arguments, check ``data``,
    settle the event shape (declaring it on the model if it had none) and pick the start
    density (``start_density``). Returns ``(model, data, event_shape, base)``."""
    if extra:
        raise TypeError(f"{owner}.estimate: unexpected arguments {', '.join(extra)}")
    if data is not None:
        data = check_examples(data, "data", getattr(model, "event_shape", None))
    event_shape = event_shape_of(model, data)
    if model.event_shape is None:
        model = model.with_event_shape(event_shape)
    return model, data, event_shape, start_density(base, model, data, event_shape)


def start_density(base: Any, model: EBM, data: Array | None, event_shape: tuple[int, ...]) -> Any:
    """The normalised start ``q`` of the bridge: ``base`` if given, else the model's own
    base density, else a Gaussian fitted to ``data`` (full covariance for vectors), else
    a standard normal. Its draws are checked to have the model's event shape."""
    if base is not None:
        name = "base"
    elif model.base is not None:
        base, name = model.base, "model.base"
    elif data is not None:
        base, name = _fitted_gaussian(data), "data"
    else:
        base = dist.Normal(jnp.zeros(event_shape), jnp.ones(event_shape)).to_event(len(event_shape))
        name = "base"
    check_distribution(base, name)
    drawn = jax.eval_shape(lambda b: b.sample(jax.random.key(0), (2,)), base)
    size = int(np.prod(event_shape))
    if int(np.prod(drawn.shape[1:])) != size:
        raise ValueError(
            f"{name}: its draws have shape {tuple(drawn.shape[1:])} per example, but the model's examples "
            f"have event_shape {event_shape}"
        )
    return per_example_density(base)


def draw_start(
    base: Any, num: int, event_shape: tuple[int, ...], key, sharding: Any = None
) -> Float[Array, "n *event"]:
    """``num`` exact draws of the start density, shaped ``(num, *event_shape)``; with
    ``sharding`` (``evaluate.log_z(devices=...)``), split over its devices along the chains
    (the same draws: JAX's random bits do not depend on the split), so the compiler runs
    each device's chains there."""
    x = base.sample(key, (num,))
    x = jnp.reshape(x, (num,) + tuple(event_shape)).astype(jnp.result_type(float))
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def check_chains_sharding(sharding: Any, num: int, what: str) -> None:
    """``sharding``'s devices must divide ``num`` chains (``what`` names the setting)."""
    if sharding is None:
        return
    n = len(sharding.device_set)
    if num % n:
        raise ValueError(f"devices: {n} devices do not divide {what} ({num}); use a multiple of {n}")


def integrability_checks(
    model: Any, start: Float[Array, "n *event"], end: Float[Array, "n *event"], factor: float = 10.0
) -> list[tuple[bool, str]]:
    r"""Two signs that ``p~`` may not integrate, as ``(failed, sentence)`` checks.

    *Chains ran away*: the largest final ``|x|`` exceeds ``1e4`` times the start's.

    *The density does not fall off*: with ``m`` the chains' mean and ``s = factor``, the
    shell at ``s`` times the chains' distance from ``m`` holds mass about ``s^d p~(m + s(x - m))``
    against ``p~(x)`` at the chains (``d`` the number of coordinates). For an integrable
    density this ratio falls below 1 far enough out; the check fails when its median over
    the chains, ``d log s + log p~(m + s(x - m)) - log p~(x)``, is not below 0 at ``s = 10``:
    the estimate would grow with the width of the start (a flat or rising density). A
    density with polynomial tails ``|x|^{-(d + nu)}`` passes for any ``nu > 0``; a density
    whose support ends (energy ``+inf`` outside) passes.
    """
    n = start.shape[0]
    start = np.asarray(start).reshape(n, -1)
    end_flat = np.asarray(end).reshape(end.shape[0], -1)
    start_size = float(np.max(np.abs(start))) + 1.0
    end_size = float(np.max(np.abs(np.where(np.isfinite(end_flat), end_flat, np.inf))))
    ran_away = not end_size <= 1e4 * start_size
    growth = -np.inf
    finite = np.all(np.isfinite(end_flat), axis=1)
    if not ran_away and finite.sum() >= 2:
        x = jnp.asarray(end)[np.flatnonzero(finite)]
        growth = float(_tail_growth(model, x, factor))
    return [
        (ran_away,
         f"chains ran away (largest final |x| {end_size:.3g}, start {start_size - 1.0:.3g}): the density may not "
         "be integrable (energy unbounded below), and log Z is then meaningless"),
        (bool(growth >= 0.0),
         f"the density does not fall off: {factor:g} times farther from the chains' mean, the shell's mass "
         f"s^d p~ is exp({growth:.3g}) times the chains' density (median over chains; below 1 for an integrable "
         "density): it may not be integrable, and log Z would grow with the width of the start"),
    ]


@eqx.filter_jit
def _tail_growth(model: Any, x: Float[Array, "n *event"], factor: float) -> Float[Array, ""]:
    """The median over chains of ``d log s + log p~(m + s(x - m)) - log p~(x)`` (see
    ``integrability_checks``); NaN rows (a NaN energy far out) are left out."""
    m = jnp.mean(x, axis=0)
    far = m + factor * (x - m)
    d = int(np.prod(x.shape[1:]))
    log_p = jax.vmap(model.log_prob_unnorm)
    g = d * jnp.log(factor) + log_p(far) - log_p(x)
    return jnp.nanmedian(g)
