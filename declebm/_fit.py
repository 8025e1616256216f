"""``fit``: one entry point, configured by a strategy object."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._checks import check_examples, check_key, check_positive
from ._checkpoint import load_checkpoint, save_checkpoint
from ._ebm import EBM, check_energy, trainable_filter
from ._strategy import AbstractStrategy


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss, gradient or parameter.

    Attributes:
        model: the last good model (before the step that diverged).
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


class FitResult(eqx.Module):
    """What ``fit`` returns.

    model: the trained model. state: the strategy's final state (chains, buffer, ...).
    history: per-chunk means of every metric, with ``step`` (updates done at the end
    of the chunk) and ``time`` (seconds since the start, compilation included).
    ema_model: the exponential moving average of the parameters, when ``ema_decay`` is set.
    opt_state: the optimizer state. step: number of updates applied.
    """

    model: Any
    state: Any
    history: dict[str, np.ndarray]
    ema_model: Any = None
    opt_state: Any = None
    step: int = 0


class _Carry(eqx.Module):
    params: PyTree
    opt_state: PyTree
    strategy_state: PyTree
    ema: PyTree
    diverged: Array  # bool scalar
    step: Array  # int32 scalar: updates applied


def _all_finite(tree: PyTree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _where(cond: Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


class _Progress:
    """A one-line progress report on stderr: steps/s, loss and the strategy's metrics."""

    def __init__(self, num_steps: int, enabled: bool):
        self.num_steps = num_steps
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.t_last = self.t0
        self.step_last = None
        self.last_print = -1.0
        self.t_print = self.t0

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.step_last is None:  # the first chunk includes compilation
            rate = f"compiled+ran in {now - self.t0:.1f}s"
        else:
            rate = f"{(step - self.step_last) / max(now - self.t_last, 1e-9):.1f} steps/s"
        self.t_last, self.step_last = now, step
        done = step >= self.num_steps
        # Off a terminal, print about every 10% (or every 30 s) so logs stay short.
        if not self.tty and not done and self.last_print >= 0:
            if step < self.last_print + self.num_steps / 10 and now - self.t_print < 30:
                return
        self.last_print, self.t_print = step, now
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = f"[declebm] step {step}/{self.num_steps}  {rate}  {shown}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if done else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.step_last is not None and self.step_last < self.num_steps:
            sys.stderr.write("\n")


def fit(
    model: EBM,
    data: Any,
    strategy: AbstractStrategy,
    *,
    num_steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation | None = None,
    chunk_size: int | None = None,
    ema_decay: float | None = None,
    callbacks: Sequence[Callable[[int, dict, Any], Any]] = (),
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> FitResult:
    r"""Train ``model`` on ``data`` with ``strategy``.

    Each step draws a batch of ``batch_size`` examples uniformly (with replacement) on
    device, evaluates ``strategy.loss`` and its gradient, and applies ``optimizer``
    (default ``optax.adam(1e-3)``). Steps run inside one jitted ``lax.scan`` over a
    chunk of ``chunk_size`` steps (default ``min(100, num_steps)``), so Python runs
    once per chunk; it compiles once per call.

    Arguments:
        model: the ``EBM`` to train (its ``event_shape`` is set from the data if unknown).
        data: array of shape ``(num_examples, *event_shape)``, floating point, finite.
        strategy: an ``AbstractStrategy`` (``PersistentCD(...)``, ``NCE()``, ...).
        num_steps: number of parameter updates.
        batch_size: examples per update (at most ``num_examples``).
        key: a ``jax.random.key``. Step ``s`` uses ``fold_in(key, s)``, so a resumed run
            is identical to an uninterrupted one.
        ema_decay: if set, also keep ``ema = d * ema + (1 - d) * params`` (``FitResult.ema_model``).
        callbacks: ``f(step, metrics, model)`` called after each chunk with the chunk's
            mean metrics; a callback returning ``True`` stops training.
        progress: print a progress line (steps/s, loss, metrics) to stderr.
        checkpoint_dir, checkpoint_every: write an atomic checkpoint (parameters,
            optimizer and strategy state, EMA, history) every ``checkpoint_every`` steps
            (rounded up to a chunk) and at the end. ``resume=True`` continues from it.

    Raises:
        TrainingDivergedError: a step gave a non-finite loss, gradient or parameter.
            The update is not applied; ``err.model`` is the last good model.
    """
    # ---- check the arguments ---------------------------------------------------------
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}; wrap the energy: EBM(energy)")
    if not isinstance(strategy, AbstractStrategy):
        raise TypeError(
            f"strategy: expected a training strategy (an AbstractStrategy such as PersistentCD()), "
            f"got {type(strategy).__name__}"
        )
    check_positive(num_steps, "num_steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_key(key)
    if chunk_size is not None:
        check_positive(chunk_size, "chunk_size", integer=True)
    if checkpoint_every is not None:
        check_positive(checkpoint_every, "checkpoint_every", integer=True)
    if (checkpoint_every is not None or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_dir: needed when checkpoint_every or resume is given")
    if ema_decay is not None and not (0.0 <= float(ema_decay) < 1.0):
        raise ValueError(f"ema_decay: expected a number in [0, 1), got {ema_decay!r}")
    if optimizer is None:
        optimizer = optax.adam(1e-3)
    elif not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer: expected an optax GradientTransformation, got {type(optimizer).__name__}")

    data = check_examples(data, "data", model.event_shape)
    num_examples = data.shape[0]
    if batch_size > num_examples:
        raise ValueError(f"batch_size: {batch_size} is larger than the number of examples in data ({num_examples})")
    if model.event_shape is None:
        model = model.with_event_shape(data.shape[1:])
    check_energy(model, model.event_shape)

    chunk_size = min(chunk_size or 100, num_steps)

    # ---- initial state ---------------------------------------------------------------
    init_key, train_key = jax.random.split(key)
    model = strategy.init_model(model, data, jax.random.fold_in(init_key, 1))
    strategy_state = strategy.init(model, data, init_key, batch_size=batch_size)
    params, static = eqx.partition(model, trainable_filter(model))
    carry = _Carry(
        params=params,
        opt_state=optimizer.init(params),
        strategy_state=strategy_state,
        ema=params if ema_decay is not None else None,
        diverged=jnp.asarray(False),
        step=jnp.asarray(0, dtype=jnp.int32),
    )
    history: dict[str, list] = {}
    meta = {
        "batch_size": batch_size,
        "strategy": type(strategy).__name__,
        "event_shape": list(model.event_shape),
    }
    if resume:
        loaded = load_checkpoint(os.fspath(checkpoint_dir), carry, meta)
        if loaded is not None:
            carry, saved_history = loaded
            history = {k: list(v) for k, v in saved_history.items()}

    # ---- one chunk of steps, compiled once --------------------------------------------
    def one_step(carry: _Carry, step: Array, data: Array, active: Array):
        k_batch, k_loss, k_after = jax.random.split(jax.random.fold_in(train_key, step), 3)
        batch = data[jax.random.randint(k_batch, (batch_size,), 0, num_examples)]

        def loss_fn(p):
            return strategy.loss(eqx.combine(p, static), batch, carry.strategy_state, k_loss)

        (loss, (sstate, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(carry.params)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        params = eqx.apply_updates(carry.params, updates)
        sstate = strategy.after_update(
            eqx.combine(carry.params, static), eqx.combine(params, static), sstate, k_after
        )
        finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params) & _all_finite(sstate)
        apply = active & finite & ~carry.diverged
        ema = carry.ema
        if ema_decay is not None:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, carry.ema, params)
        new = _Carry(params, opt_state, sstate, ema, carry.diverged, carry.step + 1)
        out = _where(apply, new, carry)
        out = eqx.tree_at(lambda c: c.diverged, out, carry.diverged | (active & ~finite))
        metrics = {"loss": loss, **metrics}
        metrics = {k: jnp.where(active & ~carry.diverged, jnp.asarray(v, jnp.float32), jnp.nan) for k, v in metrics.items()}
        return out, metrics

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run_chunk(carry: _Carry, data: Array, start: Array, stop: Array):
        steps = start + jnp.arange(chunk_size, dtype=jnp.int32)
        return jax.lax.scan(lambda c, s: one_step(c, s, data, s < stop), carry, steps)

    # ---- the host loop: once per chunk ------------------------------------------------
    bar = _Progress(num_steps, progress)
    t_start = time.perf_counter() - (history["time"][-1] if history.get("time") else 0.0)
    next_ckpt = (int(carry.step) // checkpoint_every + 1) * checkpoint_every if checkpoint_every else None
    stop_early = False
    last_good = carry
    try:
        while int(carry.step) < num_steps and not stop_early:
            start = int(carry.step)
            last_good = carry
            carry, metrics = run_chunk(carry, data, jnp.asarray(start, jnp.int32), jnp.asarray(num_steps, jnp.int32))
            means = {k: float(np.nanmean(np.asarray(v))) if np.isfinite(np.asarray(v)).any() else float("nan") for k, v in metrics.items()}
            step = int(carry.step)
            if bool(carry.diverged):
                current = eqx.combine(carry.params, static)
                raise TrainingDivergedError(
                    f"training diverged at step {step + 1}: the loss, a gradient or a parameter became "
                    f"non-finite (last chunk means: {means}). The update was not applied; `.model` is the "
                    f"last good model after {step} steps. Try a smaller learning rate or sampler step size, "
                    f"or an energy regulariser.",
                    model=current,
                    step=step,
                    state=carry.strategy_state,
                    history={k: np.asarray(v) for k, v in history.items()},
                )
            for k, v in means.items():
                history.setdefault(k, []).append(v)
            history.setdefault("step", []).append(step)
            history.setdefault("time", []).append(time.perf_counter() - t_start)
            bar.update(step, means)
            current = None
            for cb in callbacks:
                current = current if current is not None else eqx.combine(carry.params, static)
                if cb(step, means, current) is True:
                    stop_early = True
            if checkpoint_dir is not None and (step >= num_steps or stop_early or (next_ckpt and step >= next_ckpt)):
                save_checkpoint(os.fspath(checkpoint_dir), carry, history, dict(meta, step=step))
                if next_ckpt:
                    next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
    except KeyboardInterrupt:
        if checkpoint_dir is not None:
            done = carry if not bool(carry.diverged) else last_good
            save_checkpoint(os.fspath(checkpoint_dir), done, history, dict(meta, step=int(done.step)))
        raise
    finally:
        bar.close()

    return FitResult(
        model=eqx.combine(carry.params, static),
        state=carry.strategy_state,
        history={k: np.asarray(v) for k, v in history.items()},
        ema_model=eqx.combine(carry.ema, static) if ema_decay is not None else None,
        opt_state=carry.opt_state,
        step=int(carry.step),
    )
