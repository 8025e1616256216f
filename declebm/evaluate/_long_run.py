r"""Long-run diagnosis: does the model's density match what its short chains show?

Short-run MCMC training (chains from noise for a few steps) can learn an energy whose
k-step samples look right while its density is wrong: run the chains longer and they
drift to where the density really puts its mass (Nijkamp et al. 2019, 2020; Gagnon &
Lajoie 2022). ``long_run`` runs long chains on a trained model from noise and from data,
and reports how sample quality (MMD to held-out data) and energy evolve with chain
length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_examples, check_key, check_number, check_positive, strong_dtypes
from .._ebm import EBM, check_energy
from .._sample import draw_noise, fit_noise, initial_positions
from .._sampler import AbstractSampler
from ._mmd import median_bandwidth, mmd

_NULL_DRAWS = 30


@dataclasses.dataclass(frozen=True)
class LongRunReport:
    r"""What ``long_run`` found. Arrays are indexed like ``chain_lengths``.

    Attributes:
        chain_lengths: the checkpoints, in sampler steps (increasing).
        mmd_from_noise, mmd_from_data: squared MMD (``evaluate.mmd``, unbiased, fixed
            bandwidth) of the chains started from noise / from data to the reference
            (held-out) data, at each length.
        energy_from_noise, energy_from_data: mean energy ``E(x)`` of those chains.
        energy_reference: mean energy of the reference data.
        mmd_null: mean squared MMD of ``num_chains`` training examples to the reference
            (what a perfect sampler of the data would score, about 0), and
            ``mmd_null_level`` its mean + 3 standard deviations over 30 draws: values
            below it are indistinguishable from data at this sample size.
        drift_score: ``max(0, MMD^2 at the longest length, both starts) /
            max(min MMD^2 over all lengths and starts, mmd_null_level)``: how much worse
            the long-run samples are than the best the chains ever were (or than the
            data-vs-data noise floor). ``inf`` if the chains became non-finite.
        drifts: ``drift_score > drift_factor``: the long-run samples move away from the
            data, so the density is not what short chains suggest.
        drift_factor: the threshold used.
        bandwidth: the Gaussian kernel bandwidth(s) of every MMD here (several: a mixture).
        acceptance_rate: the sampler's mean acceptance rate over all steps.
        samples_from_noise, samples_from_data: the chains at each length,
            shape ``(len(chain_lengths), num_chains, *event_shape)`` (for plots).
    """

    chain_lengths: tuple[int, ...]
    mmd_from_noise: np.ndarray
    mmd_from_data: np.ndarray
    energy_from_noise: np.ndarray
    energy_from_data: np.ndarray
    energy_reference: float
    mmd_null: float
    mmd_null_level: float
    drift_score: float
    drifts: bool
    drift_factor: float
    bandwidth: tuple[float, ...]
    acceptance_rate: float
    samples_from_noise: np.ndarray = dataclasses.field(repr=False)
    samples_from_data: np.ndarray = dataclasses.field(repr=False)

    def table(self) -> str:
        """The per-length numbers as a markdown table."""
        rows = [
            "| steps | MMD² from noise | MMD² from data | energy from noise | energy from data |",
            "|---:|---:|---:|---:|---:|",
        ]
        for i, t in enumerate(self.chain_lengths):
            rows.append(
                f"| {t} | {self.mmd_from_noise[i]:.4g} | {self.mmd_from_data[i]:.4g} | "
                f"{self.energy_from_noise[i]:.4g} | {self.energy_from_data[i]:.4g} |"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        n = self.samples_from_noise.shape[1]
        verdict = (
            f"DRIFTS (score {self.drift_score:.3g} > {self.drift_factor:g}): long-run samples move away from the "
            "data; the model's density differs from what its short chains show"
            if self.drifts
            else f"stable (score {self.drift_score:.3g} <= {self.drift_factor:g}): long-run samples are as close to "
            "the data as the best short-run ones"
        )
        return (
            f"Long-run diagnosis: {n} chains, squared MMD to held-out data "
            f"(bandwidth {', '.join(f'{b:.3g}' for b in self.bandwidth)}), "
            f"acceptance {self.acceptance_rate:.3g}\n"
            f"{self.table()}\n"
            f"data-vs-data MMD²: {self.mmd_null:.3g} (noise level {self.mmd_null_level:.3g}); "
            f"held-out data energy {self.energy_reference:.4g}\n"
            f"verdict: {verdict}"
        )


def _check_lengths(chain_lengths: Any) -> tuple[int, ...]:
    if isinstance(chain_lengths, (int, np.integer)) and not isinstance(chain_lengths, bool):
        chain_lengths = (chain_lengths,)
    try:
        lengths = list(chain_lengths)
    except TypeError as e:
        raise TypeError(f"chain_lengths: expected a sequence of positive integers, got {chain_lengths!r}") from e
    if not lengths:
        raise ValueError("chain_lengths: expected at least one chain length")
    for t in lengths:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
            raise ValueError(f"chain_lengths: every length must be a positive integer (sampler steps), got {t!r}")
    return tuple(sorted({int(t) for t in lengths}))


@eqx.filter_jit
def _run_checkpoints(
    sampler: AbstractSampler, model: EBM, x0: Array, lengths: tuple[int, ...], key: PRNGKeyArray, condition: dict
):
    """One set of chains run to ``max(lengths)`` steps, positions saved at each length:
    a ``lax.scan`` over segments of ``gcd(lengths)`` steps, each a scan of steps."""
    seg = math.gcd(*lengths)
    num_segments = lengths[-1] // seg
    targets = jnp.asarray(lengths, jnp.int32)
    saved0 = jnp.zeros((len(lengths),) + x0.shape, x0.dtype)
    state0 = sampler.init(model, x0, **condition)

    def segment(carry, inp):
        state, saved = carry
        index, k = inp

        state, info = sampler.scan_steps(model, state, jax.random.split(k, seg), **condition)
        hit = (targets == (index + 1) * seg).reshape((-1,) + (1,) * x0.ndim)
        saved = jnp.where(hit, state.position[None], saved)
        return (state, saved), jnp.mean(info.acceptance_rate)

    inputs = (jnp.arange(num_segments, dtype=jnp.int32), jax.random.split(key, num_segments))
    (_, saved), acceptance = jax.lax.scan(segment, (state0, saved0), inputs)
    return saved, jnp.mean(acceptance)


@eqx.filter_jit
def _mean_energy(model: EBM, x: Array, condition: dict) -> Array:
    # the condition's arrays are per chain: broadcast them over any leading (length) axis
    lead = x.shape[: x.ndim - len(model.event_shape) - 1]
    e = model.energy_batch(x, **{k: jnp.broadcast_to(v, lead + v.shape) for k, v in condition.items()})
    return jnp.mean(e, axis=tuple(range(1, e.ndim))) if e.ndim > 1 else jnp.mean(e)


def _check_condition(condition: Any, num_chains: int) -> dict[str, Array]:
    if condition is None:
        return {}
    if not isinstance(condition, dict):
        raise TypeError(f"condition: expected a dict of keyword arrays for the energy, got {type(condition).__name__}")
    out = {}
    for k, v in condition.items():
        v = jnp.asarray(v)
        if v.ndim == 0:
            v = jnp.broadcast_to(v, (num_chains,))
        if v.shape[0] != num_chains:
            raise ValueError(f"condition: {k!r} needs one row per chain (leading axis {num_chains}), got shape {v.shape}")
        out[k] = v
    return out


def long_run(
    model: EBM,
    sampler: AbstractSampler,
    *,
    data: Any,
    reference: Any,
    key: PRNGKeyArray,
    chain_lengths: Sequence[int] = (100, 1_000, 10_000),
    num_chains: int = 500,
    noise: str | Any = "gaussian",
    bandwidth: float | Sequence[float] | None = None,
    drift_factor: float = 3.0,
    condition: dict[str, Any] | None = None,
) -> LongRunReport:
    r"""Run long chains of ``sampler`` on a trained ``model`` from noise and from data,
    and report how sample quality and energy evolve with chain length.

    ``num_chains`` chains start from noise and ``num_chains`` from training examples;
    all run once up to ``max(chain_lengths)`` steps, with positions recorded at every
    length. At each length the report gives the squared MMD (``evaluate.mmd``, one fixed
    Gaussian bandwidth: the median heuristic on ``reference`` unless given) of each set
    of chains to ``reference``, and their mean energy. A model whose density matches
    the data keeps chains from data near the data at every length, and brings chains
    from noise there; a model trained with short chains from noise (``ShortRunML``) can
    have good short-run samples while its long-run chains drift to where its density
    really puts mass. ``drifts`` flags that: the worst long-run MMD exceeds
    ``drift_factor`` times the best MMD seen along the chains (or the data-vs-data
    noise level, whichever is larger). The verdict is about the model *with this
    sampler*: an unadjusted sampler's step-size bias also shows as drift.

    Arguments:
        model: the trained ``EBM``.
        sampler: any ``AbstractSampler`` (``Langevin``, ``MALA``, ...), e.g. the one
            used for training; its ``init``/``step`` are called on ``model``.
        data: training examples ``(n, *event_shape)``: the start of the chains from
            data, the Gaussian the noise start is fitted to, and the data-vs-data
            baseline.
        reference: held-out examples ``(m, *event_shape)``, not in ``data``: every
            MMD is measured against them.
        key: a ``jax.random.key``.
        chain_lengths: the lengths (sampler steps) at which to record; e.g. the training
            chain length ``k``, ``10k``, ``100k``.
        num_chains: chains per start (at least 2).
        noise: the noise start: ``"gaussian"`` (a diagonal Gaussian fitted to ``data``,
            as the MCMC strategies' default), ``"base"`` (the model's base density, or a
            standard normal: ``declebm.sample``'s default start), or an array of
            ``num_chains`` start points.
        bandwidth: the MMD kernel bandwidth(s); default ``median_bandwidth(reference)``.
        drift_factor: threshold on ``drift_score`` (> 1).
        condition: keyword arrays for the energy, one row per chain (leading axis
            ``num_chains``), for a *conditional* model, e.g. one level of
            ``DiffusionRecoveryLikelihood.conditional_model`` with ``{"level": t,
            "x_next": x_{t+1}}``: chain ``i`` of each start targets the density given row
            ``i``. The data start is a random training example, not the one row ``i`` was
            made from. ``energy_reference`` is then ``nan`` (the held-out examples have no
            condition).

    Returns:
        a ``LongRunReport``; ``print(report)`` shows the table and the verdict.
    """
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(f"sampler: expected a sampler such as Langevin(step_size=...), got {type(sampler).__name__}")
    check_key(key)
    lengths = _check_lengths(chain_lengths)
    check_positive(num_chains, "num_chains", integer=True)
    if num_chains < 2:
        raise ValueError(f"num_chains: the MMD needs at least 2 chains, got {num_chains}")
    drift_factor = check_number(drift_factor, "drift_factor", low=1.0, low_open=True)
    model = strong_dtypes(model)
    data = check_examples(data, "data", model.event_shape)
    if model.event_shape is None:
        model = model.with_event_shape(data.shape[1:])
    reference = check_examples(reference, "reference", model.event_shape)
    if reference.shape[0] < 2:
        raise ValueError("reference: the MMD needs at least 2 held-out examples")
    condition = _check_condition(condition, num_chains)
    check_energy(model, model.event_shape, data.dtype, **{k: v[0] for k, v in condition.items()})
    if bandwidth is not None:
        mmd(reference[:2], reference[:2], bandwidth=bandwidth)  # checks bandwidth before the long run

    k_noise, k_data, k_run, k_null = jax.random.split(key, 4)
    n_data = data.shape[0]
    # ---- the two starts ------------------------------------------------------------
    if isinstance(noise, str):
        if noise == "gaussian":
            x_noise = draw_noise(*fit_noise(data, "gaussian"), "gaussian", num_chains, k_noise)
        elif noise == "base":
            x_noise = initial_positions(model, num_chains, k_noise)
        else:
            raise ValueError(f"noise: expected 'gaussian', 'base' or an array of start points, got {noise!r}")
    else:
        x_noise = check_examples(noise, "noise", model.event_shape)
        if x_noise.shape[0] != num_chains:
            raise ValueError(f"noise: expected {num_chains} start points (num_chains), got {x_noise.shape[0]}")
    if num_chains <= n_data:
        idx = jax.random.permutation(k_data, n_data)[:num_chains]
    else:
        idx = jax.random.randint(k_data, (num_chains,), 0, n_data)
    x_data = data[idx]

    # ---- run once to the longest length, recording at each ---------------------------
    x0 = jnp.concatenate([x_noise.astype(data.dtype), x_data])
    both = {k: jnp.concatenate([v, v]) for k, v in condition.items()}
    saved, acceptance = _run_checkpoints(sampler, model, x0, lengths, k_run, both)
    from_noise, from_data = saved[:, :num_chains], saved[:, num_chains:]

    # ---- quality and energy ------------------------------------------------------------
    h = median_bandwidth(reference) if bandwidth is None else bandwidth
    finite = bool(jnp.all(jnp.isfinite(saved)))

    def score(x):
        if not bool(jnp.all(jnp.isfinite(x))):
            return float("inf")
        return float(mmd(x, reference, bandwidth=h))

    mmd_noise = np.array([score(from_noise[i]) for i in range(len(lengths))])
    mmd_data = np.array([score(from_data[i]) for i in range(len(lengths))])
    energy_noise = np.asarray(_mean_energy(model, from_noise, condition), dtype=np.float64).reshape(-1)
    energy_data = np.asarray(_mean_energy(model, from_data, condition), dtype=np.float64).reshape(-1)
    energy_reference = float(_mean_energy(model, reference, {})) if not condition else float("nan")

    # ---- what data itself scores: the noise floor of the MMD at this sample size ------
    n_null = min(num_chains, n_data)
    null = np.array(
        [
            float(mmd(data[jax.random.permutation(k, n_data)[:n_null]], reference, bandwidth=h))
            for k in jax.random.split(k_null, _NULL_DRAWS)
        ]
    )
    null_mean, null_level = float(null.mean()), float(null.mean() + 3.0 * null.std(ddof=1))

    # ---- verdict -------------------------------------------------------------------------
    if not finite:
        drift_score = float("inf")
    else:
        final = max(mmd_noise[-1], mmd_data[-1])
        best = min(mmd_noise.min(), mmd_data.min())
        drift_score = float(max(final, 0.0) / max(best, null_level, 1e-12))
    h_value = tuple(float(b) for b in np.asarray(h, dtype=np.float64).reshape(-1))
    return LongRunReport(
        chain_lengths=lengths,
        mmd_from_noise=mmd_noise,
        mmd_from_data=mmd_data,
        energy_from_noise=energy_noise,
        energy_from_data=energy_data,
        energy_reference=energy_reference,
        mmd_null=null_mean,
        mmd_null_level=null_level,
        drift_score=drift_score,
        drifts=bool(drift_score > drift_factor),
        drift_factor=float(drift_factor),
        bandwidth=h_value,
        acceptance_rate=float(acceptance),
        samples_from_noise=np.asarray(from_noise),
        samples_from_data=np.asarray(from_data),
    )
