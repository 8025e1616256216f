"""Samplers over a ladder of densities: parallel tempering (replica exchange over
temperatures) and annealed Langevin dynamics over noise levels (NCSN)."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from declebm import AbstractSampler
from declebm._checks import check_array, check_positive
from declebm._ebm import split_mapped

from ._samplers import Langevin, _info, _step_size


def _temperatures(value):
    """A 1-D ladder ``1 = T_0 < T_1 < ... < T_{K-1}``, finite, at least two rungs."""
    if isinstance(value, jax.core.Tracer):
        return value
    t = check_array(value, "temperatures", ndim=(1,), min_size=2)
    v = np.asarray(t, np.float64)
    if v[0] != 1.0:
        raise ValueError(f"temperatures: the ladder must start at 1 (the target itself), got {v[0]:g} first")
    if np.any(np.diff(v) <= 0):
        i = int(np.argmax(np.diff(v) <= 0))
        raise ValueError(f"temperatures: must be strictly increasing, got {v[i]:g} then {v[i + 1]:g}")
    return t


class ParallelTemperingState(NamedTuple):
    """position: the chain at temperature 1 (the target), ``replicas.position[..., 0, :]``.
    replicas: the inner kernel's states of the ``K`` replicas, stacked on a temperature
    axis (after the chain axis when batched): replica ``k`` targets ``p~^{1/T_k}``."""

    position: Array
    replicas: PyTree


class ParallelTempering(AbstractSampler):
    r"""Parallel tempering (replica exchange; Swendsen & Wang 1986, Geyer 1991; the even-odd
    scheme of Okabe et al. 2001, analysed by Syed et al. 2022, "Non-reversible parallel
    tempering", JRSS B): each chain is a ladder of ``K`` replicas, replica ``k`` targeting
    ``p~(x)^{b_k}``, ``b_k = 1 / T_k``, ``1 = T_0 < ... < T_{K-1}``. One step moves every
    replica with one transition of ``kernel`` at its own temperature, then proposes to swap
    the states of the adjacent pairs ``(k, k+1)`` of one parity (even ``k`` or odd ``k``,
    chosen at random each step), each accepted with probability

    .. math:: \alpha_k = \min\bigl(1, \exp\bigl((b_k - b_{k+1})\,(\log\tilde p(x_{k+1}) - \log\tilde p(x_k))\bigr)\bigr).

    The hot replicas cross the barriers between modes and hand their states down the ladder,
    so the cold replica (``state.position``, what ``run`` returns) visits every mode with
    its weight, where a single chain of ``kernel`` stays in the mode it started in.
    ``temperatures`` fixes ``K``; a geometric ladder is the usual start, with adjacent
    swap acceptance ~0.2-0.5 (Syed et al.: a ladder is well spaced when every pair
    rejects about equally often).

    ``kernel``: any one-chain sampler (``MALA``, ``HMC``, ``Barker``, ``GHMC``, ``Langevin``,
    ``UnderdampedLangevin``, tuned ``MCLMC``, ...), shared by every temperature, or a list
    of ``K`` samplers of one type, one per temperature, that differ in their numeric
    hyperparameters (e.g. ``[MALA(0.3 * t) for t in temperatures]``: a replica at
    temperature ``T`` is ``sqrt(T)`` times wider, and MALA's step is a variance); they are
    stored as one sampler whose hyperparameters have a leading temperature axis. Swapped states keep their momentum; the cached tempered ``log p~`` and
    gradient of BlackJAX states (fields ``logdensity``, ``logdensity_grad``) are rescaled by
    ``b_new / b_old``, and a state without them is re-initialised at its new temperature.

    ``SamplerInfo``: ``acceptance_rate``, ``is_divergent`` and ``mh_acceptance`` are the
    kernel's at temperature 1; ``swap_acceptance`` has the ``K - 1`` pairs' ``alpha_k``
    (computed for every pair each step, applied to the attempted ones). Cost per step: ``K``
    kernel transitions per chain. Not itself a kernel for SMC/AIS (``is_chain_kernel``).
    """

    kernel: AbstractSampler
    temperatures: Float[Array, " K"]
    per_temperature: bool = eqx.field(static=True)
    is_chain_kernel: ClassVar[bool] = False

    def __init__(self, kernel: AbstractSampler | list | tuple, temperatures: Any):
        self.temperatures = _temperatures(temperatures)
        num = int(jnp.shape(self.temperatures)[0])
        kernels = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
        for k in kernels:
            if not isinstance(k, AbstractSampler):
                raise TypeError(f"kernel: expected a declebm sampler such as MALA(step_size=...) or a list of one per "
                                f"temperature, got {type(k).__name__}")
            if not type(k).is_chain_kernel:
                raise TypeError(f"kernel: {type(k).__name__} has no one-chain kernel to run at each temperature; "
                                f"use MALA, HMC, Barker, GHMC, Langevin, UnderdampedLangevin or a tuned MCLMC")
        self.per_temperature = isinstance(kernel, (list, tuple))
        if not self.per_temperature:
            self.kernel = kernel
            return
        if len(kernels) != num:
            raise ValueError(f"kernel: a list of kernels needs one per temperature, {num}; got {len(kernels)}")
        parts = [eqx.partition(k, eqx.is_array) for k in kernels]
        structure = jax.tree.structure(parts[0][0])
        for k, (dynamic, static) in zip(kernels, parts):
            if (type(k) is not type(kernels[0]) or jax.tree.structure(dynamic) != structure
                    or not eqx.tree_equal(static, parts[0][1])
                    or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree.leaves(dynamic),
                                                                       jax.tree.leaves(parts[0][0])))):
                raise ValueError(
                    "kernel: the kernels of the temperatures must be one sampler type that differ only in their "
                    f"numeric hyperparameters (e.g. [MALA(0.1 * t) for t in temperatures]); got {kernels[0]!r} and {k!r}"
                )
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *[d for d, _ in parts])
        self.kernel = eqx.combine(stacked, parts[0][1])

    @property
    def target_acceptance(self) -> float | None:
        """The kernel's (its acceptance at temperature 1 is reported)."""
        return type(self.kernel).target_acceptance

    @property
    def num_temperatures(self) -> int:
        return int(jnp.shape(self.temperatures)[0])

    def _betas(self, dtype) -> Array:
        return (1.0 / self.temperatures).astype(dtype)

    def _vmapped(self, fn: Callable, betas: Array, *args):
        """``fn(kernel_k, beta_k, *args_k)`` over the ladder, the kernels' numeric
        hyperparameters mapped with the temperatures when there is one kernel per temperature."""
        if self.per_temperature:
            dynamic, static = eqx.partition(self.kernel, eqx.is_array)
            return jax.vmap(lambda d, b, *a: fn(eqx.combine(d, static), b, *a))(dynamic, betas, *args)
        return jax.vmap(lambda b, *a: fn(self.kernel, b, *a))(betas, *args)

    def init_chain(self, logdensity_fn: Callable, x: Array) -> ParallelTemperingState:
        betas = self._betas(x.dtype)
        replicas = self._vmapped(lambda k, b: k.init_chain(lambda y: b * logdensity_fn(y), x), betas)
        return ParallelTemperingState(x, replicas)

    def step_chain(self, key: PRNGKeyArray, state: ParallelTemperingState, logdensity_fn: Callable):
        K = self.num_temperatures
        x_dtype = state.position.dtype
        betas = self._betas(x_dtype)
        k_move, k_parity, k_swap = jax.random.split(key, 3)
        keys = jax.random.split(k_move, K)
        replicas, info = self._vmapped(
            lambda k, b, kk, s: k.step_chain(kk, s, lambda y: b * logdensity_fn(y)), betas, keys, state.replicas)
        cached = hasattr(replicas, "_fields") and {"logdensity", "logdensity_grad"} <= set(replicas._fields)
        if cached:
            log_p = replicas.logdensity / betas  # untempered log p~ at each replica
        else:
            log_p = jax.vmap(logdensity_fn)(replicas.position)
        log_p = log_p.astype(jnp.float32)
        b32 = betas.astype(jnp.float32)
        log_alpha = (b32[:-1] - b32[1:]) * (log_p[1:] - log_p[:-1])
        log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
        alpha = jnp.exp(jnp.minimum(log_alpha, 0.0))
        # Pairs (k, k+1) with k of one parity: disjoint, so all are decided at once.
        parity = jax.random.bernoulli(k_parity).astype(jnp.int32)
        pair = jnp.arange(K - 1)
        u = jax.random.uniform(k_swap, (K - 1,))
        swap = ((pair % 2) == parity) & (jnp.log(u) < log_alpha)
        # Replica k takes its partner's state: k+1 if pair k swaps, k-1 if pair k-1 swaps.
        up = jnp.concatenate([swap, jnp.zeros(1, bool)])
        down = jnp.concatenate([jnp.zeros(1, bool), swap])
        rung = jnp.arange(K)
        source = jnp.where(up, rung + 1, jnp.where(down, rung - 1, rung))
        moved = jax.tree.map(lambda a: a[source], replicas)
        if cached:
            ratio = (betas / betas[source]).astype(x_dtype)
            moved = moved._replace(
                logdensity=(moved.logdensity * ratio).astype(replicas.logdensity.dtype),
                logdensity_grad=(moved.logdensity_grad * ratio.reshape((K,) + (1,) * (moved.position.ndim - 1))
                                 ).astype(replicas.logdensity_grad.dtype),
            )
        else:
            fresh = self._vmapped(lambda k, b, x: k.init_chain(lambda y: b * logdensity_fn(y), x), betas,
                                  moved.position)
            changed = source != rung
            moved = jax.tree.map(
                lambda f, m: jnp.where(changed.reshape((K,) + (1,) * (m.ndim - 1)), f, m), fresh, moved)
        cold = jax.tree.map(lambda a: a[0], info)
        out = _info(cold.acceptance_rate, cold.is_divergent, cold.mh_acceptance, alpha)
        return ParallelTemperingState(moved.position[0], moved), out


class AnnealedLangevinState(NamedTuple):
    """position: the chains; step: how many steps each chain has made (its noise level is
    ``min(step // steps_per_level, L - 1)``)."""

    position: Array
    step: Int[Array, ""]


def _sigmas(value):
    if isinstance(value, jax.core.Tracer):
        return value
    s = check_array(value, "sigmas", ndim=(1,), min_size=1)
    v = np.asarray(s, np.float64)
    if np.any(v <= 0):
        raise ValueError(f"sigmas: every noise level must be > 0, got minimum {v.min():g}")
    if np.any(np.diff(v) >= 0):
        i = int(np.argmax(np.diff(v) >= 0))
        raise ValueError(f"sigmas: must be strictly decreasing (largest noise first), got {v[i]:g} then {v[i + 1]:g}")
    return s


class AnnealedLangevin(AbstractSampler):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, "Generative modeling by estimating
    gradients of the data distribution", Algorithm 1), the sampler of NCSN for
    noise-conditioned energies (``models.NoiseConditionedMLPEnergy``,
    ``models.NoiseConditionedConvEnergy``): for the levels ``sigma_1 > ... > sigma_L``
    (``sigmas``), ``steps_per_level = T`` unadjusted Langevin steps each,

    .. math:: \alpha_i = \epsilon\,\sigma_i^2 / \sigma_L^2,\qquad
              x \leftarrow x + \tfrac{\alpha_i}{2}\nabla_x\log\tilde p(x;\ \sigma_i) + \sqrt{\alpha_i}\,z,

    ``epsilon = step_size``, the model called with ``sigma=sigma_i`` (``level_name``). The
    same move as ``Langevin`` (whose ``step_size`` convention is the paper's ``alpha``);
    the large early levels move the chains between modes, the last one refines them.

    A step is one Langevin move; the state counts the steps, and after ``L * T`` steps
    (``num_steps``, what to pass to ``sample``) the chains keep moving at the last level.
    ``SamplerInfo``: ``acceptance_rate`` 1, ``mh_acceptance`` ``None``. Not a kernel of one
    density, so not for SMC/AIS/ParallelTempering, nor for ``adapt_step_size``.
    """

    sigmas: Float[Array, " L"] = eqx.field(converter=_sigmas)
    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    steps_per_level: int = 100
    level_name: str = "sigma"
    is_chain_kernel: ClassVar[bool] = False

    def __check_init__(self):
        check_positive(self.steps_per_level, "steps_per_level", integer=True)
        if not isinstance(self.level_name, str) or not self.level_name.isidentifier():
            raise TypeError(f"level_name: expected the energy's keyword for the noise level such as 'sigma', got "
                            f"{self.level_name!r}")

    @property
    def is_differentiable(self) -> bool:
        return True

    @property
    def num_steps(self) -> int:
        """``L * steps_per_level``: one pass over the levels."""
        return int(jnp.shape(self.sigmas)[0]) * self.steps_per_level

    def _check_kwargs(self, kwargs: dict) -> None:
        if self.level_name in kwargs:
            raise ValueError(f"{self.level_name}: AnnealedLangevin sets the noise level itself (sigmas=...); "
                             f"do not pass {self.level_name}=")

    def init_chain(self, logdensity_fn: Callable, x: Array) -> AnnealedLangevinState:
        return AnnealedLangevinState(x, jnp.zeros((), jnp.int32))

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        raise TypeError("AnnealedLangevin conditions the model on its noise level; use step(model, state, key)")

    def init(self, model: Any, x: Array, **kwargs) -> AnnealedLangevinState:
        self._check_kwargs(kwargs)
        return AnnealedLangevinState(x, jnp.zeros(x.shape[0], jnp.int32))

    def step(self, model: Any, state: AnnealedLangevinState, key: PRNGKeyArray, **kwargs):
        self._check_kwargs(kwargs)
        x = state.position
        n = x.shape[0]
        num_levels = jnp.shape(self.sigmas)[0]
        level = jnp.minimum(state.step // self.steps_per_level, num_levels - 1)
        sigma = self.sigmas[level]
        alpha = self.step_size * sigma**2 / self.sigmas[-1] ** 2
        mapped, fixed = split_mapped(kwargs, (n,))

        def grad(xi, s, kw):
            return jax.grad(lambda y: model.log_prob_unnorm(y, **{self.level_name: s}, **kw, **fixed))(xi)

        g = jax.vmap(grad)(x, sigma.astype(x.dtype), mapped)
        new = Langevin(alpha)._move(key, x, g)
        return AnnealedLangevinState(new, state.step + 1), _info(jnp.ones(n), jnp.zeros(n, bool))
