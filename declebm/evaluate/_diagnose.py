r"""One-call sampler diagnosis: acceptance, ESS, R-hat and KSD, with warnings when a
sampler is clearly mistuned."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
from jaxtyping import PRNGKeyArray

from .._checks import check_positive
from .._diagnostics import ChainDiagnostics
from .._ebm import EBM
from .._sample import sample
from .._sampler import AbstractSampler
from ._ksd import ksd as _ksd


class SamplerWarning(UserWarning):
    """A sampler looks mistuned or its chains have not mixed (``evaluate.diagnose``)."""


@dataclasses.dataclass(frozen=True)
class DiagnosisReport:
    r"""What ``diagnose`` found.

    Attributes:
        acceptance_rate: mean acceptance over chains and the second half of the steps.
        target_acceptance: the sampler's optimal acceptance (``None`` when it has no
            Metropolis step, e.g. unadjusted Langevin).
        ess_min, ess_median: the smallest and the median bulk ESS over coordinates
            (all chains together, second half of the trace).
        rhat_max: the largest rank-normalised split R-hat over coordinates (``nan`` when
            a coordinate never moved in any chain).
        ksd: squared kernel Stein discrepancy (IMQ, U-statistic) of the final positions
            to the model (``evaluate.ksd``); about 0 for good samples, ``nan`` if not computed.
        num_chains, num_steps, trace_every: the run's settings.
        problems: the warnings issued, one sentence each (empty: nothing flagged).
        diagnostics: the full ``ChainDiagnostics`` (trace, per-step acceptance,
            per-coordinate ESS and R-hat).
        samples: the final positions ``(num_chains, *event_shape)``.
    """

    acceptance_rate: float
    target_acceptance: float | None
    ess_min: float
    ess_median: float
    rhat_max: float
    ksd: float
    num_chains: int
    num_steps: int
    trace_every: int
    problems: tuple[str, ...]
    diagnostics: ChainDiagnostics = dataclasses.field(repr=False)
    samples: np.ndarray = dataclasses.field(repr=False)

    @property
    def ok(self) -> bool:
        """Nothing was flagged."""
        return not self.problems

    def __str__(self) -> str:
        target = "" if self.target_acceptance is None else f" (target {self.target_acceptance:.3g})"
        lines = [
            f"Sampler diagnosis: {self.num_chains} chains x {self.num_steps} steps, trace every {self.trace_every}",
            f"  acceptance {self.acceptance_rate:.3g}{target}",
            f"  bulk ESS min {self.ess_min:.4g}, median {self.ess_median:.4g}; split R-hat max {self.rhat_max:.4g}",
            f"  KSD^2 (IMQ, U-statistic) of the final positions {self.ksd:.4g}",
        ]
        lines += [f"  WARNING: {p}" for p in self.problems] or ["  no problem flagged"]
        return "\n".join(lines)


def diagnose(
    model: EBM,
    sampler: AbstractSampler,
    *,
    key: PRNGKeyArray,
    num_chains: int,
    num_steps: int,
    init: Any = None,
    trace_every: int | None = None,
    compute_ksd: bool = True,
    acceptance_band: tuple[float, float] | None = None,
    rhat_threshold: float = 1.05,
    min_ess: float = 100.0,
    warn: bool = True,
    **kwargs: Any,
) -> DiagnosisReport:
    r"""Run ``num_chains`` chains of ``sampler`` on ``model`` and report whether to trust them.

    One call of ``declebm.sample(..., return_diagnostics=True)``; the report gives the
    acceptance rate, the bulk ESS and rank-normalised split R-hat across chains
    (BlackJAX's estimators, Vehtari et al. 2021) on the second half of the steps, and
    the squared KSD of the final positions (``evaluate.ksd``). It issues a
    ``SamplerWarning`` (``warnings.warn``) when

    - the acceptance rate is outside ``acceptance_band``, by default from half the
      sampler's ``target_acceptance`` (MALA 0.574, HMC 0.651, NUTS 0.8) to 0.97: below,
      the step is too large and chains stick; above, it is too small and chains crawl.
      The upper edge is lenient because the targets are high-dimensional optima: in a
      few dimensions a well-tuned sampler accepts more often (MALA ~0.85 in 2-D);
    - the largest R-hat exceeds ``rhat_threshold`` (or is NaN: a coordinate never moved):
      the chains disagree, e.g. stuck in different modes or not yet converged;
    - the smallest ESS is below ``min_ess`` (Vehtari et al. ask for ~100 per chain for
      reliable R-hat; 100 in total is the least for any estimate).

    Arguments:
        model: the ``EBM``.
        sampler: any ``AbstractSampler``.
        key: a ``jax.random.key``.
        num_chains: chains (at least 2 for the KSD; R-hat wants several, from dispersed
            starts).
        num_steps: steps per chain.
        init: start positions ``(num_chains, *event_shape)``; default the model's base
            density (a standard normal without one), as ``sample``.
        trace_every: steps between recorded draws (default ``num_steps // 1000``, at least 1).
        compute_ksd: compute the KSD (``O(num_chains^2)``).
        acceptance_band, rhat_threshold, min_ess: the warning thresholds.
        warn: issue the warnings (they are in ``report.problems`` either way).
        **kwargs: extra inputs of the energy (e.g. a noise level).

    Returns:
        a ``DiagnosisReport``; ``print(report)`` summarises it.
    """
    check_positive(num_chains, "num_chains", integer=True)
    if acceptance_band is not None:
        lo, hi = (float(v) for v in acceptance_band)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"acceptance_band: expected (low, high) with 0 <= low < high <= 1, got {acceptance_band!r}")
    check_positive(rhat_threshold, "rhat_threshold")
    check_positive(min_ess, "min_ess", allow_zero=True)
    x, diag = sample(
        model, sampler, num_steps=num_steps, key=key, num_samples=None if init is not None else num_chains,
        init=init, return_diagnostics=True, trace_every=trace_every, **kwargs,
    )
    if x.shape[0] != num_chains:
        raise ValueError(f"init: expected {num_chains} start points (num_chains), got {x.shape[0]}")
    every = num_steps // diag.trace.shape[1]
    half = diag.acceptance_rate.shape[0] // 2
    acceptance = float(np.mean(np.asarray(diag.acceptance_rate[half:])))
    ess = np.asarray(diag.ess, dtype=np.float64).reshape(-1)
    rhat = np.asarray(diag.rhat, dtype=np.float64).reshape(-1)
    ess_min, ess_median = float(np.min(ess)), float(np.median(ess))
    rhat_max = float("nan") if np.any(np.isnan(rhat)) else float(np.max(rhat))
    k = float(_ksd(model, x, **kwargs)) if compute_ksd and num_chains >= 2 else float("nan")

    problems = []
    target = getattr(sampler, "target_acceptance", None)
    name = type(sampler).__name__
    band = acceptance_band if acceptance_band is not None else (None if target is None else (0.5 * target, 0.97))
    if band is not None and not band[0] <= acceptance <= band[1]:
        how = "too large: chains stick" if acceptance < band[0] else "too small: chains crawl"
        problems.append(
            f"{name} acceptance {acceptance:.3g} is outside [{band[0]:.3g}, {band[1]:.3g}] around its target "
            f"{target}; the step size is probably {how}"
        )
    if math.isnan(rhat_max) or rhat_max > rhat_threshold:
        what = "NaN (some coordinate never moved)" if math.isnan(rhat_max) else f"{rhat_max:.3g}"
        problems.append(
            f"split R-hat {what} exceeds {rhat_threshold:g}: the chains have not mixed "
            "(stuck, in different modes, or too short)"
        )
    if not ess_min >= min_ess:
        problems.append(f"bulk ESS {ess_min:.3g} is below {min_ess:g}: too few effective draws; run longer or retune")
    if warn:
        for p in problems:
            warnings.warn(p, SamplerWarning, stacklevel=2)
    return DiagnosisReport(
        acceptance_rate=acceptance,
        target_acceptance=target,
        ess_min=ess_min,
        ess_median=ess_median,
        rhat_max=rhat_max,
        ksd=k,
        num_chains=int(num_chains),
        num_steps=int(num_steps),
        trace_every=int(every),
        problems=tuple(problems),
        diagnostics=diag,
        samples=np.asarray(x),
    )
