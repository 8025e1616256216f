"""The host side of ``fit``: Python runs once per chunk of compiled steps, for progress,
history, callbacks, checkpoints and the divergence guard."""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Sequence

import equinox as eqx
import numpy as np
from jaxtyping import Array

from ._checkpoint import save_checkpoint
from ._hosts import is_writer
from ._guard import DivergenceGuard, Probe
from ._progress import Progress
from ._train_step import Carry, StepSpec, check_same_signature, host_scalar, run_chunk, signature


class TrainingDivergedError(RuntimeError):
    """Training diverged: a loss, gradient or parameter went non-finite, or the energies
    blew up (see ``DivergenceGuard``).

    Attributes:
        model: the last healthy model (from before the blow-up began).
        step: the number of updates that had been applied to ``model``.
        state: the strategy state that goes with ``model``.
        history: the metrics history up to the last complete chunk.
    """

    def __init__(self, message: str, *, model: Any, step: int, state: Any, history: dict):
        super().__init__(message)
        self.model = model
        self.step = step
        self.state = state
        self.history = history


TROUBLESHOOTING = (
    "Usual causes: a learning rate too large for the energy's scale; a sampler step size too large "
    "(or a decoupled noise_scale that samples a tempered density); an energy with no base density "
    "or regulariser (energy_reg=) that can fall without bound; a noise level (sigma) far below the "
    "data's scale. fit(..., divergence_guard=DivergenceGuard(rollback=True)) retries with a lower "
    "learning rate."
)


def _chunk_means(metrics: dict[str, Array]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def _metric_scale(means: dict[str, float]) -> float:
    """The magnitude the guard watches in a chunk's metrics: ``|loss|`` and every
    ``energy*`` metric (energies of data, of samples, ...)."""
    vals = [abs(v) for k, v in means.items() if k == "loss" or k.startswith("energy")]
    return max(vals) if vals else 0.0


class _Guard:
    """Host state of the divergence guard: the references and the last healthy carry.

    The statistics come from the chunk itself (``run_chunk``'s ``guard``: energy spread
    and NLL excess before and after it); the references are those before the first chunk
    of this call."""

    def __init__(self, guard: DivergenceGuard | None, carry: Carry, event_size: int):
        self.guard, self.event_size = guard, event_size
        self.rollbacks = 0
        self.healthy = carry
        self.ref: float | None = None
        self.ref_metrics: float | None = None
        self.excess_start: float | None = None
        self.excess_end: float | None = None
        self.warnings: list[str] = []

    def verdict(self, carry: Carry, means: dict[str, float], stats: Any) -> str | None:
        """``None`` when the chunk is fine, else why the run diverged. Updates the last
        healthy carry."""
        nonfinite = bool(carry.diverged)
        if self.guard is None:
            self.healthy = eqx.tree_at(lambda c: c.diverged, carry, host_scalar(False, bool))
            return "the loss, a gradient or a parameter became non-finite" if nonfinite else None
        g, d = self.guard, self.event_size
        (before, excess_before), (spread, excess) = (map(float, row) for row in np.asarray(stats))
        if self.ref is None:
            self.ref = g.reference(before, d)
            self.excess_start = excess_before
        limit, healthy_excess = g.excess_limits(self.excess_start, d)
        scale = _metric_scale(means)
        if self.ref_metrics is None and np.isfinite(scale):
            self.ref_metrics = g.reference(scale, d)
        ref_metrics = self.ref_metrics if self.ref_metrics is not None else np.inf
        if (spread <= g.healthy_growth * self.ref and scale <= g.healthy_growth * ref_metrics
                and excess <= healthy_excess):
            # After a non-finite step the carry holds the last finite update: keep it if healthy.
            self.healthy = eqx.tree_at(lambda c: c.diverged, carry, host_scalar(False, bool))
        if nonfinite:
            return "the loss, a gradient or a parameter became non-finite"
        if not spread <= g.max_growth * self.ref:
            return (
                f"the energy spread on probe points grew to {spread:.3g}, more than max_growth={g.max_growth:g} "
                f"times its reference {self.ref:.3g}"
            )
        if not scale <= g.max_growth * ref_metrics:
            return (
                f"the loss or energy metrics grew to {scale:.3g}, more than max_growth={g.max_growth:g} times "
                f"their first chunk's {ref_metrics:.3g}"
            )
        if not excess <= limit:
            return (
                f"the model's estimated NLL on training examples rose to {excess:.3g} nats above a Gaussian fitted "
                f"to the data, from {self.excess_start:.3g} at the start: more than max_excess={g.max_excess:g} "
                f"nats per dimension ({g.max_excess * d:.3g} for {d}) above it"
            )
        self.excess_end = excess
        return None

    def note(self, message: str, stacklevel: int = 4) -> None:
        """Report ``message`` whatever the progress mode: a ``RuntimeWarning`` (pointing at
        the caller of ``fit``; with several processes, on process 0 only) and a line of
        ``FitResult.warnings`` (on every process)."""
        self.warnings.append(message)
        if is_writer():
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)

    def finish(self) -> None:
        """After training: say so when the model ends far worse than a Gaussian fitted to the
        data, or when a run that rolled back ended worse than it started."""
        if self.guard is None or self.excess_end is None or self.excess_start is None:
            return
        end, start, d = self.excess_end, self.excess_start, self.event_size
        if end > self.guard.max_excess * d:
            self.note(
                f"[declebm] the trained model's estimated NLL on training examples is {end:.3g} nats above a "
                f"Gaussian fitted to the data ({start:.3g} before training), more than "
                f"max_excess={self.guard.max_excess:g} nats per dimension ({self.guard.max_excess * d:.3g} for {d}): "
                "its density misses the data. Usual causes: a base density far from the data (NCE's noise, made "
                "the base, fitted elsewhere), an energy at an absurd scale, too few steps to train it.",
                stacklevel=5,
            )
        if self.rollbacks and end > start + 0.05 * d:
            self.note(
                f"[declebm] training rolled back {self.rollbacks} time(s) and ended worse than it started: the "
                f"model's estimated NLL on training examples is {end:.3g} nats above a Gaussian fitted "
                f"to the data, against {start:.3g} before training. Lower the learning rate further "
                "or see the usual causes in TrainingDivergedError's message.",
                stacklevel=5,
            )


def _run_chunk(spec: StepSpec, carry: Carry, data: Any, stop: Any, probe: Probe | None):
    try:
        return run_chunk(spec, carry, data, carry.step, stop, probe)
    except TypeError as e:
        # A step that changes the type of what it carries: say which leaf, in one line.
        lines = [ln.strip() for ln in str(e).splitlines() if "carry component" in ln]
        if not lines:
            raise
        raise TypeError(
            "fit: a training step must keep the shape and dtype of what it carries: "
            + lines[0].replace("c.", "", 1)
        ) from None


def train_loop(
    spec: StepSpec,
    carry: Carry,
    data: Any,
    *,
    num_steps: int,
    history: dict[str, list],
    guard: DivergenceGuard | None,
    probe: Probe | None,
    event_size: int,
    callbacks: Sequence[Callable],
    progress: str,
    checkpoint_dir: str | None,
    checkpoint_every: int | None,
    run: dict | None,
    resumed_from: int | None = None,
) -> tuple[Carry, dict[str, list], tuple[str, ...]]:
    """Run chunks until ``num_steps`` updates are applied or a callback stops training.
    Returns the carry, the history and the guard's reports (rollbacks, a worse end).
    ``resumed_from``: the step of the checkpoint this run continues from, announced first."""
    static = spec.static
    watch = _Guard(guard, carry, event_size)
    bar = Progress(num_steps, progress, initial=int(carry.step))
    if resumed_from is not None:
        left = max(num_steps - resumed_from, 0)
        bar.message(f"[declebm] resuming from step {resumed_from} (checkpoint in {checkpoint_dir}); "
                    f"{left} of {num_steps} steps left")
    t_start = time.perf_counter() - (history["time"][-1] if history.get("time") else 0.0)
    next_ckpt = (int(carry.step) // checkpoint_every + 1) * checkpoint_every if checkpoint_every else None
    sig = signature(carry)
    stop = host_scalar(num_steps, np.int32)

    def checkpoint(c: Carry) -> None:
        save_checkpoint(checkpoint_dir, c, history, step=int(c.step), run=run)

    try:
        while int(carry.step) < num_steps:
            carry, metrics, stats = _run_chunk(spec, carry, data, stop, probe)
            check_same_signature(sig, signature(carry))
            means = _chunk_means(metrics)
            why = watch.verdict(carry, means, stats)
            if why is not None:
                healthy = watch.healthy
                if guard is not None and guard.rollback and watch.rollbacks < guard.max_rollbacks:
                    watch.rollbacks += 1
                    now = int(carry.step)
                    carry = eqx.tree_at(lambda c: c.lr_scale, healthy, healthy.lr_scale * guard.lr_factor)
                    watch.note(
                        f"[declebm] training diverged by step {now}: {why}; "
                        f"rollback {watch.rollbacks}/{guard.max_rollbacks} to step {int(carry.step)} with the "
                        f"learning rate scaled by {float(carry.lr_scale):.3g}"
                    )
                    continue
                step, now = int(healthy.step), int(carry.step)
                where = f"at step {now + 1}" if bool(carry.diverged) else f"by step {now}"
                raise TrainingDivergedError(
                    f"training diverged {where}: {why}. `.model` is the last healthy model, "
                    f"after {step} steps. {TROUBLESHOOTING}",
                    model=eqx.combine(healthy.params, static),
                    step=step,
                    state=healthy.strategy_state,
                    history={k: np.asarray(v) for k, v in history.items()},
                )
            step = int(carry.step)
            for k, v in means.items():
                history.setdefault(k, []).append(v)
            history.setdefault("step", []).append(step)
            history.setdefault("time", []).append(time.perf_counter() - t_start)
            bar.update(step, means)
            stop_early = False
            if callbacks:
                model = eqx.combine(carry.params, static)
                for cb in callbacks:
                    stop_early = (cb(step, means, model) is True) or stop_early
            if checkpoint_dir is not None and (step >= num_steps or stop_early or (next_ckpt and step >= next_ckpt)):
                checkpoint(carry)
                if next_ckpt:
                    next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
            if stop_early:
                break
    except KeyboardInterrupt:
        if checkpoint_dir is not None:
            checkpoint(carry if not bool(carry.diverged) else watch.healthy)
        raise
    finally:
        bar.close()
    watch.finish()
    return carry, history, tuple(watch.warnings)
