"""MCMC samplers backed by BlackJAX's low-level kernels.

One step-size convention throughout: ``step_size = eps`` means the Langevin move
``x' = x + (eps/2) grad log p~(x) + sqrt(eps) z`` (Song & Kingma 2021, eq. 9). BlackJAX
writes the same move as ``x + h grad + sqrt(2h) z``, so we hand it ``h = eps / 2``.

Numeric hyperparameters (``step_size``, ``noise_scale``, ``inverse_mass_matrix``) are
checked at construction and stored as arrays, so they are *traced* values: sampling with
40 step sizes compiles once. Integers that fix loop lengths (``num_integration_steps``,
``max_num_doublings``) stay Python ints. Chains keep their own floating dtype.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, ClassVar, NamedTuple

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc.ghmc import GHMCState
from blackjax.sgmcmc.diffusions import overdamped_langevin
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractSampler, SamplerInfo
from declebm._checks import check_array, check_positive, hyperparameter
from declebm._ebm import split_mapped

_step_size = hyperparameter("step_size", low=0.0, low_open=True)
_noise_scale = hyperparameter("noise_scale", low=0.0)


def _optional_noise_scale(value):
    return None if value is None else _noise_scale(value)


def _per_chain(scalar_converter, name):
    """Langevin's step and noise: one positive number, or one per chain (a 1-D array,
    used when chains sample different targets, e.g. the levels of recovery likelihood)."""

    def convert(value):
        if value is not None and not isinstance(value, jax.core.Tracer) and np.ndim(value) == 1:
            arr = check_array(value, name, ndim=(1,), min_size=1)
            low_ok = np.asarray(arr) >= 0 if name == "noise_scale" else np.asarray(arr) > 0
            if not np.all(low_ok):
                raise ValueError(f"{name}: expected every element {'>= 0' if name == 'noise_scale' else '> 0'}, "
                                 f"got minimum {float(np.min(np.asarray(arr))):g}")
            return arr
        return scalar_converter(value)

    return convert


def _inverse_mass_matrix(value):
    """``None`` (identity), a positive vector (diagonal) or a symmetric positive definite
    matrix, over the flattened example. The length is checked against the chains in
    ``init``."""
    if value is None or isinstance(value, jax.core.Tracer):
        return value
    m = check_array(value, "inverse_mass_matrix", ndim=(1, 2), min_size=1, positive=False)
    values = np.asarray(m, dtype=np.float64)
    if m.ndim == 1 and np.any(values <= 0):
        raise ValueError(
            f"inverse_mass_matrix: a diagonal inverse mass matrix needs every entry > 0, got minimum {values.min():g}"
        )
    if m.ndim == 2:
        if m.shape[0] != m.shape[1] or not np.allclose(values, values.T, rtol=1e-5, atol=1e-8):
            raise ValueError(f"inverse_mass_matrix: a dense inverse mass matrix must be square and symmetric, got shape {m.shape}")
        try:
            np.linalg.cholesky(values)
        except np.linalg.LinAlgError as e:
            raise ValueError("inverse_mass_matrix: a dense inverse mass matrix must be positive definite") from e
    return m


def _info(acceptance_rate, is_divergent=False, mh_acceptance=None, swap_acceptance=None) -> SamplerInfo:
    mh = None if mh_acceptance is None else jnp.asarray(mh_acceptance, jnp.float32)
    swap = None if swap_acceptance is None else jnp.asarray(swap_acceptance, jnp.float32)
    return SamplerInfo(jnp.asarray(acceptance_rate, jnp.float32), jnp.asarray(is_divergent, bool), mh, swap)


def _check_mass_matrix(m, x: Array) -> None:
    """An inverse mass matrix has one row per number of the flattened example."""
    size = math.prod(x.shape[1:])
    if m is not None and m.shape[0] != size:
        raise ValueError(
            f"inverse_mass_matrix: has {m.shape[0]} rows but one example has {size} numbers "
            f"(shape {tuple(x.shape[1:])}); give one entry per number of the flattened example"
        )


def _inverse_mass(m, position: Array) -> Array:
    """The inverse mass matrix in the chain's dtype (identity when ``None``)."""
    return jnp.ones(position.size, position.dtype) if m is None else m.astype(position.dtype)


def _in_default_precision(step):
    """Run a BlackJAX step in at least JAX's default float precision and return the state
    in the chain's own dtype: BlackJAX draws its noise in the default dtype (float64
    under x64), which would otherwise promote a float32 chain."""

    def run(key, state, *args):
        default = jnp.result_type(float)
        wide = jax.tree.map(lambda a: a.astype(jnp.promote_types(a.dtype, default)) if eqx.is_inexact_array(a) else a,
                            state)
        new, info = step(key, wide, *args)
        return jax.tree.map(lambda a, b: a.astype(b.dtype), new, state), info

    return run


class LangevinState(NamedTuple):
    """Unadjusted Langevin moves from the position alone: nothing the move uses goes stale
    when the model's parameters change between steps.

    position: the chain's position ``x_t``.
    previous_position: ``x_{t-1}`` (the position itself before the first move).
    previous_log_ratio: ``-log p~(x_{t-1}) / T - log q(x_t | x_{t-1})``, the half of the
        previous move's Metropolis-Hastings log ratio known when it was made (NaN before
        the first move); only the ``mh_acceptance`` diagnostic reads these two.
    """

    position: Array
    previous_position: Array
    previous_log_ratio: Array


class Langevin(AbstractSampler):
    r"""Unadjusted Langevin dynamics (ULA; no Metropolis correction):

    .. math:: x' = x + \tfrac{\epsilon}{2}\nabla_x \log \tilde p(x) + \sigma z,\quad z\sim N(0, I)

    with ``sigma = noise_scale``, default ``sqrt(step_size)``: then the chain targets
    ``p`` itself, up to the O(eps) discretisation bias. A decoupled ``noise_scale`` (the
    IGEBM/JEM habit, e.g. step 10 with noise 0.005) targets the *tempered* density
    ``p^{1/T}`` with ``T = noise_scale^2 / step_size``; the docstring says so because it
    is the most common silent error in EBM code.

    Backed by ``blackjax.sgmcmc.diffusions.overdamped_langevin`` with ``h = eps/2`` and
    ``temperature = T``. The step is a smooth function of position and parameters, so
    gradients may flow through it (the Du et al. 2020 KL term needs that).

    ``step_size`` and ``noise_scale`` may also be arrays of shape ``(num_chains,)``, one
    value per chain, for ``step``/``run`` on that many chains: chains that target
    different densities (e.g. the noise levels of ``DiffusionRecoveryLikelihood``) each
    get their own step.

    **Discretisation bias, ``SamplerInfo.mh_acceptance``.** Every move is accepted
    (``acceptance_rate`` is 1), but the info also carries the probability MALA would have
    accepted the same proposal with: the Metropolis-Hastings ratio of the move
    ``x -> x'`` for the target ``p^{1/T}``, computed and *not* applied,

    .. math:: \alpha = \min\Bigl(1, \frac{\tilde p(x')^{1/T}\, q(x \mid x')}{\tilde p(x)^{1/T}\, q(x' \mid x)}\Bigr),
              \quad q(b \mid a) = N\bigl(b;\ a + \tfrac{\epsilon}{2}\nabla\log\tilde p(a),\ \sigma^2 I\bigr).

    Near 1 the step is small against the scale on which the target's log density
    changes and ULA is close to exact; a low value means the step is large against
    the target's scale and ULA samples a biased, typically too wide, density (Roberts
    & Tweedie 1996). It costs no extra gradient: the ratio of the move ``x_{t-1} -> x_t``
    is completed at step ``t`` from ``log p~(x_t)`` and ``grad log p~(x_t)``, which that
    step computes anyway; so step ``t`` reports the previous move, the first step of a
    chain reports NaN, and the last move of a run is not measured. With
    ``noise_scale=0`` (gradient descent) the reverse move has probability 0, so it is 0.
    The MCMC training strategies report its mean over a run's steps as the metric
    ``mh_acceptance`` (with ``steps >= 2``).
    """

    step_size: Float[Array, ""] | Float[Array, " chains"] = eqx.field(converter=_per_chain(_step_size, "step_size"))
    noise_scale: Float[Array, ""] | Float[Array, " chains"] | None = eqx.field(
        converter=_per_chain(_optional_noise_scale, "noise_scale"), default=None)

    @property
    def temperature(self):
        """The temperature of the density this chain targets, ``noise_scale^2 / step_size``."""
        if self.noise_scale is None:
            return 1.0
        return self.noise_scale**2 / self.step_size

    @property
    def is_differentiable(self) -> bool:
        return True

    def _check_chains(self, num_chains: int) -> None:
        """Per-chain ``step_size``/``noise_scale`` must have one value per chain (checked
        on static shapes, so also while tracing)."""
        for name in ("step_size", "noise_scale"):
            value = getattr(self, name)
            if value is not None and jnp.ndim(value) == 1 and jnp.shape(value)[0] != num_chains:
                raise ValueError(
                    f"{name}: {jnp.shape(value)[0]} per-chain values (one per chain) for {num_chains} chains; give "
                    f"{num_chains} values, one number for every chain, or run {jnp.shape(value)[0]} chains"
                )

    def init(self, model, x: Array, **kwargs) -> LangevinState:
        self._check_chains(x.shape[0])
        return super().init(model, x, **kwargs)

    def init_chain(self, logdensity_fn: Callable, x: Array) -> LangevinState:
        return LangevinState(x, x, jnp.full((), jnp.nan, x.dtype))

    def step_chain(self, key: PRNGKeyArray, state: LangevinState, logdensity_fn: Callable):
        log_p, grad = jax.value_and_grad(logdensity_fn)(state.position)
        state, mh = self._transition(key, state, log_p, grad, batched=False)
        return state, _info(1.0, False, mh)

    def _per_chain(self, v, x: Array, batched: bool) -> Array:
        """A hyperparameter broadcast over ``x``: per-chain values (shape ``(num_chains,)``)
        over the event axes of a batch of chains."""
        v = jnp.asarray(v, x.dtype)
        return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)) if (v.ndim and batched) else v

    def _move(self, key: PRNGKeyArray, x: Array, grad: Array, batched: bool = True) -> Array:
        """The Euler-Maruyama move, BlackJAX's ``x + h grad + sqrt(2 T h) z`` with h = eps/2.
        Per-chain step sizes (arrays of shape ``(num_chains,)``) broadcast over the event axes.
        Cast back: BlackJAX draws the noise in JAX's default float dtype (float64 under x64)."""
        h, t = self._per_chain(0.5 * self.step_size, x, batched), self._per_chain(self.temperature, x, batched)
        move = overdamped_langevin()(key, x, grad, h, t)
        return move.astype(x.dtype)

    def _transition(self, key, state: LangevinState, log_p, grad, *, batched: bool):
        """The move from ``state.position`` given ``log p~`` and its gradient there, and the
        Metropolis-Hastings acceptance the previous move would have had (see the class
        docstring). ``batched``: leading axis of chains."""
        x = state.position
        axes = tuple(range(1 if batched else 0, x.ndim))
        h = self._per_chain(0.5 * self.step_size, x, batched)
        sigma2 = self.step_size if self.noise_scale is None else self.noise_scale**2
        sigma2 = jnp.asarray(sigma2, jnp.float32)
        safe_sigma2 = jnp.where(sigma2 > 0, sigma2, 1.0)
        beta = jnp.where(sigma2 > 0, jnp.asarray(self.step_size, jnp.float32) / safe_sigma2, 0.0)  # 1 / temperature

        def log_q(to, frm, grad_frm):  # log N(to; frm + h grad, sigma^2 I) up to its constant
            d = jax.lax.stop_gradient(to - frm - h * grad_frm).astype(jnp.float32)
            return -jnp.sum(d**2, axis=axes) / (2 * safe_sigma2)

        lp = jax.lax.stop_gradient(log_p).astype(jnp.float32)
        g = jax.lax.stop_gradient(grad)
        log_ratio = beta * lp + log_q(state.previous_position, x, g) + state.previous_log_ratio.astype(jnp.float32)
        mh = jnp.where(sigma2 > 0, jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0)
        new = self._move(key, x, grad, batched)
        pending = -beta * lp - log_q(new, x, g)
        return LangevinState(new, x, pending.astype(state.previous_log_ratio.dtype)), mh

    def step(self, model, state: LangevinState, key: PRNGKeyArray, **kwargs):
        # All chains in one move: the noise is drawn for the whole batch from one key
        # instead of splitting a key per chain (the Euler step is the same as step_chain's).
        x = state.position
        self._check_chains(x.shape[0])
        mapped, fixed = split_mapped(kwargs, x.shape[:1])
        log_p, grad = jax.vmap(
            lambda xi, kw: jax.value_and_grad(lambda y: model.log_prob_unnorm(y, **kw, **fixed))(xi))(x, mapped)
        state, mh = self._transition(key, state, log_p, grad, batched=True)
        n = x.shape[0]
        return state, _info(jnp.ones(n), jnp.zeros(n, bool), mh)


class MALA(AbstractSampler):
    r"""Metropolis-adjusted Langevin (Roberts & Tweedie 1996): the Langevin proposal
    ``x' = x + (eps/2) grad log p~(x) + sqrt(eps) z`` accepted with the Metropolis-Hastings
    probability, so the chain targets ``p`` exactly. ``blackjax.mala`` with ``h = eps/2``.

    ``SamplerInfo``: ``acceptance_rate`` and ``mh_acceptance`` are both BlackJAX's
    ``min(1, p~(x') q(x | x') / (p~(x) q(x' | x)))`` of this step's proposal (the
    probability it was accepted with, not the 0/1 outcome).

    The state caches ``log p~`` and its gradient at the position; persistent chains are
    re-initialised after each parameter update (``fit`` strategies do it), since the cache
    goes stale.
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    # Optimal acceptance of MALA in high dimension (Roberts & Rosenthal 1998).
    target_acceptance: ClassVar[float] = 0.574

    def init_chain(self, logdensity_fn: Callable, x: Array):
        return blackjax.mala.init(x, logdensity_fn)

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        # BlackJAX draws MALA's proposal noise in JAX's default float dtype (float64 under
        # x64), so run the step in at least that precision and return the chain in its own
        # dtype (a no-op unless x64 is on and the chain is float32).
        default = jnp.result_type(float)
        wide = jax.tree.map(lambda a: a.astype(jnp.promote_types(a.dtype, default)), state)
        new, info = blackjax.mala.build_kernel()(key, wide, logdensity_fn, 0.5 * self.step_size)
        # The Metropolis-Hastings acceptance probability is the one applied: it fills both fields.
        acceptance = info.acceptance_rate
        return jax.tree.map(lambda a, b: a.astype(b.dtype), new, state), _info(acceptance, False, acceptance)


class _AbstractPreconditioned(AbstractSampler):
    """A sampler with an ``inverse_mass_matrix`` field (declared by the subclass) over the
    flattened example: ``init`` checks its size against the chains."""

    def init(self, model, x: Array, **kwargs):
        _check_mass_matrix(self.inverse_mass_matrix, x)
        return super().init(model, x, **kwargs)


class _AbstractHamiltonian(_AbstractPreconditioned):
    """HMC and NUTS share BlackJAX's kernel signature:
    ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix, trajectory)``."""

    # Subclasses declare ``step_size`` and ``inverse_mass_matrix`` themselves (not as
    # AbstractVars here, which would put them first in the positional order).

    @abc.abstractmethod
    def _algorithm(self):
        """The BlackJAX module (``blackjax.hmc`` or ``blackjax.nuts``)."""

    @abc.abstractmethod
    def _trajectory(self) -> int:
        """The kernel's last argument: integration steps (HMC) or max doublings (NUTS)."""

    def init_chain(self, logdensity_fn: Callable, x: Array):
        return self._algorithm().init(x, logdensity_fn)

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        inverse_mass = _inverse_mass(self.inverse_mass_matrix, state.position)
        kernel = self._algorithm().build_kernel()
        state, info = kernel(key, state, logdensity_fn, self.step_size, inverse_mass, self._trajectory())
        return state, _info(info.acceptance_rate, info.is_divergent, info.acceptance_rate)


class HMC(_AbstractHamiltonian):
    r"""Hamiltonian Monte Carlo (Neal 2011) with a leapfrog integrator:
    ``num_integration_steps`` steps of size ``step_size`` per proposal, momentum
    ``N(0, M)``, Metropolis correction. ``inverse_mass_matrix`` is diagonal (a vector) or
    dense over the flattened example; default identity. ``blackjax.hmc``.

    ``SamplerInfo``: ``acceptance_rate`` and ``mh_acceptance`` are both the Metropolis
    acceptance probability ``min(1, exp(-Delta H))`` of this step's trajectory (BlackJAX's
    ``acceptance_rate``); ``is_divergent`` flags an energy error ``Delta H`` above 1000.
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    num_integration_steps: int = 10
    inverse_mass_matrix: Float[Array, "..."] | None = eqx.field(converter=_inverse_mass_matrix, default=None)
    # Optimal acceptance of HMC in high dimension (Beskos et al. 2013); 0.65-0.8 is usual.
    target_acceptance: ClassVar[float] = 0.651

    def __check_init__(self):
        check_positive(self.num_integration_steps, "num_integration_steps", integer=True)

    def _algorithm(self):
        return blackjax.hmc

    def _trajectory(self) -> int:
        return self.num_integration_steps


class NUTS(_AbstractHamiltonian):
    r"""The No-U-Turn sampler (Hoffman & Gelman 2014), ``blackjax.nuts``: HMC with an
    adaptive trajectory length (at most ``2^max_num_doublings`` leapfrog steps). For
    evaluation and long chains, not for inner training loops: vmapped chains all wait
    for the longest trajectory.

    ``SamplerInfo``: ``acceptance_rate`` and ``mh_acceptance`` are both BlackJAX's
    acceptance statistic, the mean Metropolis acceptance ``min(1, exp(-Delta H))`` over the
    states of the trajectory (Hoffman & Gelman 2014, the quantity dual averaging tunes);
    ``is_divergent`` flags an energy error above 1000.
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    inverse_mass_matrix: Float[Array, "..."] | None = eqx.field(converter=_inverse_mass_matrix, default=None)
    max_num_doublings: int = 10
    # The usual dual-averaging target of NUTS (Hoffman & Gelman 2014; Stan's default).
    target_acceptance: ClassVar[float] = 0.8

    def __check_init__(self):
        check_positive(self.max_num_doublings, "max_num_doublings", integer=True)

    def _algorithm(self):
        return blackjax.nuts

    def _trajectory(self) -> int:
        return self.max_num_doublings


class Barker(_AbstractPreconditioned):
    r"""The Barker proposal (Livingstone & Zanella 2022, "The Barker proposal: combining
    robustness and efficiency in gradient-based MCMC", JRSS B), ``blackjax.barker``:
    per coordinate ``i``, with ``z_i ~ N(0, sigma^2)`` (``sigma = step_size``, a length
    like HMC's, not MALA's variance),

    .. math:: x'_i = x_i + b_i z_i,\qquad
              P(b_i = 1) = 1 - P(b_i = -1) = \frac{1}{1 + e^{-z_i \partial_i \log\tilde p(x)}},

    a random-walk increment whose sign leans toward the gradient, accepted with the
    Metropolis-Hastings probability. The gradient only sets the probability of a sign, so
    a step that is far too large for the target's curvature degrades gracefully where
    MALA's drift overshoots (the paper's robustness result). ``inverse_mass_matrix``
    (diagonal vector or dense, over the flattened example) preconditions the increments.

    ``SamplerInfo``: ``acceptance_rate`` and ``mh_acceptance`` are both the applied
    Metropolis-Hastings probability. ``target_acceptance`` is MALA's 0.574: Barker has
    MALA's ``d^{-1/3}`` scaling with dimension (Livingstone & Zanella 2022, sec. 4); it is
    a default for ``adapt_step_size``, change it with the strategy's ``target_acceptance``.
    The state caches ``log p~`` and its gradient (re-initialise after a parameter update).
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    inverse_mass_matrix: Float[Array, "..."] | None = eqx.field(converter=_inverse_mass_matrix, default=None)
    target_acceptance: ClassVar[float] = 0.574

    def init_chain(self, logdensity_fn: Callable, x: Array):
        return blackjax.barker.init(x, logdensity_fn)

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        inverse_mass = _inverse_mass(self.inverse_mass_matrix, state.position)
        step = _in_default_precision(blackjax.barker.build_kernel())
        new, info = step(key, state, logdensity_fn, self.step_size, inverse_mass)
        return new, _info(info.acceptance_rate, False, info.acceptance_rate)


_alpha = hyperparameter("alpha", low=0.0, high=1.0, low_open=True)
_delta = hyperparameter("delta", low=0.0, high=2.0, high_open=True)


class GHMC(_AbstractPreconditioned):
    r"""Generalised HMC with persistent momentum and a non-reversible slice acceptance
    (Horowitz 1991, "A generalized guided Monte Carlo algorithm"; Neal 2020, "Non-reversibly
    updating a uniform [0,1] value for Metropolis accept/reject decisions"),
    ``blackjax.ghmc``. One transition:

    .. math:: p \leftarrow \sqrt{1-\alpha}\,p + \sqrt{\alpha}\,\xi,\ \xi\sim N(0, M);\qquad
              (x', p') = \mathrm{leapfrog}_\epsilon(x, p);\qquad
              u \leftarrow ((u + 1 + \delta) \bmod 2) - 1,

    accept ``(x', -p')`` if ``log|u| <= -Delta H`` (then ``u <- u e^{Delta H}``), else keep
    ``x`` and flip the momentum, ``p <- -p`` (the flip makes the
    kernel exact and the momentum persistent: a small ``alpha`` keeps the direction over
    many one-step transitions, so the chain moves like long-trajectory HMC). ``alpha = 1``
    refreshes the momentum fully (MALA-like HMC with one leapfrog step). ``step_size`` is
    the leapfrog step (a length), ``inverse_mass_matrix`` diagonal or dense as for ``HMC``.

    The state is BlackJAX's ``GHMCState`` (position, momentum, cached ``log p~`` and its
    gradient, slice variable ``u``). ``init`` takes no key, so it sets the momentum to 0
    and ``u`` to NaN, and the chain's first step draws both (a full refresh ``alpha = 1``
    and ``u ~ U(-1, 1)``), from the step's key; the momentum persists only across steps
    of one run (the MCMC strategies re-initialise chains after every parameter update).

    ``SamplerInfo``: ``acceptance_rate`` and ``mh_acceptance`` are both
    ``min(1, exp(-Delta H))`` of the step's leapfrog move; ``is_divergent`` flags
    ``Delta H > 1000``. ``target_acceptance`` 0.9: every rejection reverses the persistent
    momentum, so GHMC is run at a higher acceptance than HMC (a convention, not an optimum
    derived for GHMC).
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    alpha: Float[Array, ""] = eqx.field(converter=_alpha, default=0.1)
    delta: Float[Array, ""] = eqx.field(converter=_delta, default=0.1)
    inverse_mass_matrix: Float[Array, "..."] | None = eqx.field(converter=_inverse_mass_matrix, default=None)
    target_acceptance: ClassVar[float] = 0.9

    def init_chain(self, logdensity_fn: Callable, x: Array):
        logdensity, grad = jax.value_and_grad(logdensity_fn)(x)
        return GHMCState(x, jnp.zeros_like(x), logdensity, grad, jnp.full((), jnp.nan, x.dtype))

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        m = self.inverse_mass_matrix
        if m is None:
            scale = jnp.ones(state.position.size, state.position.dtype)
        else:  # BlackJAX squares a vector (a momentum scale) and takes a matrix as the inverse mass
            scale = jnp.sqrt(m) if m.ndim == 1 else m
            scale = scale.astype(state.position.dtype)
        k_slice, k_step = jax.random.split(key)
        first = jnp.isnan(state.slice)
        start = jax.random.uniform(k_slice, (), state.position.dtype, -1.0, 1.0)
        state = state._replace(slice=jnp.where(first, start, state.slice))
        alpha = jnp.where(first, 1.0, self.alpha)
        kernel = blackjax.ghmc.build_kernel()
        step = _in_default_precision(lambda k, s, a: kernel(k, s, logdensity_fn, self.step_size, scale, a, self.delta))
        new, info = step(k_step, state, alpha)
        return new, _info(info.acceptance_rate, info.is_divergent, info.acceptance_rate)
