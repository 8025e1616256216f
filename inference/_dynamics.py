"""Samplers that simulate a momentum dynamics without a Metropolis correction:
underdamped (kinetic) Langevin and microcanonical Langevin (MCLMC), both on BlackJAX's
integrators.

Their states are BlackJAX's ``IntegratorState`` (position, momentum, cached ``log p~``
and its gradient). ``init`` takes no key, so it sets the momentum to 0, and a chain's
first step draws it (the momentum of a real chain is never exactly 0).
"""

from __future__ import annotations

from typing import Callable

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
from blackjax.mcmc import integrators, metrics
from blackjax.util import generate_unit_vector
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractSampler
from declebm._checks import check_flag, check_positive, hyperparameter
from declebm._ebm import split_mapped

from ._samplers import (
    _AbstractPreconditioned,
    _check_mass_matrix,
    _in_default_precision,
    _info,
    _inverse_mass,
    _inverse_mass_matrix,
    _step_size,
)

_friction = hyperparameter("friction", low=0.0, low_open=True)
_length = hyperparameter("L", low=0.0, low_open=True)


def _is_fresh(momentum: Array) -> Array:
    """Whether the chain has not moved yet: ``init`` leaves the momentum exactly 0."""
    return jnp.all(momentum == 0)


class UnderdampedLangevin(_AbstractPreconditioned):
    r"""Underdamped (kinetic) Langevin dynamics, unadjusted, with the OBABO splitting
    (Bussi & Parrinello 2007, "Accurate sampling using Langevin dynamics"; the kinetic
    Langevin of Cheng et al. 2018, "Underdamped Langevin MCMC: a non-asymptotic analysis"):
    the SDE ``dx = M^{-1} p dt``, ``dp = grad log p~(x) dt - gamma p dt + sqrt(2 gamma) M^{1/2} dW``
    integrated over ``h = step_size`` as

    .. math:: p \leftarrow c\,p + \sqrt{1-c^2}\,\xi,\quad
              (x, p) \leftarrow \mathrm{leapfrog}_h(x, p),\quad
              p \leftarrow c\,p + \sqrt{1-c^2}\,\xi',\qquad
              c = e^{-\gamma h/2},\ \xi, \xi' \sim N(0, M),

    the leapfrog being BlackJAX's ``integrators.velocity_verlet``. No Metropolis step: the
    chain targets ``p`` up to an ``O(h^2)`` discretisation bias, and its momentum carries
    it in one direction for about ``1 / gamma`` time units (``friction = gamma``; large
    friction approaches overdamped Langevin, small friction Hamiltonian motion).
    ``inverse_mass_matrix`` is diagonal (a vector) or dense over the flattened example.
    A step is a smooth function of position and parameters (``is_differentiable``).

    ``SamplerInfo``: ``acceptance_rate`` is 1 (every move is kept); ``mh_acceptance`` is
    ``min(1, exp(-Delta H))`` of the step's leapfrog move, the probability GHMC would have
    accepted it with, computed and not applied: near 1 the discretisation bias is small;
    ``is_divergent`` flags ``Delta H > 1000``.
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    friction: Float[Array, ""] = eqx.field(converter=_friction, default=1.0)
    inverse_mass_matrix: Float[Array, "..."] | None = eqx.field(converter=_inverse_mass_matrix, default=None)

    @property
    def is_differentiable(self) -> bool:
        return True

    def init_chain(self, logdensity_fn: Callable, x: Array) -> integrators.IntegratorState:
        logdensity, grad = jax.value_and_grad(logdensity_fn)(x)
        return integrators.IntegratorState(x, jnp.zeros_like(x), logdensity, grad)

    def _step(self, key: PRNGKeyArray, state: integrators.IntegratorState, logdensity_fn: Callable):
        metric = metrics.default_metric(_inverse_mass(self.inverse_mass_matrix, state.position))
        k1, k2 = jax.random.split(key)
        c = jnp.exp(-0.5 * self.friction * self.step_size)
        c = jnp.where(_is_fresh(state.momentum), 0.0, c)  # the first step draws the momentum

        def refresh(k, p, c):
            xi = metric.sample_momentum(k, state.position)
            return c * p + jnp.sqrt(1.0 - c**2) * xi

        state = state._replace(momentum=refresh(k1, state.momentum, c))
        h0 = -state.logdensity + metric.kinetic_energy(state.momentum)
        moved = integrators.velocity_verlet(logdensity_fn, metric.kinetic_energy)(state, self.step_size)
        delta_h = -moved.logdensity + metric.kinetic_energy(moved.momentum) - h0
        delta_h = jnp.where(jnp.isnan(delta_h), jnp.inf, delta_h)
        moved = moved._replace(momentum=refresh(k2, moved.momentum, jnp.exp(-0.5 * self.friction * self.step_size)))
        return moved, delta_h

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        new, delta_h = _in_default_precision(lambda k, s: self._step(k, s, logdensity_fn))(key, state)
        mh = jnp.exp(jnp.minimum(-delta_h, 0.0))
        return new, _info(1.0, delta_h > 1000, mh)


class MCLMC(AbstractSampler):
    r"""Microcanonical Langevin Monte Carlo (Robnik, De Luca, Silverstein & Seljak 2023,
    "Microcanonical Hamiltonian Monte Carlo", JMLR; Robnik & Seljak 2024, "Fluctuation
    without dissipation: microcanonical Langevin Monte Carlo"), ``blackjax.mclmc``: the
    isokinetic dynamics of a unit-speed velocity ``u``,

    .. math:: \dot x = M^{1/2} u,\qquad
              \dot u = (I - u u^\top)\,\frac{M^{1/2}\nabla\log\tilde p(x)}{d - 1},

    integrated by BlackJAX's ``isokinetic_mclachlan`` with step ``step_size`` and, after
    every step, a partial refresh of the direction ``u <- (u + nu z) / |u + nu z|``,
    ``nu = sqrt((exp(2 eps / L) - 1) / d)``, ``z ~ N(0, I)``: ``L`` is the distance over
    which the direction decorrelates. Unadjusted: no Metropolis step, the bias is
    controlled by the step size through the energy error. ``inverse_mass_matrix`` is a
    diagonal preconditioner (a vector, ``M^{1/2}`` is its square root, as BlackJAX's).

    **Tuning.** ``MCLMC()`` without ``L`` and ``step_size`` is tuned before it samples:
    ``sample`` (and ``tuned``) run BlackJAX's ``mclmc_find_L_and_step_size`` on the first
    chain (its keyword inputs included) with ``num_steps = tuning_steps``: the step size
    from the energy-error variance per dimension (``desired_energy_var``, 5e-4), ``L`` from
    the chain's effective sample size, and with ``diagonal_preconditioning`` the
    preconditioner from its variances. The tuning costs about ``0.37 tuning_steps``
    gradients on one chain, and the tuned values are used by every chain.
    Needs examples of at least 2 numbers (a velocity of unit norm in 1-D cannot turn).

    ``SamplerInfo``: ``acceptance_rate`` 1, ``mh_acceptance`` ``None`` (the isokinetic
    dynamics has no Metropolis ratio), ``is_divergent`` where BlackJAX's step produced NaN
    (it then keeps the position and redraws the velocity).
    """

    L: Float[Array, ""] | None = eqx.field(converter=lambda v: None if v is None else _length(v), default=None)
    step_size: Float[Array, ""] | None = eqx.field(converter=lambda v: None if v is None else _step_size(v),
                                                   default=None)
    inverse_mass_matrix: Float[Array, " n"] | None = eqx.field(converter=_inverse_mass_matrix, default=None)
    tuning_steps: int = 2000
    diagonal_preconditioning: bool = True
    desired_energy_var: float = 5e-4

    def __check_init__(self):
        if (self.L is None) != (self.step_size is None):
            raise ValueError("L: give both L and step_size, or neither (then sample() tunes them); got only "
                             f"{'step_size' if self.L is None else 'L'}")
        check_positive(self.tuning_steps, "tuning_steps", integer=True)
        check_flag(self.diagonal_preconditioning, "diagonal_preconditioning")
        if self.inverse_mass_matrix is not None and getattr(self.inverse_mass_matrix, "ndim", 1) != 1:
            raise ValueError("inverse_mass_matrix: MCLMC takes a diagonal preconditioner (a vector), got a matrix")
        check_positive(self.desired_energy_var, "desired_energy_var")

    @property
    def needs_tuning(self) -> bool:
        return self.L is None

    def _check_ready(self, x: Array) -> None:
        if self.L is None:
            raise ValueError(
                "L: this MCLMC has no L and step_size yet; sample() tunes them, or call "
                "sampler.tuned(model, x, key) (BlackJAX's mclmc_find_L_and_step_size), or give both"
            )
        if x[0].size < 2:
            raise ValueError(f"x: MCLMC needs examples of at least 2 numbers, got shape {tuple(x.shape[1:])}")
        _check_mass_matrix(self.inverse_mass_matrix, x)

    def init(self, model, x: Array, **kwargs):
        self._check_ready(x)
        return super().init(model, x, **kwargs)

    def init_chain(self, logdensity_fn: Callable, x: Array) -> integrators.IntegratorState:
        logdensity, grad = jax.value_and_grad(logdensity_fn)(x)
        return integrators.IntegratorState(x, jnp.zeros_like(x), logdensity, grad)

    def _kernel(self):
        return blackjax.mclmc.build_kernel(desired_energy_var=self.desired_energy_var)

    def step_chain(self, key: PRNGKeyArray, state, logdensity_fn: Callable):
        k_dir, k_step = jax.random.split(key)
        fresh = generate_unit_vector(k_dir, state.position).astype(state.position.dtype)
        state = state._replace(momentum=jnp.where(_is_fresh(state.momentum), fresh, state.momentum))
        m = 1.0 if self.inverse_mass_matrix is None else self.inverse_mass_matrix

        def step(k, s):
            return self._kernel()(k, s, logdensity_fn, m, self.L, self.step_size)

        new, info = _in_default_precision(step)(k_step, state)
        return new, _info(1.0, ~info.nonans)

    def tuned(self, model, x: Float[Array, "chains *event"], key: PRNGKeyArray, **kwargs) -> "MCLMC":
        """This sampler with ``L``, ``step_size`` (and with ``diagonal_preconditioning`` the
        ``inverse_mass_matrix``) from BlackJAX's ``mclmc_find_L_and_step_size`` run on the
        first chain of ``x`` (see the class docstring). Pure; jit it with the caller."""
        if x[0].size < 2:
            raise ValueError(f"x: MCLMC needs examples of at least 2 numbers, got shape {tuple(x.shape[1:])}")
        mapped, fixed = split_mapped(kwargs, x.shape[:1])
        first = jax.tree.map(lambda a: a[0], mapped)

        def logdensity_fn(y):
            return model.log_prob_unnorm(y, **first, **fixed)

        k_dir, k_tune = jax.random.split(key)
        state = self.init_chain(logdensity_fn, x[0])
        state = state._replace(momentum=generate_unit_vector(k_dir, x[0]).astype(x.dtype))
        _, params, _ = blackjax.mclmc_find_L_and_step_size(
            self._kernel(), self.tuning_steps, state, k_tune, logdensity_fn=logdensity_fn,
            desired_energy_var=self.desired_energy_var, diagonal_preconditioning=self.diagonal_preconditioning,
        )
        m = params.inverse_mass_matrix if self.diagonal_preconditioning else self.inverse_mass_matrix
        return MCLMC(params.L, params.step_size, m, self.tuning_steps, self.diagonal_preconditioning,
                     self.desired_energy_var)
