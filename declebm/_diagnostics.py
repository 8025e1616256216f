r"""MCMC convergence diagnostics across chains: a thinned trace, ESS and R-hat.

ESS and R-hat are BlackJAX's rank-normalised split-chain estimators (Vehtari, Gelman,
Simpson, Carpenter & Bürkner 2021): ``blackjax.diagnostics.ess_bulk`` and
``blackjax.diagnostics.rhat``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import blackjax.diagnostics
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._sampler import AbstractSampler, SamplerInfo


class ChainDiagnostics(NamedTuple):
    r"""What ``sample(..., return_diagnostics=True)`` and ``evaluate.diagnose`` report.

    Attributes:
        trace: positions every ``trace_every`` steps, ``(num_chains, num_draws, *event_shape)``.
        acceptance_rate: mean acceptance probability of every step (averaged over
            chains), ``(num_steps,)``; 1 for unadjusted samplers.
        is_divergent: fraction of chains whose step diverged (HMC/NUTS), ``(num_steps,)``.
        ess: bulk effective sample size of each coordinate over all chains, computed on
            the second half of the trace (the first half is burn-in), ``event_shape``.
            0 where a coordinate never moved.
        rhat: rank-normalised split R-hat of each coordinate on that half,
            ``event_shape``; about 1 when the chains agree, above 1.05 (Vehtari et al.
            2021's threshold is 1.01 for final inference) when they have not mixed. NaN
            where no chain moved.
    """

    trace: Float[Array, "chains draws *event"]
    acceptance_rate: Float[Array, " steps"]
    is_divergent: Float[Array, " steps"]
    ess: Float[Array, "*event"]
    rhat: Float[Array, "*event"]


@jax.jit
def ess(trace: Float[Array, "chains draws *event"]) -> Float[Array, "*event"]:
    """Bulk effective sample size per coordinate of a trace ``(chains, draws, *event)``:
    ``blackjax.diagnostics.ess_bulk`` (rank-normalised, split chains), one compiled
    program (run op by op, its ranks, FFTs and reductions compiled about 80 programs)."""
    c, n = trace.shape[:2]
    return blackjax.diagnostics.ess_bulk(trace.reshape(c, n, -1)).reshape(trace.shape[2:])


@jax.jit
def rhat(trace: Float[Array, "chains draws *event"]) -> Float[Array, "*event"]:
    """Rank-normalised split R-hat per coordinate of a trace ``(chains, draws, *event)``:
    ``blackjax.diagnostics.rhat`` (the maximum of the bulk and folded split R-hats), one
    compiled program."""
    c, n = trace.shape[:2]
    return blackjax.diagnostics.rhat(trace.reshape(c, n, -1)).reshape(trace.shape[2:])


def check_trace_every(trace_every: Any, num_steps: int) -> int:
    """Default: about 1000 draws per chain; otherwise a positive integer that leaves at
    least 8 draws (the second half, split in two, gives R-hat 4 draws per half-chain)."""
    if trace_every is None:
        trace_every = max(1, num_steps // 1000)
    if isinstance(trace_every, bool) or not isinstance(trace_every, int) or trace_every < 1:
        raise ValueError(f"trace_every: expected a positive integer (steps between recorded draws), got {trace_every!r}")
    if num_steps // trace_every < 8:
        raise ValueError(
            f"trace_every: {trace_every} leaves {num_steps // trace_every} draws of {num_steps} steps; "
            "ESS and R-hat need at least 8 (lower trace_every or raise num_steps)"
        )
    return trace_every


@eqx.filter_jit
def run_with_trace(
    sampler: AbstractSampler, model: Any, x: Array, num_steps: int, key: PRNGKeyArray, trace_every: int, kwargs: dict
) -> tuple[Array, SamplerInfo, Array]:
    """``sampler.run`` that also records the positions every ``trace_every`` steps.

    The steps use the same keys as ``sampler.run(model, x, num_steps, key)`` (``split(key,
    num_steps)``), so the final positions are the same. The first ``num_steps %
    trace_every`` steps are not recorded. Returns the final positions, the per-step info
    averaged over chains and the trace ``(num_chains, num_draws, *event_shape)``.
    """
    keys = jax.random.split(key, num_steps)
    head = num_steps % trace_every
    num_draws = num_steps // trace_every
    state = sampler.init(model, x, **kwargs)
    infos = []
    if head:
        state, info = sampler.scan_steps(model, state, keys[:head], **kwargs)
        infos.append(info)

    def segment(state, seg_keys):
        state, info = sampler.scan_steps(model, state, seg_keys, **kwargs)
        return state, (state.position, info)

    seg_keys = keys[head:].reshape((num_draws, trace_every) + keys.shape[1:])
    state, (trace, info) = jax.lax.scan(segment, state, seg_keys)
    infos.append(jax.tree.map(lambda a: a.reshape(-1), info))
    info = jax.tree.map(lambda *a: jnp.concatenate(a), *infos)
    return state.position, info, jnp.swapaxes(trace, 0, 1)


def chain_diagnostics(trace: Array, info: SamplerInfo) -> ChainDiagnostics:
    """ESS and R-hat on the second half of ``trace`` (the first half is burn-in)."""
    kept = trace[:, trace.shape[1] // 2 :]
    return ChainDiagnostics(
        trace=trace,
        acceptance_rate=info.acceptance_rate,
        is_divergent=info.is_divergent,
        ess=ess(kept),
        rhat=rhat(kept),
    )
