r"""Maximum likelihood with MCMC negatives: CD-k, persistent CD, short-run, replay buffer.

The exact log-likelihood gradient of ``p = exp(-E_theta) / Z`` is

.. math:: -\nabla_\theta \log p(x) = \nabla_\theta E(x) - E_{x^- \sim p}[\nabla_\theta E(x^-)]

(Song & Kingma 2021, eq. 5). Every strategy here minimises the surrogate

.. math:: L = \mathrm{mean}\,E(x^+) - \mathrm{mean}\,E(\mathrm{sg}(x^-))
          + \alpha\,(\mathrm{mean}\,E(x^+)^2 + \mathrm{mean}\,E(x^-)^2)

with ``x+`` a data batch and ``x-`` the end of MCMC chains on the current model
(``sg`` = stop-gradient); the strategies differ only in where the chains start, and that
changes what the gradient is an estimate of (Gagnon & Lajoie 2022):

======================  =====================  ==============================================
strategy                chains start at        what the update follows
======================  =====================  ==============================================
ContrastiveDivergence   the data batch         CD-k (Hinton 2002): the k-step contrastive
                                               divergence KL(p_d||p) - KL(T^k p_d||p), with the
                                               term through theta-dependence of T^k p_d dropped
PersistentCD            last step's chains     stochastic-approximation ML (Tieleman 2008):
                                               unbiased as the learning rate -> 0 and chains mix
ShortRunML              fresh noise each step  ML with a biased sampler (Nijkamp et al. 2019):
                                               NOT contrastive divergence; learns a model whose
                                               k-step samples look right, not whose density is
ReplayBufferML          a replay buffer, with  ML with a biased sampler (Du & Mordatch 2019):
                        re-init from noise     NOT contrastive divergence although often named so
======================  =====================  ==============================================

The samplers run on a stop-gradient copy of the model, so no gradient flows through
the chains. Persistent chains are kept as positions only: a sampler's cached
``log p~`` and gradient go stale when the parameters change, so chains are
re-initialised (``sampler.init``) on the updated model at every step.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from declebm import AbstractSampler, AbstractStrategy
from declebm._checks import check_positive, check_probability
from declebm._ebm import stop_gradient

_STARTS = ("data", "persistent", "noise", "buffer")
_NOISES = ("gaussian", "uniform")


class MCMCState(NamedTuple):
    """Training state of the MCMC strategies.

    chains: persistent chains (``PersistentCD``), the replay buffer (``ReplayBufferML``),
        or an empty array (chains that restart every step).
    noise_loc, noise_scale: the start distribution fitted to the data at ``init``:
        ``loc + scale * N(0, I)`` (``noise="gaussian"``) or ``loc + scale * U(-1, 1)``
        (``noise="uniform"``, the data's bounding box).
    """

    chains: Float[Array, "chains *event"]
    noise_loc: Float[Array, "*event"]
    noise_scale: Float[Array, "*event"]


class _AbstractMaximumLikelihood(AbstractStrategy):
    """Shared machinery; the concrete classes say where chains start."""

    sampler: eqx.AbstractVar[AbstractSampler]
    steps: eqx.AbstractVar[int]
    num_chains: eqx.AbstractVar[int | None]
    energy_reg: eqx.AbstractVar[float]
    noise: eqx.AbstractVar[str]

    @property
    def chain_start(self) -> str:
        raise NotImplementedError

    # Replay-buffer settings; only the buffer start reads them.
    buffer_size: ClassVar[int] = 0
    reinit_prob: ClassVar[float] = 0.0

    def _check(self):
        if not isinstance(self.sampler, AbstractSampler):
            raise TypeError(
                f"sampler: expected a declebm sampler (Langevin, MALA, HMC), got {type(self.sampler).__name__}"
            )
        check_positive(self.steps, "steps", integer=True)
        if self.num_chains is not None:
            check_positive(self.num_chains, "num_chains", integer=True)
        check_positive(self.energy_reg, "energy_reg", allow_zero=True)
        if self.noise not in _NOISES:
            raise ValueError(f"noise: expected one of {_NOISES}, got {self.noise!r}")
        if self.chain_start not in _STARTS:
            raise ValueError(f"init: expected one of {_STARTS}, got {self.chain_start!r}")
        if self.chain_start == "buffer":
            check_positive(self.buffer_size, "buffer_size", integer=True)
            check_probability(self.reinit_prob, "reinit_prob")

    def _noise(self, state: MCMCState, n: int, key) -> Array:
        shape = (n,) + state.noise_loc.shape
        if self.noise == "gaussian":
            z = jax.random.normal(key, shape)
        else:
            z = jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
        return state.noise_loc + state.noise_scale * z

    def init(self, model, data, key, *, batch_size=None) -> MCMCState:
        if self.noise == "gaussian":
            loc, scale = jnp.mean(data, 0), jnp.std(data, 0) + 1e-6
        else:
            lo, hi = jnp.min(data, 0), jnp.max(data, 0)
            loc, scale = 0.5 * (lo + hi), 0.5 * (hi - lo) + 1e-6
        state = MCMCState(jnp.zeros((0,) + data.shape[1:], data.dtype), loc, scale)
        if self.chain_start == "persistent":
            n = self.num_chains or batch_size or 256
            state = state._replace(chains=self._noise(state, n, key))
        elif self.chain_start == "buffer":
            state = state._replace(chains=self._noise(state, self.buffer_size, key))
        return state

    def negatives(self, model, batch, state: MCMCState, key) -> tuple[Array, MCMCState, Array]:
        """Draw the negative samples ``x-`` and the updated state. Returns
        ``(x-, state, mean acceptance rate)``; no gradient flows to the model."""
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
            fresh = jax.random.bernoulli(k_reinit, self.reinit_prob, (n,))
            fresh = fresh.reshape((n,) + (1,) * (batch.ndim - 1))
            x0 = jnp.where(fresh, self._noise(state, n, k_reinit), state.chains[idx])
        x, info = self.sampler.run(stop_gradient(model), x0, self.steps, k_run)
        x = jax.lax.stop_gradient(x)
        if start == "persistent":
            state = state._replace(chains=x)
        elif start == "buffer":
            state = state._replace(chains=state.chains.at[idx].set(x))
        return x, state, jnp.mean(info.acceptance_rate)

    def loss(self, model, batch, state, key):
        x_neg, state, acceptance = self.negatives(model, batch, state, key)
        e_pos = model.energy_batch(batch)
        e_neg = model.energy_batch(x_neg)
        loss = jnp.mean(e_pos) - jnp.mean(e_neg)
        if self.energy_reg:
            loss = loss + self.energy_reg * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
        metrics = {
            "energy_data": jnp.mean(e_pos),
            "energy_samples": jnp.mean(e_neg),
            "acceptance_rate": acceptance,
        }
        return loss, (state, metrics)


class MaximumLikelihood(_AbstractMaximumLikelihood):
    r"""MCMC maximum likelihood with the chain start chosen by ``init``:

    - ``"data"``: chains start at the data batch (CD-k; see ``ContrastiveDivergence``);
    - ``"persistent"``: chains carry over between steps (PCD; ``PersistentCD``);
    - ``"noise"``: fresh noise every step (short-run, ML with a biased sampler; ``ShortRunML``);
    - ``"buffer"``: a replay buffer with re-initialisation from noise with probability
      ``reinit_prob`` (ML with a biased sampler; ``ReplayBufferML``).

    Loss ``mean E(x+) - mean E(x-) + energy_reg * (mean E(x+)^2 + mean E(x-)^2)``;
    see the module docstring for what each start makes the gradient estimate.

    Arguments:
        sampler: the MCMC kernel (``Langevin``, ``MALA``, ``HMC``).
        steps: MCMC steps per parameter update (k).
        init: the chain start, above.
        num_chains: chains per update; default the batch size.
        energy_reg: weight of the energy-magnitude regulariser (Du & Mordatch 2019).
        noise: start distribution fitted to the data, ``"gaussian"`` (mean/std) or
            ``"uniform"`` (bounding box).
        buffer_size, reinit_prob: replay-buffer size and re-initialisation probability.
    """

    sampler: AbstractSampler
    steps: int
    init_from: str
    num_chains: int | None
    energy_reg: float
    noise: str
    buffer_size: int
    reinit_prob: float

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
    ):
        self.sampler, self.steps, self.init_from = sampler, steps, init
        self.num_chains, self.energy_reg, self.noise = num_chains, energy_reg, noise
        self.buffer_size, self.reinit_prob = buffer_size, reinit_prob
        self._check()

    @property
    def chain_start(self) -> str:
        return self.init_from


class ContrastiveDivergence(_AbstractMaximumLikelihood):
    r"""CD-k (Hinton 2002): ``steps`` MCMC steps started **at the data batch**.

    This is the one variant here that is contrastive divergence: its update is the
    gradient of ``KL(p_d || p) - KL(T^k p_d || p)`` with the term that flows through
    the theta-dependence of ``T^k p_d`` dropped (as every implementation does; Gagnon &
    Lajoie 2022). It is not the ML gradient: for small ``k`` it learns a model whose
    k-step chains barely leave the data, and spurious modes away from data go unseen.
    """

    sampler: AbstractSampler
    steps: int = 1
    num_chains: None = None
    energy_reg: float = 0.0
    noise: str = "gaussian"
    chain_start: ClassVar[str] = "data"

    def __check_init__(self):
        self._check()


class PersistentCD(_AbstractMaximumLikelihood):
    r"""Persistent contrastive divergence (Tieleman 2008), a.k.a. stochastic maximum
    likelihood (Younes 1989): ``num_chains`` chains (default: the batch size) started
    from noise once and carried across parameter updates, ``steps`` per update.

    Despite the name it is not CD: it is a stochastic approximation of the *maximum
    likelihood* gradient, consistent when the chains mix and the learning rate is small
    (Gagnon & Lajoie 2022). Chains are re-initialised on the updated model each step.
    """

    sampler: AbstractSampler
    steps: int = 20
    num_chains: int | None = None
    energy_reg: float = 0.0
    noise: str = "gaussian"
    chain_start: ClassVar[str] = "persistent"

    def __check_init__(self):
        self._check()


class ShortRunML(_AbstractMaximumLikelihood):
    r"""Short-run MCMC from noise (Nijkamp et al. 2019): every update starts fresh chains
    from the noise distribution and runs ``steps`` steps.

    Maximum likelihood with a *biased* sampler, **not** contrastive divergence (Gagnon &
    Lajoie 2022): the chains never reach the model, so what is learned is an energy
    whose k-step flow from noise matches the data. Its short-run samples can look good
    while its density (long-run chains, NLL) is wrong.
    """

    sampler: AbstractSampler
    steps: int = 20
    num_chains: int | None = None
    energy_reg: float = 0.0
    noise: str = "gaussian"
    chain_start: ClassVar[str] = "noise"

    def __check_init__(self):
        self._check()


class ReplayBufferML(_AbstractMaximumLikelihood):
    r"""Replay-buffer training (Du & Mordatch 2019): chains start at draws from a buffer
    of past samples, each replaced by fresh noise with probability ``reinit_prob``
    (5%); after ``steps`` steps they are written back.

    Maximum likelihood with a *biased* sampler, **not** contrastive divergence although
    the IGEBM papers call it so (Gagnon & Lajoie 2022): between persistent chains (ML)
    and short-run chains (biased ML), depending on ``reinit_prob``.
    """

    sampler: AbstractSampler
    steps: int = 20
    num_chains: int | None = None
    energy_reg: float = 0.0
    noise: str = "gaussian"
    buffer_size: int = 10_000
    reinit_prob: float = 0.05
    chain_start: ClassVar[str] = "buffer"

    def __check_init__(self):
        self._check()
