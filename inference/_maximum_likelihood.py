r"""Maximum likelihood with MCMC negatives: CD-k, persistent CD, short-run, replay buffer.

The exact log-likelihood gradient of ``p = exp(-E_theta) / Z`` is

.. math:: -\nabla_\theta \log p(x) = \nabla_\theta E(x) - E_{x^- \sim p}[\nabla_\theta E(x^-)]

(Song & Kingma 2021, eq. 5). Every strategy here minimises the surrogate

.. math:: L = \mathrm{mean}\,E(x^+) - \mathrm{mean}\,E(\mathrm{sg}(x^-))
          + \alpha\,(\mathrm{mean}\,E(x^+)^2 + \mathrm{mean}\,E(x^-)^2)

with ``x+`` a data batch and ``x-`` the end of ``k`` MCMC steps on the current model
(``sg`` = stop-gradient), so the update is ``E_data[grad E] - E_q[grad E]`` where ``q``
is the distribution of the chains' end points. The strategies differ only in where the
chains start, and that changes what ``q`` is and so what the update estimates (Gagnon &
Lajoie 2022, "Clarifying MCMC-based training of modern EBMs: contrastive divergence
versus maximum likelihood"):

======================  =====================  ==================================  ======================================
strategy                chains start at        objective the update follows        what is dropped
======================  =====================  ==================================  ======================================
ContrastiveDivergence   the data batch         CD-k (Hinton 2002):                 the term through the theta-dependence
                                               KL(p_d||p) - KL(T^k p_d||p)         of T^k p_d (every implementation
                                                                                   drops it); not ML: spurious modes far
                                                                                   from data go unseen for small k
PersistentCD            last update's chains   maximum likelihood, KL(p_d||p)      nothing in the limit (small learning
                                               (stochastic approximation:          rate, mixing chains); in practice the
                                               Younes 1989, Tieleman 2008)         lag of chains behind the parameters
ShortRunML              fresh noise, every     ML with a biased sampler            the difference between the k-step
                        update                 (Nijkamp et al. 2019): NOT CD;      distribution q_theta and p, and the
                                               stationary when E_q[grad E] =       theta-dependence of q_theta
                                               E_data[grad E]
ReplayBufferML          a replay buffer, each  ML with a biased sampler            as ShortRunML, less so as the buffer
                        draw re-initialised    (Du & Mordatch 2019): NOT CD,       ages (reinit_prob -> 0 approaches
                        from noise w.p. 5%     although the IGEBM papers call it   PersistentCD)
                                               so
======================  =====================  ==================================  ======================================

Why the noise-started variants are not CD: CD's objective is a difference of two KLs
that is non-negative *because* the chains start at ``p_d`` and ``T`` leaves ``p``
invariant; started from noise, ``q_theta = T^k q_0`` has no such relation to ``p_d`` and
``KL(p_d||p) - KL(q_theta||p)`` is not a divergence. The update is then the ML gradient
evaluated with samples from the wrong distribution: its fixed points are models whose
*k-step samples* match the data in the statistics ``grad_theta E``, whatever the
density ``p`` itself is. Long chains (``evaluate.long_run``) expose the difference.

**Du et al. (2020) terms** (Improved contrastive divergence training of EBMs,
arXiv 2012.01316), options of every strategy here, off by default:

.. math:: L \mathrel{+}= \lambda_{KL}\,\mathrm{mean}\,\bigl[-\log\tilde p_{\mathrm{sg}(\theta)}(x_k)\bigr]
          \;-\; \lambda_H\,\hat H(x_k)

where ``x_k`` are the chain end points with the gradient flowing through the last
``kl_steps`` sampler steps (those steps use the *live* model, so ``x_k`` depends on
theta through the drift ``(eps/2) grad_x log p~_theta``), the energy that scores them
uses *frozen* parameters, and ``H^`` is the Kozachenko-Leonenko nearest-neighbour
entropy estimate of the end points (``evaluate.nearest_neighbour_entropy``; Du et al.
measure nearest-neighbour distances to replay-buffer samples, we use the other end
points). Together (equal weights) they are the gradient of ``KL(q_theta || p_sg(theta))``
through the sampler: they pull the sampler's distribution toward the model. Note the
sign: CD's dropped term is ``-grad_theta^{(q)} KL(q_theta||p)`` (with a minus sign), so
the KL term is not that missing term but a correction that makes the negatives less
biased; with chains from noise or a buffer the training remains
biased-sampler ML (Gagnon & Lajoie 2022). Differentiating through a Metropolis
accept/reject is not defined, so these terms need an unadjusted sampler (``Langevin``);
``MALA``/``HMC``/``NUTS`` are refused.

The samplers otherwise run on a stop-gradient copy of the model, so no gradient flows
through the chains. Persistent chains are kept as positions only: a sampler's cached
``log p~`` and gradient go stale when the parameters change, so chains are
re-initialised (``sampler.init``) on the updated model at every step.

Hyperparameters: ``energy_reg``, ``kl_weight`` and ``entropy_weight`` are switches and
weights at once: ``0`` leaves the term out of the compiled program; any other value is
stored as a traced 0-d array (as is ``reinit_prob``), so sweeping a weight reuses the
compiled program. ``steps``, ``num_chains``, ``kl_steps`` and ``buffer_size`` fix shapes
and loop lengths and stay Python ints.


Here ``E`` is the model's whole potential ``-log p~ = E - log b``: with a base density
``b`` the same (a fixed base adds nothing to the gradient; a learnable ``GaussianBase``
is trained through it).

**Step size that adapts during training** (``adapt_step_size=True``, for ``MALA``,
``HMC``, ``NUTS``, ``Barker``, ``GHMC``; meant for persistent and replay-buffer chains, allowed for every
start). After every parameter update the step size ``eps`` of the next update's chains
is moved toward the target acceptance rate ``delta`` (``target_acceptance``, default
the sampler's: MALA 0.574, HMC 0.651) by BlackJAX's dual averaging
(``blackjax.adaptation.step_size.dual_averaging_adaptation``; Nesterov 2009, as
adapted by Hoffman & Gelman 2014, section 3.2.1, eq. 6):

.. math:: H_t = \delta - \alpha_t,\qquad
          \bar H_t = \Bigl(1 - \frac{1}{t + t_0}\Bigr)\bar H_{t-1} + \frac{H_t}{t + t_0},\qquad
          \log\epsilon_{t+1} = \mu - \frac{\sqrt{t}}{\gamma}\,\bar H_t

with ``alpha_t`` the mean acceptance of all chains over the update's ``steps`` steps,
``mu = log(10 eps_0)``, ``t0 = 10``, ``gamma = 0.05`` (Hoffman & Gelman's values). The
chains always use the *current* iterate ``eps_{t+1}``, never Hoffman & Gelman's averaged
iterate ``log eps_bar_{t+1} = t^-kappa log eps_{t+1} + (1 - t^-kappa) log eps_bar_t``:
that average is for a *fixed* target after warm-up; its memory grows with ``t``, so after
thousands of updates it would lag behind a model whose scale keeps changing. The current
iterate answers every new error with a gain that decays only as ``t^{-1/2}``
(``log eps_{t+1} - log eps_t ~ -(H_t - Hbar_{t-1}/2) / (gamma sqrt(t))``: 0.2 per unit
of acceptance error after 10,000 updates), a Robbins-Monro step that tracks a slowly
moving optimum without restarts, while the averaging in ``Hbar`` damps the noise of one
update's acceptance estimate. The step is bounded above by the one where the sampler
turns unstable on a Gaussian as wide as the data, ``4 s^2`` for MALA and ``2 s`` for the
leapfrog of HMC/NUTS/GHMC (and for Barker's increments) (``s`` the largest per-coordinate std of the data, the half-width of
its box with ``noise="uniform"``): a freshly initialised network is nearly flat and
accepts any step, and unbounded dual averaging then throws the chains far from the data
(measured: a 2-32-32-1 MLP on ``8gaussians`` reached MALA steps of 27,000 within 30
updates and its energies blew up). The bound is a projection without wind-up: at the
bound ``Hbar_t`` is reset to ``gamma (mu - log eps_max) / sqrt(t)``, whose iterate is
the bound, so the step leaves it as soon as the acceptance falls below the target.
The state (``MCMCState.adaptation``) is carried by ``fit``,
checkpointed with the chains and replicated over devices (the acceptance is the mean over
all devices' chains, so every copy makes the same update); the metric ``step_size`` is
the step the update's chains used.

Metrics: ``energy_data``, ``energy_samples`` (mean ``-log p~``), ``acceptance_rate``; with ``kl_weight > 0``
also ``kl_energy`` (the mean frozen-parameter energy ``-log p~`` of the end points, the
quantity whose gradient through the sampler is the KL term); with ``entropy_weight > 0``
also ``entropy`` (the nearest-neighbour entropy estimate of the end points, nats); with
``adapt_step_size`` also ``step_size``; with the unadjusted ``Langevin`` and ``steps >= 2``
also ``mh_acceptance``, the mean Metropolis-Hastings acceptance the ULA moves would have
had (not applied): near 1 the Langevin step is small against the model's scale, low
values mean a biased, too wide sampler (``Langevin``'s docstring).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractSampler, AbstractStrategy
import equinox as eqx

from declebm._checks import check_choice, check_flag, check_positive, hyperparameter, is_on, optional_term
from declebm._ebm import stop_gradient
from declebm._sample import draw_noise, fit_noise
from declebm.evaluate import nearest_neighbour_entropy

from ._samplers import GHMC, MALA, Barker, _AbstractHamiltonian

_STARTS = ("data", "persistent", "noise", "buffer")
_NOISES = ("gaussian", "uniform")
_reinit_prob = hyperparameter("reinit_prob", low=0.0, high=1.0)
_target_acceptance = hyperparameter("target_acceptance", low=0.0, high=1.0, low_open=True, high_open=True)

# Hoffman & Gelman (2014), section 3.2.1: t0 damps the first iterations, gamma sets the gain.
_DA_T0, _DA_GAMMA = 10, 0.05


def _optional_target(value):
    return None if value is None else _target_acceptance(value)


def _max_step_size(sampler: AbstractSampler, scale: Array) -> Array:
    """The largest step the adaptation may reach: where the sampler turns unstable on a
    Gaussian as wide as the data (``scale``: the start distribution's per-coordinate
    scale, the data's std). Unadjusted Langevin on ``N(0, s^2)`` diverges for
    ``eps > 4 s^2`` (``x' = (1 - eps / 2s^2) x + ...``), the leapfrog for ``eps > 2 s``
    (per coordinate, ``s / sqrt(M^-1_ii)`` with a mass matrix; HMC, NUTS and GHMC). Barker
    never turns unstable (its increments only lean toward the gradient), but increments
    of twice the data's scale leave the data's range: the same ``2 s``. Other samplers:
    no bound."""
    s = jnp.asarray(scale, jnp.float32).reshape(-1)
    if isinstance(sampler, MALA):
        return 4.0 * jnp.max(s) ** 2
    if isinstance(sampler, (_AbstractHamiltonian, GHMC, Barker)):
        m = sampler.inverse_mass_matrix
        if m is None:
            return 2.0 * jnp.max(s)
        diag = jnp.asarray(m if m.ndim == 1 else jnp.diagonal(m), jnp.float32)
        return 2.0 * jnp.max(s / jnp.sqrt(diag))
    return jnp.asarray(jnp.inf, jnp.float32)


class MCMCState(NamedTuple):
    """Training state of the MCMC strategies.

    chains: persistent chains (``PersistentCD``), the replay buffer (``ReplayBufferML``),
        or an empty array (chains that restart every step).
    noise_loc, noise_scale: the start distribution fitted to the data at ``init``:
        ``loc + scale * N(0, I)`` (``noise="gaussian"``) or ``loc + scale * U(-1, 1)``
        (``noise="uniform"``, the data's bounding box).
    adaptation: with ``adapt_step_size=True``, BlackJAX's dual-averaging state of the
        sampler's step size (``log_step_size`` is the one in use; 0-d arrays, replicated
        over devices); ``None`` otherwise.
    """

    chains: Float[Array, "chains *event"]
    noise_loc: Float[Array, "*event"]
    noise_scale: Float[Array, "*event"]
    adaptation: DualAveragingAdaptationState | None = None


class _AbstractMaximumLikelihood(AbstractStrategy):
    """Shared hyperparameters and machinery; the concrete classes say where chains
    start (and may change a default, e.g. ``steps=1`` for CD)."""

    sampler: AbstractSampler
    steps: int = 20
    num_chains: int | None = None
    energy_reg: float | Float[Array, ""] = eqx.field(converter=optional_term("energy_reg"), default=0.0)
    noise: str = "gaussian"
    kl_weight: float | Float[Array, ""] = eqx.field(converter=optional_term("kl_weight"), default=0.0)
    kl_steps: int | None = 1
    entropy_weight: float | Float[Array, ""] = eqx.field(converter=optional_term("entropy_weight"), default=0.0)
    adapt_step_size: bool = eqx.field(default=False, kw_only=True)
    target_acceptance: Float[Array, ""] | None = eqx.field(converter=_optional_target, default=None, kw_only=True)

    def __check_init__(self):
        self._check()

    @property
    def chain_start(self) -> str:
        raise NotImplementedError

    # Replay-buffer settings; only the buffer start reads them.
    buffer_size: ClassVar[int] = 0
    reinit_prob: ClassVar[float] = 0.0

    @property
    def differentiates_sampler(self) -> bool:
        """Whether the loss differentiates through the last sampler steps (the Du et al.
        2020 KL or entropy term is on)."""
        return is_on(self.kl_weight) or is_on(self.entropy_weight)

    @property
    def num_live_steps(self) -> int:
        """How many final sampler steps the KL/entropy gradient flows through."""
        return self.steps if self.kl_steps is None else self.kl_steps

    def _check(self):
        if not isinstance(self.sampler, AbstractSampler):
            raise TypeError(
                f"sampler: expected a declebm sampler (Langevin, MALA, HMC), got {type(self.sampler).__name__}"
            )
        check_positive(self.steps, "steps", integer=True)
        check_choice(self.chain_start, "init", _STARTS)
        if self.num_chains is not None:
            if self.chain_start == "data":
                raise ValueError(
                    f"num_chains: chains that start at the data batch (contrastive divergence) are one per "
                    f"example, so num_chains must stay None; got {self.num_chains!r}"
                )
            check_positive(self.num_chains, "num_chains", integer=True)
        check_choice(self.noise, "noise", _NOISES)
        check_positive(self.buffer_size, "buffer_size", integer=True, allow_zero=self.chain_start != "buffer")
        if self.kl_steps is not None:
            check_positive(self.kl_steps, "kl_steps", integer=True)
            if self.kl_steps > self.steps:
                raise ValueError(
                    f"kl_steps: the KL gradient flows through the last kl_steps of the {self.steps} sampler "
                    f"steps, so it must be at most steps={self.steps}; got {self.kl_steps} (None means all)"
                )
        check_flag(self.adapt_step_size, "adapt_step_size")
        if self.target_acceptance is not None and not self.adapt_step_size:
            raise ValueError(
                "target_acceptance: is the acceptance rate the step size adapts to, so it needs "
                "adapt_step_size=True; got adapt_step_size=False"
            )
        if self.adapt_step_size:
            if self.sampler.target_acceptance is None or not hasattr(self.sampler, "step_size"):
                raise ValueError(
                    f"adapt_step_size: adapts the step size to a Metropolis acceptance rate, but "
                    f"{type(self.sampler).__name__} has no Metropolis step; use MALA or HMC, or adapt_step_size=False"
                )
            if getattr(self.sampler.step_size, "ndim", 0) != 0:
                raise ValueError("adapt_step_size: needs one step size for all chains, got one per chain")
        if self.differentiates_sampler and not self.sampler.is_differentiable:
            which = "kl_weight" if is_on(self.kl_weight) else "entropy_weight"
            raise ValueError(
                f"sampler: {which} > 0 differentiates the loss through the last sampler steps (Du et al. 2020), "
                f"which needs an unadjusted, differentiable sampler such as Langevin(step_size=...); "
                f"{type(self.sampler).__name__} has a Metropolis accept/reject step and cannot be differentiated. "
                f"Use Langevin, or set kl_weight=0 and entropy_weight=0."
            )

    def _noise(self, state: MCMCState, n: int, key) -> Array:
        return draw_noise(state.noise_loc, state.noise_scale, self.noise, n, key)

    @property
    def adaptation_target(self):
        """The acceptance rate the step size adapts to: ``target_acceptance``, or by default
        the sampler's (MALA 0.574, HMC 0.651, NUTS 0.8)."""
        if self.target_acceptance is not None:
            return self.target_acceptance
        return self.sampler.target_acceptance

    def _dual_averaging(self):
        return dual_averaging_adaptation(self.adaptation_target, t0=_DA_T0, gamma=_DA_GAMMA)

    def _init_step_size(self) -> DualAveragingAdaptationState | None:
        if not self.adapt_step_size:
            return None
        init, _, _ = self._dual_averaging()
        state = init(jnp.asarray(self.sampler.step_size, jnp.float32))
        # BlackJAX's init (mu = log(10 eps0), the point the iterates shrink toward) leaves
        # some fields Python scalars: make each a 0-d array of a fixed dtype (the scan's carry).
        f32, i32 = jnp.float32, jnp.int32
        return jax.tree.map(lambda v, d: jnp.asarray(v, d), state, DualAveragingAdaptationState(f32, f32, i32, f32, f32))

    def current_sampler(self, state: MCMCState) -> AbstractSampler:
        """The sampler with the step size in use: the adapted one with ``adapt_step_size``."""
        if not self.adapt_step_size or state.adaptation is None:
            return self.sampler
        return eqx.tree_at(lambda s: s.step_size, self.sampler, jnp.exp(state.adaptation.log_step_size))

    def _adapt(self, state: MCMCState, acceptance: Array) -> MCMCState:
        """One dual-averaging update of the step size from this update's mean acceptance."""
        if not self.adapt_step_size:
            return state
        _, update, _ = self._dual_averaging()
        old = state.adaptation
        acc = jnp.clip(jnp.nan_to_num(jax.lax.stop_gradient(acceptance), nan=0.0), 0.0, 1.0)
        new = update(old, acc.astype(jnp.float32))
        new = jax.tree.map(lambda a, b: jnp.asarray(a).astype(b.dtype), new, old)
        # Projection onto log eps <= log eps_max without wind-up: reset the averaged error to
        # the value whose iterate is the bound, log eps = mu - sqrt(t)/gamma * Hbar.
        cap = jnp.log(_max_step_size(self.sampler, state.noise_scale))
        t = old.step.astype(jnp.float32)
        over = new.log_step_size > cap
        new = new._replace(
            log_step_size=jnp.where(over, cap, new.log_step_size).astype(jnp.float32),
            avg_error=jnp.where(over, _DA_GAMMA * (new.mu - cap) / jnp.sqrt(t), new.avg_error).astype(jnp.float32),
        )
        return state._replace(adaptation=new)

    def init(self, model, data, key, *, batch_size=None) -> MCMCState:
        loc, scale = fit_noise(data, self.noise)
        state = MCMCState(jnp.zeros((0,) + data.shape[1:], data.dtype), loc, scale, self._init_step_size())
        if self.chain_start == "persistent":
            n = self.num_chains or batch_size or 256
            state = state._replace(chains=self._noise(state, n, key))
        elif self.chain_start == "buffer":
            state = state._replace(chains=self._noise(state, self.buffer_size, key))
        return state

    def _segment(self, sampler, model, x: Array, keys: Array) -> tuple[Array, Array, Array | None]:
        """``len(keys)`` sampler steps from ``x`` on ``model``; returns the end points and
        the per-step mean acceptance rates and ``mh_acceptance``, or ``None`` for a
        Metropolis sampler, whose ``mh_acceptance`` is its acceptance rate (reported once)."""
        state, info = sampler.scan_steps(model, sampler.init(model, x), keys)
        unadjusted = sampler.is_differentiable  # no Metropolis accept/reject step
        return state.position, info.acceptance_rate, info.mh_acceptance if unadjusted else None

    def _chain(self, model, x0: Array, key: PRNGKeyArray, sampler=None) -> tuple[Array, Array, Array | None]:
        """Run ``steps`` sampler steps from ``x0``. Returns ``(x_k, mean acceptance, mean
        mh_acceptance or None)``.

        Without a Du et al. term: ``sampler.run`` on a stop-gradient model, and ``x_k``
        carries no gradient. With one: the same steps with the same keys (those
        ``sampler.run`` would use, ``split(key, steps)``), the first ``steps - kl_steps``
        on the frozen model and the last ``kl_steps`` on the live one, so ``x_k`` has
        the same value and a gradient to theta through those last steps only.
        """
        sampler = self.sampler if sampler is None else sampler
        frozen = stop_gradient(model)
        keys = jax.random.split(key, self.steps)
        if not self.differentiates_sampler:
            x, acc, mh = self._segment(sampler, frozen, x0, keys)
            mh = None if mh is None or self.steps < 2 else jnp.nanmean(mh)
            return jax.lax.stop_gradient(x), jnp.mean(acc), mh
        n_frozen = self.steps - self.num_live_steps
        x, acceptance, mhs = jax.lax.stop_gradient(x0), [], []
        if n_frozen > 0:
            x, acc, mh = self._segment(sampler, frozen, x, keys[:n_frozen])
            x = jax.lax.stop_gradient(x)
            acceptance.append(acc)
            mhs.append(mh)
        x, acc, mh = self._segment(sampler, model, x, keys[n_frozen:])
        acceptance.append(acc)
        mhs.append(mh)
        # A segment's first step reports no move (NaN): with no segment of 2 steps, no ratio.
        measured = mh is not None and max(n_frozen, self.num_live_steps) >= 2
        mh = jnp.nanmean(jnp.concatenate(mhs)) if measured else None
        return x, jnp.mean(jnp.concatenate(acceptance)), mh

    def negatives(self, model, batch, state: MCMCState, key) -> tuple[Array, MCMCState, Array]:
        """Draw the negative samples ``x-`` and the updated state. Returns
        ``(x-, state, mean acceptance rate)``.

        ``x-`` carries no gradient to the model unless a Du et al. term is on
        (``kl_weight`` or ``entropy_weight`` > 0); then its gradient flows through the
        last ``kl_steps`` sampler steps. The state (persistent chains, buffer) always
        stores stop-gradient positions; with ``adapt_step_size`` the chains run with the
        adapted step size and the state holds its update.
        """
        x, state, acceptance, _ = self._negatives(model, batch, state, key)
        return x, state, acceptance

    def _negatives(self, model, batch, state: MCMCState, key):
        n = self.num_chains or batch.shape[0]
        k_start, k_reinit, k_run = jax.random.split(key, 3)
        start = self.chain_start
        if start == "data":
            x0 = batch
        elif start == "noise":
            x0 = self._noise(state, n, k_start)
        elif start == "persistent":
            x0 = state.chains
        else:  # buffer
            idx = jax.random.randint(k_start, (n,), 0, state.chains.shape[0])
            # Two keys: drawn from one, the mask's uniforms and the noise's normals share their
            # random bits, and a re-initialised chain 0 always restarted below loc - 1.6 scale.
            k_mask, k_fresh = jax.random.split(k_reinit)
            fresh = jax.random.bernoulli(k_mask, self.reinit_prob, (n,))
            fresh = fresh.reshape((n,) + (1,) * (batch.ndim - 1))
            x0 = jnp.where(fresh, self._noise(state, n, k_fresh), state.chains[idx])
        x, acceptance, mh = self._chain(model, x0, k_run, self.current_sampler(state))
        x_sg = jax.lax.stop_gradient(x)
        if start == "persistent":
            state = state._replace(chains=x_sg)
        elif start == "buffer":
            state = state._replace(chains=state.chains.at[idx].set(x_sg))
        state = self._adapt(state, acceptance)
        return x, state, acceptance, mh

    def loss(self, model, batch, state, key):
        step_size = None if state.adaptation is None else jnp.exp(state.adaptation.log_step_size)
        x_live, state, acceptance, mh = self._negatives(model, batch, state, key)
        x_neg = jax.lax.stop_gradient(x_live)
        # The potential -log p~ = E - log b: a learnable base (GaussianBase) gets its gradient.
        e_pos = -model.log_prob_unnorm_batch(batch)
        e_neg = -model.log_prob_unnorm_batch(x_neg)
        loss = jnp.mean(e_pos) - jnp.mean(e_neg)
        if is_on(self.energy_reg):
            loss = loss + self.energy_reg * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
        metrics = {
            "energy_data": jnp.mean(e_pos),
            "energy_samples": jnp.mean(e_neg),
            "acceptance_rate": acceptance,
        }
        if step_size is not None:
            metrics["step_size"] = step_size
        if mh is not None:
            metrics["mh_acceptance"] = mh
        if is_on(self.kl_weight):
            # -log p~ with frozen parameters: the gradient reaches theta only through x_live.
            kl_energy = -jnp.mean(stop_gradient(model).log_prob_unnorm_batch(x_live))
            loss = loss + self.kl_weight * kl_energy
            metrics["kl_energy"] = kl_energy
        if is_on(self.entropy_weight):
            entropy = nearest_neighbour_entropy(x_live)
            loss = loss - self.entropy_weight * entropy
            metrics["entropy"] = entropy
        return loss, (state, metrics)


_DU_ARGS = r"""
        kl_weight: weight of the Du et al. (2020) KL term ``mean -log p~_{sg(theta)}(x_k)``,
            differentiated through the last ``kl_steps`` sampler steps (0: off, no extra
            compute). Needs an unadjusted sampler (``Langevin``); MALA/HMC/NUTS are refused.
        kl_steps: how many final sampler steps the KL and entropy gradients flow through
            (Du et al. use 1, the default); ``None`` for all ``steps``.
        entropy_weight: weight of the nearest-neighbour entropy bonus ``- H^(x_k)``
            (Du et al. 2020; 0: off). Same sampler requirement.
        adapt_step_size: keyword only. ``True`` adapts the sampler's step size during
            training to ``target_acceptance`` by dual averaging, once per update from the
            mean acceptance of its chains (module docstring); the sampler's ``step_size``
            is the starting value. Needs a Metropolis sampler (MALA, HMC, NUTS).
        target_acceptance: keyword only, in (0, 1); default the sampler's own target
            (MALA 0.574, HMC 0.651, NUTS 0.8). Only with ``adapt_step_size=True``."""


class MaximumLikelihood(_AbstractMaximumLikelihood):
    __doc__ = r"""MCMC maximum likelihood with the chain start chosen by ``init``:

    - ``"data"``: chains start at the data batch (CD-k; see ``ContrastiveDivergence``);
    - ``"persistent"``: chains carry over between steps (PCD, stochastic-approximation
      ML; ``PersistentCD``);
    - ``"noise"``: fresh noise every step (short-run, ML with a biased sampler; ``ShortRunML``);
    - ``"buffer"``: a replay buffer with re-initialisation from noise with probability
      ``reinit_prob`` (ML with a biased sampler; ``ReplayBufferML``).

    Loss ``mean E(x+) - mean E(sg(x-)) + energy_reg * (mean E(x+)^2 + mean E(x-)^2)``
    ``+ kl_weight * mean(-log p~_{sg(theta)}(x_k)) - entropy_weight * H^(x_k)``; see the
    module docstring for the objective each start makes the gradient follow and what
    it drops (Gagnon & Lajoie 2022).

    Arguments:
        sampler: the MCMC kernel (``Langevin``, ``MALA``, ``HMC``).
        steps: MCMC steps per parameter update (k).
        init: the chain start, above.
        num_chains: chains per update; default the batch size.
        energy_reg: weight of the energy-magnitude regulariser (Du & Mordatch 2019).
        noise: start distribution fitted to the data, ``"gaussian"`` (mean/std) or
            ``"uniform"`` (bounding box).
        buffer_size, reinit_prob: replay-buffer size and re-initialisation probability.""" + _DU_ARGS + "\n    "

    init_from: str = "persistent"
    buffer_size: int = 10_000
    reinit_prob: Float[Array, ""] = eqx.field(converter=_reinit_prob, default=0.05)

    def __init__(
        self,
        sampler: AbstractSampler,
        steps: int = 20,
        init: str = "persistent",
        *,
        num_chains: int | None = None,
        energy_reg: float = 0.0,
        noise: str = "gaussian",
        buffer_size: int = 10_000,
        reinit_prob: float = 0.05,
        kl_weight: float = 0.0,
        kl_steps: int | None = 1,
        entropy_weight: float = 0.0,
        adapt_step_size: bool = False,
        target_acceptance: float | None = None,
    ):
        self.sampler, self.steps, self.init_from = sampler, steps, init
        self.num_chains, self.energy_reg, self.noise = num_chains, energy_reg, noise
        self.buffer_size, self.reinit_prob = buffer_size, reinit_prob
        self.kl_weight, self.kl_steps, self.entropy_weight = kl_weight, kl_steps, entropy_weight
        self.adapt_step_size, self.target_acceptance = adapt_step_size, target_acceptance

    @property
    def chain_start(self) -> str:
        return self.init_from


class ContrastiveDivergence(_AbstractMaximumLikelihood):
    __doc__ = r"""CD-k (Hinton 2002): ``steps`` MCMC steps started **at the data batch**.

    - Chains start: at the data batch, every update.
    - Objective: the contrastive divergence
      ``CD_k = KL(p_d || p_theta) - KL(T_theta^k p_d || p_theta)`` (non-negative because
      the chains start at ``p_d`` and ``T`` leaves ``p_theta`` invariant). This is the one
      variant here that is contrastive divergence.
    - Dropped: the gradient of ``CD_k`` has a third term,
      ``-grad_theta^{(q)} KL(q_theta || p_theta)`` through the theta-dependence of
      ``q_theta = T_theta^k p_d``; every implementation drops it, and so does this one
      (Gagnon & Lajoie 2022). It is not the ML gradient: for small ``k`` the chains barely
      leave the data, and spurious modes far from data go unseen and uncorrected.
    - ``kl_weight`` adds the Du et al. (2020) term ``+grad^{(q)} KL(q_theta||p_sg)``,
      which has the opposite sign of the dropped term: it does not restore exact CD.

    Arguments:
        sampler: the MCMC kernel. steps: k (default 1). num_chains: must stay ``None``
            (one chain per data example). energy_reg, noise: as ``MaximumLikelihood``.""" + _DU_ARGS + "\n    "

    steps: int = 1
    num_chains: None = None
    chain_start: ClassVar[str] = "data"


class PersistentCD(_AbstractMaximumLikelihood):
    __doc__ = r"""Persistent contrastive divergence (Tieleman 2008), a.k.a. stochastic maximum
    likelihood (Younes 1989).

    - Chains start: ``num_chains`` chains (default: the batch size) drawn from the noise
      distribution once, then carried across parameter updates, ``steps`` per update.
    - Objective: **maximum likelihood**, ``KL(p_d || p_theta)``; the negatives are a
      stochastic approximation of ``E_p[grad E]``. Despite the name it is not CD.
    - Dropped: nothing in the limit (chains that mix, a small learning rate); in practice
      the bias of chains lagging behind the changing parameters (Gagnon & Lajoie 2022).
      Chains are re-initialised (``sampler.init``) on the updated model each step.

    Arguments:
        sampler: the MCMC kernel. steps: steps per update. num_chains: persistent chains
            (default the batch size). energy_reg, noise: as ``MaximumLikelihood``.""" + _DU_ARGS + "\n    "

    chain_start: ClassVar[str] = "persistent"


class ShortRunML(_AbstractMaximumLikelihood):
    __doc__ = r"""Short-run MCMC from noise (Nijkamp et al. 2019).

    - Chains start: fresh draws from the noise distribution (a Gaussian or box fitted to
      the data) at every update; ``steps`` steps; nothing persists.
    - Objective: the ML gradient with a **biased sampler**,
      ``E_data[grad E] - E_{q_theta}[grad E]`` with ``q_theta = T_theta^k q_0`` the k-step
      distribution from noise. **Not contrastive divergence** (Gagnon & Lajoie 2022): the
      chains never start at the data, so ``KL(p_d||p) - KL(q_theta||p)`` is not a
      divergence. It is stationary once the short-run samples match the data in the
      statistics ``grad_theta E``: the model learns an energy whose k-step flow from noise
      looks right, not a density that is right. Short-run samples can look good while
      long-run chains and the NLL are wrong (``evaluate.long_run`` shows it).
    - Dropped: the gap between ``q_theta`` and ``p_theta`` (the chains are far from
      equilibrium) and the theta-dependence of ``q_theta``.

    Arguments:
        sampler: the MCMC kernel. steps: k. num_chains: chains per update (default the
            batch size). energy_reg, noise: as ``MaximumLikelihood``.""" + _DU_ARGS + "\n    "

    chain_start: ClassVar[str] = "noise"


class ReplayBufferML(_AbstractMaximumLikelihood):
    __doc__ = r"""Replay-buffer training (Du & Mordatch 2019; with ``kl_weight`` and
    ``entropy_weight``, Du et al. 2020).

    - Chains start: draws from a buffer of ``buffer_size`` past end points, each replaced
      by fresh noise with probability ``reinit_prob`` (5%); after ``steps`` steps they are
      written back.
    - Objective: the ML gradient with a **biased sampler**, **not contrastive divergence**
      although the IGEBM papers call it so (Gagnon & Lajoie 2022): the negatives come
      from a mixture of chains of many ages, between persistent chains (ML, as
      ``reinit_prob -> 0``) and short-run chains from noise (biased ML, as it -> 1).
    - Dropped: the gap between the buffer's chain distribution and ``p_theta``, and its
      theta-dependence. The Du et al. KL term (``kl_weight``) pulls the sampler toward the
      model; it is not CD's dropped term (opposite sign).

    Arguments:
        sampler: the MCMC kernel. steps: steps per update. num_chains: chains per update
            (default the batch size). energy_reg, noise: as ``MaximumLikelihood``.
        buffer_size, reinit_prob: buffer size and per-draw re-initialisation probability.""" + _DU_ARGS + "\n    "

    buffer_size: int = 10_000
    reinit_prob: Float[Array, ""] = eqx.field(converter=_reinit_prob, default=0.05)
    chain_start: ClassVar[str] = "buffer"
