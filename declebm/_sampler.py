"""The sampler contract: MCMC over many chains with the model as a call-time argument."""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from ._checks import check_positive, tree_hash
from ._ebm import split_mapped
from ._repr import hyperparameter_repr


class SamplerInfo(NamedTuple):
    """What one transition reports, per chain (or averaged over chains by ``run``).

    acceptance_rate: the probability with which the step's move was accepted: the
        Metropolis-Hastings probability ``min(1, ratio)`` for ``MALA`` and ``HMC``,
        BlackJAX's acceptance statistic (the mean of ``min(1, exp(-Delta H))`` over the
        trajectory's states) for ``NUTS``, and exactly 1 for the unadjusted ``Langevin``,
        which accepts every move. The quantity step-size adaptation and ``diagnose`` use.
    is_divergent: whether the transition diverged (HMC/NUTS energy error above 1000).
    mh_acceptance: the Metropolis-Hastings acceptance probability of the sampler's
        moves, for every shipped sampler. For ``MALA``, ``HMC`` and ``NUTS`` it is
        ``acceptance_rate`` (the probability applied). For ``Langevin`` it is the
        probability MALA *would* have accepted the previous move with, computed and not
        applied: a measure of the discretisation bias (NaN where there is no previous
        move, at the first step of a chain). ``None`` for a sampler that does not report it
        (``MCLMC``, ``SVGD``, ``AnnealedLangevin``).
    swap_acceptance: ``ParallelTempering`` only: the replica-exchange acceptance
        probability ``min(1, exp((b_k - b_{k+1}) (log p~(x_{k+1}) - log p~(x_k))))`` of
        every adjacent pair of the temperature ladder, shape ``(..., K - 1)`` (computed
        for every pair, applied to the pairs the step attempts); ``None`` otherwise.
    """

    acceptance_rate: Float[Array, "..."]
    is_divergent: Bool[Array, "..."]
    mh_acceptance: Float[Array, "..."] | None = None
    swap_acceptance: Float[Array, "... pairs"] | None = None


class AbstractSampler(eqx.Module):
    r"""An MCMC sampler run on many independent chains of ``log p~``.

    Contract (BlackJAX style, pure functions, nothing jitted inside):

    - ``init(model, x, **kwargs) -> state`` for chain positions ``x`` of shape
      ``(num_chains, *event_shape)``;
    - ``step(model, state, key, **kwargs) -> (state, SamplerInfo)`` advances every chain;
    - ``run(model, x, num_steps, key, **kwargs) -> (x, SamplerInfo)`` runs a ``lax.scan``
      of ``num_steps`` steps (``scan_steps``) and returns the final positions and the
      per-step info averaged over chains.

    ``model`` is anything with ``log_prob_unnorm(x, **kwargs)`` for one example (an
    ``EBM`` or a conditional target built from one); it is an argument, not a field, so
    one compiled sampler serves a model whose parameters change every training step.
    Keyword arrays whose leading axis has length ``num_chains`` condition each chain
    separately (e.g. a noise level per chain); others are shared by all chains.

    Subclasses implement the single-chain kernel ``init_chain`` / ``step_chain``;
    chains are ``jax.vmap``-ped here.

    ``target_acceptance`` is the acceptance rate a well-tuned step size gives (``None``
    for samplers without a Metropolis step); ``evaluate.diagnose`` warns far from it.
    """

    target_acceptance: ClassVar[float | None] = None
    # Whether ``init_chain``/``step_chain`` are a Markov kernel of one chain that other
    # algorithms may call directly (SMC's moves, ParallelTempering's replicas). False for
    # samplers whose step is not per chain (SVGD moves the particles as one set) or
    # depends on the step count (AnnealedLangevin) or on a whole ladder (ParallelTempering).
    is_chain_kernel: ClassVar[bool] = True

    def __repr__(self) -> str:
        # The numbers of the hyperparameters, not Equinox's ``weak_f32[]`` (see ``_repr``).
        return hyperparameter_repr(self)

    def __hash__(self) -> int:
        # Numeric hyperparameters are 0-d arrays (traced, see ``declebm._checks.hyperparameter``).
        return tree_hash(self)

    @abc.abstractmethod
    def init_chain(self, logdensity_fn: Callable[[Array], Array], x: Array) -> PyTree:
        """State of one chain at position ``x``. The state has a ``position`` field."""

    @abc.abstractmethod
    def step_chain(
        self, key: PRNGKeyArray, state: PyTree, logdensity_fn: Callable[[Array], Array]
    ) -> tuple[PyTree, SamplerInfo]:
        """One transition of one chain."""

    @property
    def is_differentiable(self) -> bool:
        """Whether a step is a smooth function of the position and the parameters
        (no Metropolis accept/reject), so gradients may flow through the chain."""
        return False

    @property
    def needs_tuning(self) -> bool:
        """Whether ``tuned`` must run before sampling (``sample`` calls it): ``MCLMC``
        without ``L`` and ``step_size``."""
        return False

    def tuned(self, model: Any, x: Float[Array, "chains *event"], key: PRNGKeyArray, **kwargs) -> "AbstractSampler":
        """This sampler with its hyperparameters tuned on ``model`` from the chains ``x``;
        unchanged by default (see ``MCLMC.tuned``)."""
        return self

    def init(self, model: Any, x: Float[Array, "chains *event"], **kwargs) -> PyTree:
        mapped, fixed = split_mapped(kwargs, x.shape[:1])

        def one(xi, kw):
            return self.init_chain(lambda y: model.log_prob_unnorm(y, **kw, **fixed), xi)

        return jax.vmap(one)(x, mapped)

    def step(self, model: Any, state: PyTree, key: PRNGKeyArray, **kwargs) -> tuple[PyTree, SamplerInfo]:
        num_chains = state.position.shape[0]
        mapped, fixed = split_mapped(kwargs, (num_chains,))
        keys = jax.random.split(key, num_chains)

        def one(k, s, kw):
            return self.step_chain(k, s, lambda y: model.log_prob_unnorm(y, **kw, **fixed))

        return jax.vmap(one)(keys, state, mapped)

    def scan_steps(
        self, model: Any, state: PyTree, keys: PRNGKeyArray, **kwargs
    ) -> tuple[PyTree, SamplerInfo]:
        """``len(keys)`` steps from ``state`` in a ``lax.scan``, step ``i`` with ``keys[i]``.
        Returns the final state and the per-step info averaged over chains. The state
        keeps the dtypes it starts with."""

        def body(state, k):
            new, info = self.step(model, state, k, **kwargs)
            # The chains keep their dtypes: a kernel that promotes (float32 chains on a
            # float64 model, or noise drawn in JAX's default dtype) must not change the
            # type of the scan's carry.
            state = jax.tree.map(lambda a, b: a.astype(b.dtype) if eqx.is_array(b) else a, new, state)
            # Every reported field averaged over the chains (axis 0); None stays None.
            return state, jax.tree.map(lambda v: jnp.mean(v.astype(jnp.float32), axis=0), info)

        return jax.lax.scan(body, state, keys)

    def run(
        self, model: Any, x: Float[Array, "chains *event"], num_steps: int, key: PRNGKeyArray, **kwargs
    ) -> tuple[Float[Array, "chains *event"], SamplerInfo]:
        check_positive(num_steps, "num_steps", integer=True)
        state = self.init(model, x, **kwargs)
        state, info = self.scan_steps(model, state, jax.random.split(key, num_steps), **kwargs)
        return state.position, info
