r"""Annealed importance sampling (Neal 2001) and its reverse, bidirectional Monte Carlo
(Grosse, Ghahramani & Adams 2015), around BlackJAX transition kernels.

Forward AIS starts ``n`` chains at exact draws of a normalised density ``q = f_0`` and
moves them through the bridge ``log f_b = (1-b) log q + b log p~`` on a schedule
``0 = b_0 < b_1 < ... < b_T = 1``; each chain's log weight is

.. math:: \log w = \sum_{t=1}^{T} \log f_{b_t}(x_{t-1}) - \log f_{b_{t-1}}(x_{t-1})
                 = \sum_{t=1}^{T} (b_t - b_{t-1})\,\bigl(\log\tilde p(x_{t-1}) - \log q(x_{t-1})\bigr),

where ``x_t`` follows from ``x_{t-1}`` by an MCMC transition that leaves ``f_{b_t}``
invariant. ``E[w] = Z``, so ``log mean w`` is a stochastic lower bound on ``log Z``.
Reverse AIS runs the same chain backwards from exact draws of ``p``: its weights have
``E[w] = 1/Z``, so ``-log mean w`` is a stochastic upper bound. Together they bracket
``log Z`` and their gap bounds the error of either (Grosse et al. 2015, section 4).

BlackJAX's SMC resamples at every step and replaces the weights, so plain AIS is this
module's own ``lax.scan`` over temperatures around the samplers' kernels.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractLogZEstimator, AbstractSampler, LogZEstimate
from declebm._checks import check_examples, check_positive
from declebm._estimator import summarise_log_weights

from ._annealing import AnnealedTarget, check_kernel, draw_start, prepare
from ._samplers import MALA

SCHEDULES = ("sigmoid", "geometric", "linear")
_REVERSE = (False, True, "exact", "data")


def annealing_schedule(kind: str, num_steps: int) -> np.ndarray:
    r"""``num_steps + 1`` inverse temperatures from 0 to 1 (float64):

    - ``"linear"``: evenly spaced;
    - ``"geometric"``: ``0`` then ``num_steps`` values evenly spaced in log from
      ``1/num_steps^2`` to 1 (dense near 0, where a wide start meets a narrow model);
    - ``"sigmoid"``: ``sigma(delta (2t/T - 1))`` rescaled to [0, 1] with ``delta = 4``
      (Grosse et al. 2015): dense at both ends.
    """
    t = np.arange(num_steps + 1, dtype=np.float64)
    if kind == "linear":
        return t / num_steps
    if kind == "geometric":
        if num_steps == 1:
            return np.array([0.0, 1.0])
        return np.concatenate([[0.0], np.geomspace(1.0 / num_steps**2, 1.0, num_steps)])
    if kind == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-4.0 * (2.0 * t / num_steps - 1.0)))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)} or an array, got {kind!r}")


def check_schedule(schedule: Any) -> np.ndarray:
    """A user-given schedule: a 1-D array increasing strictly from exactly 0 to exactly 1."""
    try:
        b = np.asarray(schedule, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"schedule: expected one of {', '.join(SCHEDULES)} or a 1-D array of inverse temperatures, got {schedule!r}") from e
    if b.ndim != 1 or b.shape[0] < 2:
        raise ValueError(f"schedule: expected a 1-D array of at least 2 inverse temperatures, got shape {b.shape}")
    if not np.all(np.isfinite(b)) or b[0] != 0.0 or b[-1] != 1.0 or not np.all(np.diff(b) > 0):
        raise ValueError(
            f"schedule: expected inverse temperatures increasing strictly from 0 to 1, got {b[:3].tolist()} ... "
            f"{b[-3:].tolist()} (first {b[0]}, last {b[-1]})"
        )
    return b


def anneal(
    target: AnnealedTarget,
    kernel: AbstractSampler,
    betas: Float[Array, " T1"],
    x0: Float[Array, "n *event"],
    key: PRNGKeyArray,
    num_mcmc_steps: int = 1,
) -> tuple[Float[Array, " n"], Float[Array, " T1m2"], Float[Array, "n *event"]]:
    r"""One AIS sweep over ``betas`` (``b_0, ..., b_T``) from ``x0``, exact draws of ``f_{b_0}``.

    At each ``t = 1..T``: ``log w += (b_t - b_{t-1}) (log p~(x) - log q(x))``, then (for
    ``t < T``) ``num_mcmc_steps`` transitions of ``kernel`` targeting ``f_{b_t}``. Works
    in either direction (reverse AIS passes a decreasing ``betas``). Returns the log
    weights, the acceptance rate at each intermediate temperature (averaged over
    chains and steps) and the final positions. The weights accumulate in the default
    float dtype (float64 under ``jax_enable_x64``).
    """
    deltas = betas[1:] - betas[:-1]
    log_ratio = jax.vmap(target.log_ratio)
    acc_dtype = jnp.result_type(float)

    def body(carry, inputs):
        x, log_w = carry
        delta, beta, k = inputs
        log_w = log_w + (delta * log_ratio(x)).astype(acc_dtype)
        state = kernel.init(target, x, beta=beta)
        state, info = kernel.scan_steps(target, state, jax.random.split(k, num_mcmc_steps), beta=beta)
        return (state.position, log_w), jnp.mean(info.acceptance_rate)

    num_moves = betas.shape[0] - 2
    keys = jax.random.split(key, num_moves)
    log_w0 = jnp.zeros(x0.shape[0], acc_dtype)
    (x, log_w), acceptance = jax.lax.scan(body, (x0, log_w0), (deltas[:-1], betas[1:-1], keys))
    log_w = log_w + (deltas[-1] * log_ratio(x)).astype(acc_dtype)
    return log_w, acceptance, x


@eqx.filter_jit
def _run_ais(target, kernel, betas, num_chains, event_shape, key, num_mcmc_steps, reverse_start):
    k_start, k_fwd, k_rev = jax.random.split(key, 3)
    x0 = draw_start(target.base, num_chains, event_shape, k_start)
    log_w, acceptance, _ = anneal(target, kernel, betas, x0, k_fwd, num_mcmc_steps)
    out = {"log_weights": log_w, "acceptance_rate": acceptance}
    if reverse_start is not None:
        rev_w, rev_acc, _ = anneal(target, kernel, betas[::-1], reverse_start, k_rev, num_mcmc_steps)
        out["reverse_log_weights"] = rev_w
        out["reverse_acceptance_rate"] = rev_acc[::-1]
    return out


def _model_draws_exactly(model: Any) -> bool:
    """Whether ``model.energy_module.sample(key, n)`` draws exactly from the model: only when
    the EBM adds no base density and is not tempered."""
    sampler = getattr(model.energy_module, "sample", None)
    if not callable(sampler) or model.base is not None:
        return False
    try:
        return float(model.inverse_temperature) == 1.0
    except (TypeError, jax.errors.ConcretizationTypeError):
        return False


class AIS(AbstractLogZEstimator):
    r"""Annealed importance sampling (Neal 2001) of ``log Z``, optionally bidirectional
    (reverse AIS, Grosse et al. 2015) for an upper bound as well.

    Chains start at exact draws of a normalised density ``q`` and are annealed along
    ``log f_b = (1-b) log q + b log p~`` (see the module docstring for the weights); all
    chains are vmapped, temperatures are a ``lax.scan``, transitions are the ``kernel``'s
    BlackJAX moves (MALA or HMC), one compile per call.

    The start ``q`` is, in order: ``base`` if given (any NumPyro distribution over one
    example); the model's own base density (``EBM(energy, base=...)``); a Gaussian fitted
    to ``data`` when ``evaluate.log_z``/``log_likelihood`` are given data; a standard normal.
    The closer ``q`` is to the model, the fewer temperatures are needed.

    Arguments:
        num_chains: number of independent AIS chains (weights averaged).
        num_steps: number of annealing steps ``T`` (``T + 1`` inverse temperatures,
            ``T - 1`` of which get MCMC transitions). Default 1000 for a named schedule;
            for an array schedule it is taken from the array (and must agree if given).
        kernel: the transition, any declebm sampler: ``MALA(step_size=...)`` (default
            ``MALA(step_size=0.1)``, for unit-scale data) or ``HMC(...)``. Its step size is
            used at every temperature; aim for acceptance 0.5-0.9 at ``b = 1``
            (``diagnostics["acceptance_rate"]`` reports it per temperature).
        num_mcmc_steps: transitions per temperature.
        schedule: ``"sigmoid"`` (default; Grosse et al. 2015), ``"geometric"``,
            ``"linear"`` (see ``annealing_schedule``), or an array of inverse temperatures
            increasing strictly from 0 to 1.
        base: the start density ``q`` (see above); ``None`` to choose it automatically.
        reverse: also run reverse AIS for a stochastic upper bound (BDMC). Reverse chains
            must start at exact draws of the model: ``"exact"`` takes them from
            ``estimate(..., exact_samples=x)`` or from the model itself when its energy
            can ``sample`` (analytic models such as ``GaussianEnergy``/``MixtureEnergy``,
            with no base and temperature 1); ``"data"`` starts them at the data, the
            usual approximation for trained models (Grosse et al. 2015; Du & Mordatch
            2019): it is an upper bound only insofar as the model fits the data, so
            read the gap as a diagnostic, not a guarantee. ``True`` means ``"exact"``
            when exact draws exist, else ``"data"``. At most ``num_chains`` reverse
            chains are run (a random subset of the given draws).

    Returns (from ``estimate``) a ``LogZEstimate`` with ``log_z`` (the forward
    estimate, also ``log_z_lower``), ``stderr``, ``ess``, per-chain ``log_weights``, and
    with ``reverse`` also ``log_z_upper`` and ``gap``. ``diagnostics`` holds
    ``schedule``, ``acceptance_rate`` (per intermediate temperature), and for reverse
    runs ``reverse_log_weights``, ``reverse_acceptance_rate``, ``reverse_stderr``,
    ``reverse_ess``, ``reverse_start`` (``"exact"`` or ``"data"``).
    """

    num_chains: int = 1000
    num_steps: int | None = None
    kernel: AbstractSampler = MALA(step_size=0.1)
    schedule: Any = "sigmoid"
    base: Any = None
    reverse: bool | str = False
    num_mcmc_steps: int = 1

    def __check_init__(self):
        check_positive(self.num_chains, "num_chains", integer=True)
        check_positive(self.num_mcmc_steps, "num_mcmc_steps", integer=True)
        check_kernel(self.kernel)
        if self.num_steps is not None:
            check_positive(self.num_steps, "num_steps", integer=True)
        if isinstance(self.schedule, str):
            if self.schedule not in SCHEDULES:
                raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)} or an array, got {self.schedule!r}")
        else:
            b = check_schedule(self.schedule)
            if self.num_steps is not None and self.num_steps != b.shape[0] - 1:
                raise ValueError(
                    f"num_steps: {self.num_steps} disagrees with the schedule's {b.shape[0]} inverse temperatures "
                    f"({b.shape[0] - 1} steps); leave num_steps out"
                )
        if not any(self.reverse is r or (isinstance(r, str) and self.reverse == r) for r in _REVERSE):
            raise ValueError(f"reverse: expected False, True, 'exact' or 'data', got {self.reverse!r}")

    @property
    def betas(self) -> np.ndarray:
        """The inverse temperatures ``b_0 = 0, ..., b_T = 1`` (float64)."""
        if isinstance(self.schedule, str):
            return annealing_schedule(self.schedule, 1000 if self.num_steps is None else self.num_steps)
        return check_schedule(self.schedule)

    def _reverse_start(self, model, data, exact_samples, event_shape, key):
        """``(positions, kind)`` for the reverse chains, or ``(None, None)``."""
        if self.reverse is False:
            return None, None
        kind = self.reverse
        has_exact = exact_samples is not None or _model_draws_exactly(model)
        if kind is True:
            kind = "exact" if has_exact else "data"
        if kind == "exact":
            if exact_samples is not None:
                x = check_examples(exact_samples, "exact_samples", event_shape)
            elif _model_draws_exactly(model):
                x = jnp.reshape(model.energy_module.sample(key, self.num_chains), (self.num_chains,) + event_shape)
            else:
                raise ValueError(
                    "reverse: 'exact' needs exact draws of the model: pass exact_samples= or use a model whose "
                    "energy can `sample` (with no base and temperature 1); reverse='data' starts at the data instead"
                )
        else:
            if data is None:
                raise ValueError("reverse: 'data' (or True without exact draws) needs data=; pass data or exact_samples=")
            x = data
        if x.shape[0] > self.num_chains:
            x = x[jax.random.permutation(key, x.shape[0])[: self.num_chains]]
        return jnp.asarray(x, jnp.result_type(float)), kind

    def estimate(
        self,
        model: Any,
        key: PRNGKeyArray,
        *,
        data: Float[Array, "n *event"] | None = None,
        exact_samples: Float[Array, "m *event"] | None = None,
        **kwargs,
    ) -> LogZEstimate:
        """Run AIS (and reverse AIS if ``reverse``) on ``model``; see the class docstring."""
        model, data, event_shape, base = prepare("AIS", model, data, self.base, kwargs)
        k_rev_start, k_run = jax.random.split(key)
        rev_x, rev_kind = self._reverse_start(model, data, exact_samples, event_shape, k_rev_start)
        betas_np = self.betas
        betas = jnp.asarray(betas_np, jnp.result_type(float))
        out = _run_ais(
            AnnealedTarget(model, base), self.kernel, betas, self.num_chains, event_shape, k_run,
            self.num_mcmc_steps, rev_x,
        )
        log_z, stderr, ess = summarise_log_weights(out["log_weights"])
        diagnostics = {"schedule": betas, "acceptance_rate": out["acceptance_rate"]}
        upper = gap = None
        if rev_x is not None:
            neg_upper, rev_stderr, rev_ess = summarise_log_weights(out["reverse_log_weights"])
            upper = -neg_upper
            gap = upper - log_z
            diagnostics.update(
                reverse_log_weights=out["reverse_log_weights"],
                reverse_acceptance_rate=out["reverse_acceptance_rate"],
                reverse_stderr=rev_stderr,
                reverse_ess=rev_ess,
                reverse_start=rev_kind,
            )
        return LogZEstimate(
            log_z=log_z, stderr=stderr, ess=ess, log_weights=out["log_weights"], diagnostics=diagnostics,
            log_z_lower=log_z, log_z_upper=upper, gap=gap,
        )

