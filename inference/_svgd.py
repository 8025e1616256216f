"""Stein variational gradient descent: the particles as one interacting set."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from blackjax.vi import svgd
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractSampler
from declebm._ebm import split_mapped

from ._samplers import _info, _step_size


class SVGDState(NamedTuple):
    """position: the particles, ``(num_particles, *event)``; length_scale: the RBF kernel's
    bandwidth ``h`` of the last step (median heuristic), a 0-d array."""

    position: Array
    length_scale: Array


class SVGD(AbstractSampler):
    r"""Stein variational gradient descent (Liu & Wang 2016, "Stein variational gradient
    descent: a general purpose Bayesian inference algorithm"), ``blackjax.vi.svgd``: every
    particle moves along the kernelised Stein direction computed from *all* particles,

    .. math:: x_i \leftarrow x_i + \epsilon\,\phi(x_i),\qquad
              \phi(x) = \frac{1}{n}\sum_{j=1}^n \bigl[k(x_j, x)\,\nabla\log\tilde p(x_j)
              + \nabla_{x_j} k(x_j, x)\bigr],

    with the RBF kernel ``k(x, y) = exp(-|x - y|^2 / h)`` and ``h = med^2 / log n`` (the
    median of the pairwise distances, BlackJAX's ``update_median_heuristic``, recomputed
    every step), ``epsilon = step_size`` (plain gradient steps, ``optax.sgd``). The first
    term moves the particles up the log density, the second repels them from each other;
    at a fixed point the particles are a deterministic quadrature of ``p``, not draws.

    Where the sampler contract differs (``AbstractSampler``):

    - the ``num_chains`` positions are *one* set of ``n`` interacting particles, not
      independent chains: ``step`` costs ``O(n^2)`` kernel evaluations (and memory), and
      the set's moments converge as the set does (not with a ``1/sqrt(n)`` Monte Carlo
      error of independent draws);
    - the update is deterministic: the ``key`` is not used;
    - keyword inputs are shared by all particles (one target); arrays with one value per
      particle are refused;
    - ``init_chain``/``step_chain`` are not available (``is_chain_kernel`` is False), so
      SVGD is not a move for ``SMC``/``AIS`` or a replica of ``ParallelTempering``;
    - ``SamplerInfo``: ``acceptance_rate`` 1, ``is_divergent`` False, ``mh_acceptance``
      ``None``; no ``target_acceptance`` and no step-size adaptation.
    """

    step_size: Float[Array, ""] = eqx.field(converter=_step_size)
    is_chain_kernel: ClassVar[bool] = False

    def init_chain(self, logdensity_fn, x):
        raise TypeError("SVGD moves the particles as one set; it has no one-chain kernel (use init/step)")

    def step_chain(self, key, state, logdensity_fn):
        raise TypeError("SVGD moves the particles as one set; it has no one-chain kernel (use init/step)")

    def _fixed(self, kwargs: dict, num_particles: int) -> dict:
        mapped, fixed = split_mapped(kwargs, (num_particles,))
        if mapped:
            raise ValueError(
                f"{sorted(mapped)[0]}: SVGD moves one set of particles toward one target, so keyword inputs are "
                f"shared; got an array with one value per particle ({num_particles})"
            )
        return fixed

    def init(self, model, x: Float[Array, "n *event"], **kwargs) -> SVGDState:
        self._fixed(kwargs, x.shape[0])
        if x.shape[0] < 2:
            raise ValueError(f"x: SVGD needs at least 2 particles, got {x.shape[0]}")
        return SVGDState(x, jnp.ones((), x.dtype))

    def step(self, model, state: SVGDState, key: PRNGKeyArray, **kwargs):
        fixed = self._fixed(kwargs, state.position.shape[0])
        x = state.position
        optimizer = optax.sgd(self.step_size)

        def grad_logdensity(y):
            return jax.grad(lambda z: model.log_prob_unnorm(z, **fixed))(y)

        blackjax_state = svgd.SVGDState(x, {"length_scale": state.length_scale}, optimizer.init(x))
        blackjax_state = svgd.update_median_heuristic(blackjax_state)
        new = svgd.build_kernel(optimizer)(blackjax_state, grad_logdensity, svgd.rbf_kernel)
        n = x.shape[0]
        length_scale = jnp.asarray(new.kernel_parameters["length_scale"], x.dtype)
        return SVGDState(new.particles.astype(x.dtype), length_scale), _info(jnp.ones(n), jnp.zeros(n, bool))
