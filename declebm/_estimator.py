"""The log-normaliser estimator contract: log Z of a model, with error bars and bounds."""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._repr import hyperparameter_repr


class LogZEstimate(NamedTuple):
    r"""An estimate of ``log Z = log \int p~(x) dx``, as an estimator reports it.

    Attributes:
        log_z: the point estimate, ``log mean_i exp(log_weights_i)``.
        stderr: its standard error (delta method on the mean of the weights:
            ``std(w) / (sqrt(n) mean(w))``, ``w = exp(log_weights)``).
        ess: effective sample size of the weights, ``(sum w)^2 / sum w^2`` (between 1
            and their number; a small value means the estimate rests on few chains).
        log_weights: the numbers averaged in log space to give ``log_z``: for AIS the
            log importance weight of each chain, for SMC the log Z of each independent run.
        diagnostics: estimator-specific arrays, e.g. the acceptance rate at each
            temperature and the schedule.
        log_z_lower: a stochastic lower bound on ``log Z``: ``E[log_z_lower] <= log Z``
            because ``exp(log_z_lower)`` is an unbiased estimate of ``Z`` (Jensen). For
            forward AIS and SMC it is ``log_z`` itself.
        log_z_upper: a stochastic upper bound from reverse AIS (bidirectional Monte
            Carlo, Grosse et al. 2015), ``None`` when no reverse run was made.
        gap: ``log_z_upper - log_z_lower`` (``None`` without a reverse run): how far
            apart the two sides are; when it is large, more temperatures or better
            transitions are needed before ``log_z`` can be trusted.
        reliable: ``False`` when a check of the run failed (``warnings`` says which):
            then ``log_z`` and ``stderr`` are not to be trusted. ``None``: not checked.
        warnings: one sentence per failed check (also issued as ``RuntimeWarning``).
    """

    log_z: Float[Array, ""]
    stderr: Float[Array, ""]
    ess: Float[Array, ""]
    log_weights: Float[Array, " n"]
    diagnostics: dict[str, Any]
    log_z_lower: Float[Array, ""] | None = None
    log_z_upper: Float[Array, ""] | None = None
    gap: Float[Array, ""] | None = None
    reliable: bool | None = None
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        def num(v):
            return "None" if v is None else f"{float(v):.4g}"

        parts = [f"log_z={num(self.log_z)}", f"stderr={num(self.stderr)}", f"ess={num(self.ess)}"]
        if self.log_z_upper is not None:
            parts += [f"log_z_upper={num(self.log_z_upper)}", f"gap={num(self.gap)}"]
        parts.append(f"reliable={self.reliable}")
        if self.warnings:
            parts.append(f"warnings={len(self.warnings)}")
        return f"LogZEstimate({', '.join(parts)})"


def summarise_log_weights(log_weights: Float[Array, " n"]) -> tuple[Array, Array, Array]:
    r"""``(log mean exp(w), stderr, ess)`` of log weights ``w``, computed stably.

    With ``u = exp(w - max w)``: ``log_mean = max w + log mean u``, the delta-method
    standard error of ``log_mean`` is ``std(u) / (sqrt(n) mean(u))`` and the effective
    sample size is ``(sum u)^2 / sum u^2``. Non-finite weights count as zero weight;
    one weight has no standard error (NaN).
    """
    w = jnp.where(jnp.isfinite(log_weights), log_weights, -jnp.inf)
    n = w.shape[0]
    top = jnp.max(w)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))  # a shift: no gradient of its own
    u = jnp.exp(w - top)
    mean_u = jnp.mean(u)
    log_mean = top + jnp.log(mean_u)
    stderr = jnp.std(u, ddof=1) / (jnp.sqrt(n) * mean_u) if n > 1 else jnp.full((), jnp.nan, u.dtype)
    ess = jnp.sum(u) ** 2 / jnp.sum(u**2)
    return log_mean, stderr, ess


def replicate_stderr(replicate_log_z: Float[Array, " r"]) -> Float[Array, ""]:
    r"""The standard error of ``log mean_r Z_r`` from ``R`` independent replicates, widened
    so that ``log_z +- 1.96 stderr`` is a 95% interval although the spread is itself
    estimated from ``R`` numbers: the larger of the delta-method
    ``std(Z_r) / (sqrt(R) mean(Z_r))`` and ``std(log Z_r) / sqrt(R)``, times
    ``t_{R-1, 0.975} / 1.96`` (Student's t). The second term matters when the replicates
    disagree by many nats: then one ``Z_r`` dominates and the delta method saturates near
    1 nat however far apart they are."""
    r = replicate_log_z.shape[0]
    _, se, _ = summarise_log_weights(replicate_log_z)
    if r < 2:
        return se
    finite = jnp.where(jnp.isfinite(replicate_log_z), replicate_log_z, jnp.nan)
    log_se = jnp.nanstd(finite, ddof=1) / jnp.sqrt(r)
    return jnp.maximum(se, log_se) * (float(_t975(r - 1)) / 1.959964)


def replicate_spread(replicate_log_z: Float[Array, " r"]) -> tuple[float, int]:
    """``(sd, dead)``: the standard deviation (``ddof=1``) of the finite replicate
    ``log Z_r`` (0 with fewer than two) and how many are not finite. A replicate's
    ``log Z_r`` is ``-inf`` when every one of its chains has zero weight (or NaN); the
    pooled estimate then rests on the others, and an sd over all replicates would be NaN,
    which compares false against every threshold, so a disagreement check on it would pass
    silently: callers report ``dead`` replicates as a failed check of their own."""
    z = np.asarray(replicate_log_z, np.float64).reshape(-1)
    finite = z[np.isfinite(z)]
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return sd, int(z.size - finite.size)


def dead_replicates_check(dead: int, total: int, noun: str) -> tuple[bool, str]:
    """The ``(failed, sentence)`` check of :func:`replicate_spread`'s ``dead`` count."""
    return (dead > 0,
            f"{dead} of the {total} {noun} have log Z = -inf or NaN (no chain with a finite weight): they "
            "disagree with the others by an unbounded amount, so the pooled estimate and its stderr rest on the "
            "rest; look for energies that overflow to +inf where the chains start or go")


def _t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    import scipy.stats  # scipy comes with jax

    return float(scipy.stats.t.ppf(0.975, df))


def reliability(checks: list[tuple[bool, str]], owner: str) -> tuple[bool, tuple[str, ...]]:
    """``(reliable, warnings)`` from ``(failed, sentence)`` pairs; each failed check is also
    issued as a ``RuntimeWarning`` naming the estimator."""
    import warnings as _warnings

    said = tuple(msg for failed, msg in checks if failed)
    for msg in said:
        _warnings.warn(f"{owner}: {msg}", RuntimeWarning, stacklevel=4)
    return not said, said


class AbstractLogZEstimator(eqx.Module):
    r"""How ``log Z`` of an unnormalised model ``p~`` is estimated; configured once,
    used by ``evaluate.log_z`` and ``evaluate.log_likelihood`` as ``fit`` uses a strategy.

    Contract: ``estimate(model, key, *, data=None, **kwargs) -> LogZEstimate``, where
    ``model`` has ``log_prob_unnorm(x)`` for one example (an ``EBM``) and ``data``
    (optional, ``(n, *event_shape)``) may be used to fit the starting density or to
    start reverse chains. ``evaluate.log_z(devices=...)`` also passes ``chains_sharding``
    (a ``NamedSharding`` that splits a leading chain axis over the devices) to split the
    chains over devices and processes. Estimators hold only hyperparameters.
    Implementations live in ``declebm.inference`` (``AIS``, ``SMC``).
    """

    def __repr__(self) -> str:
        # The numbers of the hyperparameters, not Equinox's ``weak_f32[]`` (see ``_repr``).
        return hyperparameter_repr(self)

    @abc.abstractmethod
    def estimate(
        self, model: Any, key: PRNGKeyArray, *, data: Float[Array, "n *event"] | None = None, **kwargs
    ) -> LogZEstimate:
        """Estimate ``log Z`` of ``model``."""
