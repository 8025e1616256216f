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
from declebm._hosts import host_copy
from declebm._estimator import (
    dead_replicates_check,
    reliability,
    replicate_spread,
    replicate_stderr,
    summarise_log_weights,
)

import numpyro.distributions as dist

from ._annealing import (
    AnnealedTarget,
    WhitenedGaussian,
    check_kernel,
    check_chains_sharding,
    draw_start,
    integrability_checks,
    per_example_density,
    prepare,
)
from ._nce import _fitted_gaussian
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


class Preconditioned(eqx.Module):
    r"""The bridge ``f_beta`` in affine coordinates ``z``: ``x = loc + S z`` with ``S`` a
    lower-triangular (dense) or diagonal scale. An MCMC transition that leaves
    ``f_beta(loc + S z)`` invariant in ``z`` leaves ``f_beta`` invariant in ``x`` (a fixed
    bijection with constant Jacobian), so any kernel becomes a preconditioned one: with
    ``S S^T`` the population covariance, the kernel sees a roughly isotropic target."""

    target: AnnealedTarget
    loc: Float[Array, " d"]
    scale: Float[Array, "d d"] | Float[Array, " d"]
    event_shape: tuple[int, ...] = eqx.field(static=True)

    def to_x(self, z: Float[Array, " d"]) -> Float[Array, "*event"]:
        x = self.loc + (self.scale @ z if self.scale.ndim == 2 else self.scale * z)
        return x.reshape(self.event_shape)

    def log_prob_unnorm(self, z: Float[Array, " d"], beta: Float[Array, ""]) -> Float[Array, ""]:
        return self.target.log_prob_unnorm(self.to_x(z), beta)


PRECONDITIONERS = ("auto", "dense", "diagonal", None)


def population_scale(x: Float[Array, "n d"], kind: str) -> tuple[Array, Array, Array]:
    r"""``(loc, S, S^{-1})`` from the chains' positions: their mean, and ``S`` the Cholesky
    factor of their covariance shrunk towards its diagonal,
    ``(1 - l) C + l diag(C)`` with ``l = d / (n + d)`` (dense), or ``sqrt(diag C)``
    (diagonal). Non-finite rows are left out; a jitter of ``1e-6`` of the mean variance
    keeps ``S`` invertible."""
    finite = jnp.all(jnp.isfinite(x), axis=1)
    w = finite.astype(x.dtype) / jnp.maximum(jnp.sum(finite), 1)
    xs = jnp.where(finite[:, None], x, 0.0)
    loc = w @ xs
    xc = jnp.where(finite[:, None], xs - loc, 0.0)
    var = w @ xc**2
    jitter = 1e-6 * jnp.maximum(jnp.mean(var), 1e-30)
    if kind == "diagonal":
        scale = jnp.sqrt(var + jitter)
        return loc, scale, 1.0 / scale
    n, d = x.shape
    cov = (xc * w[:, None]).T @ xc
    lam = d / (n + d)
    cov = (1.0 - lam) * cov + lam * jnp.diag(var) + jitter * jnp.eye(d, dtype=x.dtype)
    scale = jnp.linalg.cholesky(cov)
    inv = jax.scipy.linalg.solve_triangular(scale, jnp.eye(d, dtype=x.dtype), lower=True)
    return loc, scale, inv


def start_scale(base: Any, size: int) -> tuple[Array, Array, Array] | None:
    """``(loc, S, S^{-1})`` of a Gaussian start density (a ``WhitenedGaussian``, i.e. a
    full-covariance fit, or independent ``Normal``s), flattened; ``None`` for any other."""
    if isinstance(base, WhitenedGaussian):
        return base.loc, base.scale_tril, base.whitening
    inner = getattr(base, "base_dist", base)
    if isinstance(inner, dist.Normal):
        loc = jnp.broadcast_to(inner.loc, inner.batch_shape).reshape(-1)
        scale = jnp.broadcast_to(inner.scale, inner.batch_shape).reshape(-1)
        if loc.shape[0] == size:
            return loc, scale, 1.0 / scale
    return None


def preconditioner_kind(precondition: str | None, num_chains: int, size: int) -> str | None:
    """``"auto"``: dense when the population can estimate a covariance (at least ``2 d``
    chains) and ``d <= 256`` (a Cholesky per temperature), else diagonal."""
    if precondition != "auto":
        return precondition
    return "dense" if size <= 256 and num_chains >= 2 * size else "diagonal"


def anneal(
    target: AnnealedTarget,
    kernel: AbstractSampler,
    betas: Float[Array, " T1"],
    x0: Float[Array, "n *event"],
    key: PRNGKeyArray,
    num_mcmc_steps: int = 1,
    precondition: str | tuple | None = None,
    adapt_step_size: bool = False,
) -> dict[str, Array]:
    r"""One AIS sweep over ``betas`` (``b_0, ..., b_T``) from ``x0``, exact draws of ``f_{b_0}``.

    At each ``t = 1..T``: ``log w += (b_t - b_{t-1}) (log p~(x) - log q(x))``, then (for
    ``t < T``) ``num_mcmc_steps`` transitions of ``kernel`` targeting ``f_{b_t}``. Works
    in either direction (reverse AIS passes a decreasing ``betas``).

    Preconditioning: ``precondition = (loc, S, S^{-1})`` runs every transition in the fixed
    coordinates ``z = S^{-1}(x - loc)`` (``Preconditioned``); ``"dense"`` or ``"diagonal"``
    re-estimates them from the population at every temperature (the SMC samplers'
    practice, Chopin & Papaspiliopoulos 2020, ch. 17). A kernel whose parameters depend on
    the chain's own current position is not exactly invariant: measured on a 10-D
    two-mode mixture, population preconditioning biased log Z by +0.14 nats, so ``AIS``
    uses it only in its pilot run. With ``adapt_step_size`` the step size moves after
    each temperature by ``eps <- eps exp(a_t - a*)``, ``a_t`` the mean acceptance and
    ``a*`` the kernel's ``target_acceptance`` (a scalar of the whole population; no bias
    measurable on the same targets).

    Returns the log weights, the acceptance rate and step size at each intermediate
    temperature, the final positions, and whether any energy was NaN. The weights
    accumulate in the default float dtype (float64 under ``jax_enable_x64``).
    """
    deltas = betas[1:] - betas[:-1]
    log_ratio = jax.vmap(target.log_ratio)
    acc_dtype = jnp.result_type(float)
    n = x0.shape[0]
    event_shape = x0.shape[1:]
    size = int(np.prod(event_shape))
    target_acc = float(getattr(kernel, "target_acceptance", 0.574))
    step0 = jnp.asarray(kernel.step_size)

    def increment(x, delta):
        r = log_ratio(x)
        return (delta * r).astype(acc_dtype), jnp.any(jnp.isnan(r))

    def body(carry, inputs):
        x, log_w, step, nan = carry
        delta, beta, k = inputs
        inc, nan_t = increment(x, delta)
        log_w = log_w + inc
        moved = eqx.tree_at(lambda s: s.step_size, kernel, step.astype(step0.dtype)) if adapt_step_size else kernel
        if precondition is None:
            model, z = target, x
        else:
            if isinstance(precondition, str):
                loc, scale, inv = population_scale(x.reshape(n, size), precondition)
            else:
                loc, scale, inv = precondition
            model = Preconditioned(target, loc, scale, event_shape)
            xc = x.reshape(n, size) - loc
            z = xc @ inv.T if scale.ndim == 2 else xc * inv
        state = moved.init(model, z, beta=beta)
        state, info = moved.scan_steps(model, state, jax.random.split(k, num_mcmc_steps), beta=beta)
        z = state.position
        x = jax.vmap(model.to_x)(z) if precondition is not None else z
        acc = jnp.mean(info.acceptance_rate)
        if adapt_step_size:
            new_step = step * jnp.exp(jnp.nan_to_num(acc, nan=0.0) - target_acc)
            step = jnp.clip(new_step, 1e-8, 1e2)
        return (x, log_w, step, nan | nan_t), (acc, jnp.mean(step))

    num_moves = betas.shape[0] - 2
    keys = jax.random.split(key, num_moves)
    log_w0 = jnp.zeros(n, acc_dtype)
    init = (x0, log_w0, step0, jnp.asarray(False))
    (x, log_w, _, nan), (acceptance, steps) = jax.lax.scan(body, init, (deltas[:-1], betas[1:-1], keys))
    inc, nan_t = increment(x, deltas[-1])
    return {"log_weights": log_w + inc, "acceptance_rate": acceptance, "step_size": steps, "positions": x,
            "nan": nan | nan_t}


@eqx.filter_jit
def _run_ais(target, kernel, betas, num_chains, num_replicates, event_shape, key, num_mcmc_steps, reverse_start,
             precondition, adapt_step_size, chains_sharding=None):
    k_start, k_fwd, k_rev = jax.random.split(key, 3)
    per = num_chains // num_replicates

    def replicate(k_s, k_f):
        x0 = draw_start(target.base, per, event_shape, k_s, chains_sharding)
        out = anneal(target, kernel, betas, x0, k_f, num_mcmc_steps, precondition, adapt_step_size)
        out["start_positions"] = x0
        return out

    out = jax.vmap(replicate)(jax.random.split(k_start, num_replicates), jax.random.split(k_fwd, num_replicates))
    if reverse_start is not None:
        rev = anneal(target, kernel, betas[::-1], reverse_start, k_rev, num_mcmc_steps, precondition, adapt_step_size)
        out["reverse_log_weights"] = rev["log_weights"]
        out["reverse_acceptance_rate"] = rev["acceptance_rate"][::-1]
        out["reverse_nan"] = rev["nan"]
    return out


def pilot_start(model, base, kernel, schedule, num_steps, num_chains, event_shape, precondition, num_mcmc_steps,
                adapt_step_size, key, chains_sharding=None):
    r"""A start density from a pilot run: AIS from ``base`` (the standard normal) over
    ``num_steps`` temperatures with the transitions preconditioned from the population,
    then a Gaussian fitted to where its chains end (full covariance for vectors, diagonal
    otherwise), its standard deviations widened by 1.25 so that it has heavier tails than
    the model where the pilot fell short. The pilot only chooses ``q``; an estimate from
    exact draws of that ``q`` stays a valid importance-sampling estimate."""
    pilot_betas = annealing_schedule(schedule, num_steps)
    out = _run_ais(
        AnnealedTarget(model, base), kernel, jnp.asarray(pilot_betas, jnp.result_type(float)), num_chains, 1,
        event_shape, jax.random.fold_in(key, 1), num_mcmc_steps, None, precondition, adapt_step_size, chains_sharding,
    )
    x = host_copy(out["positions"]).reshape((-1,) + tuple(event_shape))
    finite = np.asarray(jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1))
    if finite.sum() < 2:
        return base
    return per_example_density(_fitted_gaussian(x[finite], scale=1.25))


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
    to ``data`` when ``evaluate.log_z``/``log_likelihood`` are given data; else (with
    ``pilot=True``) a Gaussian fitted to where a pilot run from the standard normal ends
    (a quarter of the temperatures, transitions preconditioned from the population; see
    ``pilot_start``). The closer ``q`` is to the model, the fewer temperatures are needed:
    on a 40-D Gaussian with covariance eigenvalues 0.1..500 the standard-normal start
    misses log Z by 9 nats, the pilot's by 0.01.

    Transitions run in the coordinates whitened by ``q``'s mean and scale when ``q`` is a
    Gaussian (``precondition``), and the kernel's step size follows the acceptance from
    temperature to temperature toward its ``target_acceptance`` (``adapt_step_size``).
    The chains are split into ``num_replicates`` independent replicates: ``stderr`` is
    the larger of the weights' delta-method error and the replicates' spread (widened by
    Student's t), because the weights of one run understate the error when every chain
    misses the same mass.

    Reliability: the estimate carries ``reliable`` and ``warnings`` (also issued as
    ``RuntimeWarning``) when the ESS is below 10% of the chains, the acceptance fell
    below 0.05 at some temperature, the replicates disagree beyond what their weights
    claim, chains ran away (a density that may not integrate), or BDMC's gap exceeds 4
    standard errors. An energy that is NaN where chains go is an error naming the model;
    ``+inf`` is a valid constraint (zero density, proposals there are rejected).

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
        num_replicates: independent replicates the chains are split into (8).
        precondition: ``"auto"`` (default), ``"dense"`` or ``"diagonal"``: how the pilot
            estimates the population covariance (``"auto"``: dense for at most 256
            coordinates and at least twice as many chains), and the main run whitens
            by ``q``; ``None``: no preconditioning.
        adapt_step_size: adapt the step size per temperature (True).
        pilot: fit the start to a pilot run when no start is given (True).
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
    num_replicates: int = 8
    precondition: str | None = "auto"
    adapt_step_size: bool = True
    pilot: bool = True

    def __check_init__(self):
        check_positive(self.num_chains, "num_chains", integer=True)
        check_positive(self.num_mcmc_steps, "num_mcmc_steps", integer=True)
        check_positive(self.num_replicates, "num_replicates", integer=True)
        if self.num_chains < 2 * self.num_replicates:
            raise ValueError(
                f"num_chains: expected at least 2 chains per replicate ({2 * self.num_replicates} for "
                f"num_replicates={self.num_replicates}), got {self.num_chains}"
            )
        if not any(self.precondition is p or (isinstance(p, str) and self.precondition == p) for p in PRECONDITIONERS):
            raise ValueError(f"precondition: expected 'auto', 'dense', 'diagonal' or None, got {self.precondition!r}")
        for name in ("adapt_step_size", "pilot"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")
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
        chains_sharding: Any = None,
        **kwargs,
    ) -> LogZEstimate:
        """Run AIS (and reverse AIS if ``reverse``) on ``model``; see the class docstring.
        ``chains_sharding`` (``evaluate.log_z(devices=...)``) splits each replicate's chains
        over its devices; the per-chain results come back whole to every process."""
        model, data, event_shape, base = prepare("AIS", model, data, self.base, kwargs)
        check_chains_sharding(chains_sharding, self.num_chains // self.num_replicates, "the chains per replicate")
        k_rev_start, k_run = jax.random.split(key)
        rev_x, rev_kind = self._reverse_start(model, data, exact_samples, event_shape, k_rev_start)
        betas_np = self.betas
        betas = jnp.asarray(betas_np, jnp.result_type(float))
        size = int(np.prod(event_shape))
        per = self.num_chains // self.num_replicates
        kind = preconditioner_kind(self.precondition, per * self.num_replicates, size)
        start = "given" if self.base is not None else "model.base" if model.base is not None else (
            "data" if data is not None else "standard normal")
        if self.pilot and start == "standard normal":
            base, start = self._pilot_start(model, base, betas_np, per, event_shape, kind, k_run, chains_sharding), "pilot"
        fixed = start_scale(base, size) if self.precondition else None
        out = _run_ais(
            AnnealedTarget(model, base), self.kernel, betas, per * self.num_replicates, self.num_replicates,
            event_shape, k_run, self.num_mcmc_steps, rev_x, fixed, self.adapt_step_size, chains_sharding,
        )
        out = host_copy(out)  # with several processes: the chains of all of them, on every one
        if bool(out["nan"].any()) or bool(out.get("reverse_nan", False)):
            raise ValueError(
                "model: its energy is NaN at positions the AIS chains reached, so it is not a density there; "
                "an energy of +inf is allowed (zero density, the chains reject it), NaN is not"
            )
        log_w = out["log_weights"]  # (R, per)
        log_z, weight_stderr, ess = summarise_log_weights(log_w.reshape(-1))
        rep = jax.vmap(summarise_log_weights)(log_w)
        rep_log_z, rep_weight_se = rep[0], rep[1]
        stderr = jnp.maximum(replicate_stderr(rep_log_z), weight_stderr) if self.num_replicates > 1 else weight_stderr
        acceptance = out["acceptance_rate"]  # (R, T - 1)
        diagnostics = {
            "schedule": betas, "acceptance_rate": jnp.mean(acceptance, 0), "step_size": jnp.mean(out["step_size"], 0),
            "replicate_log_z": rep_log_z, "weight_stderr": weight_stderr, "start": start,
            "precondition": None if fixed is None else ("dense" if fixed[1].ndim == 2 else "diagonal"),
        }
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
        checks = self._checks(model, log_z, ess, acceptance, betas_np, rep_log_z, rep_weight_se, out, gap, stderr)
        reliable, said = reliability(checks, "AIS")
        return LogZEstimate(
            log_z=log_z, stderr=stderr, ess=ess, log_weights=log_w.reshape(-1), diagnostics=diagnostics,
            log_z_lower=log_z, log_z_upper=upper, gap=gap, reliable=reliable, warnings=said,
        )

    def _pilot_start(self, model, base, betas, per, event_shape, kind, key, chains_sharding=None):
        num = max(20, (len(betas) - 1) // 4)
        schedule = self.schedule if isinstance(self.schedule, str) else "sigmoid"
        return pilot_start(model, base, self.kernel, schedule, num, per * self.num_replicates, event_shape,
                           kind if self.precondition else None, self.num_mcmc_steps, self.adapt_step_size, key,
                           chains_sharding)

    def _checks(self, model, log_z, ess, acceptance, betas, rep_log_z, rep_weight_se, out, gap, stderr):
        """``(failed, sentence)`` for each reliability check of a run (see ``LogZEstimate``)."""
        n = int(out["log_weights"].size)
        ess, log_z = float(ess), float(log_z)
        acc = np.asarray(acceptance)
        worst = int(np.argmin(acc.min(0))) if acc.size else 0
        low_acc = float(acc.min()) if acc.size else 1.0
        spread, dead = replicate_spread(rep_log_z)
        # the weights' own claim, over the replicates that have one (a dead replicate's is NaN)
        se = np.asarray(rep_weight_se, np.float64)
        claimed = float(np.median(se[np.isfinite(se)])) if self.num_replicates > 1 and np.isfinite(se).any() else 0.0
        return [
            (not np.isfinite(log_z), f"log_z is {log_z}: no chain has a finite weight"),
            *integrability_checks(model, *(out[k].reshape((n,) + tuple(model.event_shape))
                                           for k in ("start_positions", "positions"))),
            (ess < 0.1 * n,
             f"the effective sample size of the weights is {ess:.3g} of {n} chains (below 10%): log_z rests "
             "on a few chains; use more temperatures (num_steps), a start density closer to the model (base=, or "
             "data=), or more transitions (num_mcmc_steps)"),
            (low_acc < 0.05,
             f"the acceptance rate fell to {low_acc:.3g} (at inverse temperature {float(betas[worst + 1]):.3g}): the "
             "chains stopped moving there; lower the kernel's step size or let it adapt (adapt_step_size=True)"),
            dead_replicates_check(dead, self.num_replicates, "replicates"),
            (self.num_replicates > 1 and spread > max(3.0 * claimed, 0.05),
             f"the {self.num_replicates} replicates disagree: their log Z spread (sd {spread:.3g}) is more than 3 times "
             f"what each one's weights claim ({claimed:.3g}); stderr reports the spread, but the weights are not "
             "trustworthy (more temperatures, chains or transitions)"),
            (gap is not None and float(gap) > max(4.0 * float(stderr), 0.1),
             f"the reverse (upper) and forward (lower) estimates are {float(gap if gap is not None else 0):.3g} nats "
             "apart, more than 4 standard errors: the bracket does not hold log Z tightly"),
        ]
