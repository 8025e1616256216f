"""``fit``: one entry point, configured by a strategy object."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from ._checks import check_examples, check_key, check_positive, strong_dtypes
from ._checkpoint import check_checkpoint_dir, load_checkpoint, run_fingerprint
from ._devices import (
    check_divides, check_state_divides, make_mesh, place, replicate_model, replicated, split, state_shardings,
)
from ._ebm import EBM, check_energy, trainable_filter
from ._programs import make_room_for_programs
from ._guard import DivergenceGuard, draw_probe
from ._loop import TrainingDivergedError, train_loop
from ._strategy import AbstractStrategy
from ._train_step import Carry, StepSpec, examples_of, host_scalar


class FitResult(eqx.Module):
    """What ``fit`` returns.

    model: the trained model. state: the strategy's final state (chains, buffer, ...).
    history: per-chunk means of every metric, with ``step`` (updates done at the end
    of the chunk) and ``time`` (seconds since the start, compilation included).
    ema_model: the exponential moving average of the parameters, when ``ema_decay`` is set.
    opt_state: the optimizer state. step: number of updates applied.
    lr_scale: the factor on every update at the end (below 1 after a divergence rollback).
    warnings: what the divergence guard reported (also issued as ``RuntimeWarning``s):
        each rollback, and a run that rolled back and ended worse than it started.
    resumed_from: the step of the checkpoint a ``resume=True`` run continued from (``None``
    when it started from step 0); the progress output says so too, unless ``progress=False``.
    """

    model: Any
    state: Any
    history: dict[str, np.ndarray]
    ema_model: Any = None
    opt_state: Any = None
    step: int = 0
    lr_scale: float = 1.0
    warnings: tuple[str, ...] = ()
    resumed_from: int | None = None


# One default optimizer object, so that repeated fits with the default reuse compiled code.
_DEFAULT_OPTIMIZER = optax.adam(1e-3)
_PROGRESS_MODES = ("auto", "bar", "log", "off")


def _place_data(data: Any, mesh: jax.sharding.Mesh, shard: bool) -> Any:
    """The data (an array, or labelled data ``(x, y)``) on the mesh: a copy on every device,
    or its rows split over the devices (with several processes, each passes its own rows
    and they form one global array)."""
    if not shard:
        return place(data, replicated(mesh))
    local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    num_rows = examples_of(data).shape[0]
    rows = num_rows - num_rows % local
    if rows == 0:
        raise ValueError(f"data: {num_rows} examples cannot be split over {local} devices")
    if jax.process_count() == 1:
        return place(jax.tree.map(lambda a: a[:rows], data), split(mesh))
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(split(mesh), np.asarray(a[:rows])), data)


def _check_data(data: Any, strategy: AbstractStrategy, event_shape: tuple[int, ...] | None) -> Any:
    """The training data checked: an array of examples, or for a strategy that trains on
    labels (``uses_labels``, ``JEM``) a tuple ``(x, y)`` with a common leading axis. Each
    kind is refused, naming the other, by the strategies that do not take it."""
    name = type(strategy).__name__
    labelled = isinstance(data, tuple)  # a list stays what it was: an array-like of examples
    if labelled and not strategy.uses_labels:
        raise ValueError(
            f"data: {name} learns from examples alone, got labelled data (a {type(data).__name__} of {len(data)}); "
            "pass the examples x alone, or train on the labels with inference.JEM"
        )
    if not labelled:
        if strategy.uses_labels:
            raise ValueError(f"data: {name} trains on labelled data: pass a pair (x, y) of examples and their labels")
        return check_examples(data, "data", event_shape)
    if len(data) != 2:
        raise ValueError(f"data: labelled data are a pair (x, y), got a {type(data).__name__} of {len(data)}")
    x = check_examples(data[0], "data[0]", event_shape)
    y = np.asarray(data[1])
    if y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"data: x and y need a common leading axis, got {x.shape[0]} examples and y of shape {y.shape}")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.isfinite(y).all()):
        raise ValueError(f"data[1]: expected finite numbers (labels), got dtype {y.dtype}")
    return (x, jnp.asarray(y))


def _check_fit_options(
    *, num_steps, batch_size, key, chunk_size, ema_decay, callbacks, progress, checkpoint_dir,
    checkpoint_every, resume, divergence_guard,
) -> None:
    """Every option of ``fit`` checked before anything is compiled or trained."""
    check_positive(num_steps, "num_steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_key(key)
    if chunk_size is not None:
        check_positive(chunk_size, "chunk_size", integer=True)
    if checkpoint_every is not None:
        check_positive(checkpoint_every, "checkpoint_every", integer=True)
    if not isinstance(resume, bool):
        raise TypeError(f"resume: expected True or False, got {resume!r}")
    if (checkpoint_every is not None or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_dir: needed when checkpoint_every or resume is given")
    if checkpoint_dir is not None:
        check_checkpoint_dir(checkpoint_dir, resume=resume)
    if ema_decay is not None:
        check_positive(ema_decay, "ema_decay", allow_zero=True)
        if not float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay: expected a number in [0, 1), got {ema_decay!r}")
    if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"callbacks: expected a list of functions f(step, metrics, model), got {type(callbacks).__name__}"
            + ("; wrap a single one in a list: callbacks=[f]" if callable(callbacks) else "")
        )
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks: item {i} is not callable ({type(cb).__name__})")
    if not (isinstance(progress, bool) or progress in _PROGRESS_MODES):
        raise ValueError(f"progress: expected True, False or one of {_PROGRESS_MODES}, got {progress!r}")
    if divergence_guard is not None and not isinstance(divergence_guard, DivergenceGuard):
        raise TypeError(
            f"divergence_guard: expected a declebm.DivergenceGuard or None, got {type(divergence_guard).__name__}"
        )


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
    progress: bool | str = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    divergence_guard: DivergenceGuard | None = DivergenceGuard(),
    devices: Sequence[jax.Device] | jax.sharding.Mesh | None = None,
    shard_data: bool | None = None,
) -> FitResult:
    r"""Train ``model`` on ``data`` with ``strategy``.

    Each step draws a batch of ``batch_size`` examples uniformly (with replacement) on
    device, evaluates ``strategy.loss`` and its gradient, and applies ``optimizer``
    (default ``optax.adam(1e-3)``). Steps run inside one jitted ``lax.scan`` over a
    chunk of ``chunk_size`` steps (default ``min(100, num_steps)``), so Python runs
    once per chunk. It compiles once per call, and a later call with the same optimizer
    object and the same kinds of model and strategy reuses the compiled code (numeric
    hyperparameters are traced values).

    Arguments:
        model: the ``EBM`` to train (its ``event_shape`` is set from the data if unknown).
            Weak-typed parameters (``jnp.array(-2.0)``) are made strongly typed first.
        data: array of shape ``(num_examples, *event_shape)``, floating point, finite; for a
            strategy that trains on labels (``inference.JEM``), labelled data: a pair
            ``(x, y)`` of such an array and the labels, with a common leading axis (every
            other strategy refuses labelled data, and such a strategy unlabelled data).
        strategy: an ``AbstractStrategy`` (``PersistentCD(...)``, ``NCE()``, ...).
        num_steps: number of parameter updates.
        batch_size: examples per update (at most ``num_examples``).
        key: a ``jax.random.key``. Step ``s`` uses ``fold_in(key, s)``, so a resumed run
            is identical to an uninterrupted one.
        optimizer: an optax ``GradientTransformation``.
        ema_decay: if set, also keep ``ema = d * ema + (1 - d) * params`` (``FitResult.ema_model``).
        callbacks: a list of ``f(step, metrics, model)`` called after each chunk with the
            chunk's mean metrics; a callback returning ``True`` stops training.
        progress: ``True``/``"auto"`` (a tqdm bar on a terminal or in a notebook, a log line
            about every 10% or 30 s otherwise), ``"bar"``, ``"log"``, or ``False``/``"off"``.
        checkpoint_dir, checkpoint_every, resume: write a checkpoint (parameters,
            optimizer and strategy state, EMA, history) every ``checkpoint_every`` steps
            (rounded up to a chunk) and at the end, each one a folder named by its step
            in eight digits (``step-00001200``) that appears only when complete; the two
            newest are kept. ``resume=True`` continues from the newest intact one (a
            damaged newest one falls back to the previous with a warning), says
            ``resuming from step N`` through ``progress`` (``FitResult.resumed_from``
            records it, also with ``progress=False``), and refuses, naming what changed, a checkpoint of a
            different run (strategy and its hyperparameters, optimizer, key, data, model
            structure, batch_size, ema_decay) or a ``num_steps`` below its step. Without
            ``resume``, a ``checkpoint_dir`` that already holds checkpoints is refused.
            With several processes, ``checkpoint_dir`` is one folder that all of them read
            (a shared file system): process 0 writes each checkpoint (the split chains
            gathered from every process), and a resume needs the same number of processes
            (the data's fingerprint is made of each process's rows).
        divergence_guard: when a run counts as diverged and what then happens (see
            ``DivergenceGuard``: energy spread growing by ``max_growth``, the NLL excess over a
            Gaussian fitted to the data above ``max_excess`` nats per dimension, optional
            rollback with a lower learning rate, reported as ``RuntimeWarning``s and in
            ``FitResult.warnings``); ``None`` keeps only the non-finite check.
        devices: train data parallel over these devices (a list such as ``jax.devices()``,
            or a one-axis ``jax.sharding.Mesh`` with axis ``"data"``); default one device.
            The batch and the strategy's per-chain state (persistent chains, replay
            buffer, particles) are split over the devices, parameters and optimizer
            state replicated, and the compiler averages the gradients. ``batch_size`` and
            the chain counts must be multiples of the number of devices. With the same
            key, 1 or 8 devices draw the same batches and the same random numbers for every
            chain; the floats differ by rounding (each device's share is compiled on its own,
            the gradient mean is summed in another order). Without a Metropolis step the
            parameters agree to rounding; with one (MALA, HMC, the default ``"pcd"``) an
            accept/reject within rounding of its threshold can flip and the runs part into
            two draws of the same training (README, "Many devices and hosts"). On a CPU,
            XLA exposes one device per core with
            ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX starts.
        shard_data: split the data's rows over the devices instead of copying the data to
            every device (default: only when several processes run, multi-host through
            ``jax.distributed.initialize``, where each process passes its own rows). Each
            device then draws its part of the batch from its own rows, so the batches, and
            the result, depend on the number of devices. Rows beyond a multiple of the
            number of (local) devices are left out.

    Raises:
        TrainingDivergedError: a step went non-finite or the energies blew up. The bad
            updates are not kept; ``err.model`` is the last healthy model.
    """
    # ---- check everything before the first step ----------------------------------------
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}; wrap the energy: EBM(energy)")
    if not isinstance(strategy, AbstractStrategy):
        raise TypeError(
            f"strategy: expected a training strategy (an AbstractStrategy such as PersistentCD()), "
            f"got {type(strategy).__name__}"
        )
    if optimizer is None:
        optimizer = _DEFAULT_OPTIMIZER
    elif not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer: expected an optax GradientTransformation, got {type(optimizer).__name__}")
    _check_fit_options(
        num_steps=num_steps, batch_size=batch_size, key=key, chunk_size=chunk_size, ema_decay=ema_decay,
        callbacks=callbacks, progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
        resume=resume, divergence_guard=divergence_guard,
    )
    make_room_for_programs()
    mesh = make_mesh(devices)
    if shard_data is None:
        shard_data = mesh is not None and jax.process_count() > 1
    elif not isinstance(shard_data, bool):
        raise TypeError(f"shard_data: expected True, False or None, got {shard_data!r}")
    if shard_data and mesh is None:
        raise ValueError("shard_data: splitting the data needs several devices; pass devices=")
    if mesh is not None:
        check_divides(mesh, batch_size, "batch_size")
    data = _check_data(data, strategy, model.event_shape)
    if mesh is not None:
        data = _place_data(data, mesh, shard_data)
    x = examples_of(data)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size: {batch_size} is larger than the number of examples in data ({x.shape[0]})")
    if model.event_shape is None:
        model = model.with_event_shape(x.shape[1:])
    model = strong_dtypes(model)
    check_energy(model, model.event_shape)
    chunk_size = min(chunk_size or 100, num_steps)
    progress = {True: "auto", False: "off"}.get(progress, progress) if isinstance(progress, bool) else progress

    run = None
    if checkpoint_dir is not None:  # what defines this run, stored in and checked against checkpoints
        run = run_fingerprint(model=model, data=data, strategy=strategy, optimizer=optimizer, key=key,
                              batch_size=batch_size, ema_decay=ema_decay)

    # ---- initial state ---------------------------------------------------------------
    init_key, train_key = jax.random.split(key)
    if type(strategy).init_model is not AbstractStrategy.init_model:  # the default is the identity:
        # no key to derive for it (eagerly, fold_in is a program compiled on first use)
        model = strong_dtypes(strategy.init_model(model, data, jax.random.fold_in(init_key, 1)))
    strategy_state = strong_dtypes(strategy.init(model, data, init_key, batch_size=batch_size))
    if mesh is not None:  # every array of the model (trained or not) on every device
        model = replicate_model(model, mesh)
    params, static = eqx.partition(model, trainable_filter(model))
    opt_state, lr_scale, diverged, step = _initial_state(optimizer, params)
    carry = Carry(
        params=params,
        opt_state=strong_dtypes(opt_state),
        strategy_state=strategy_state,
        ema=params if ema_decay is not None else None,
        lr_scale=lr_scale,
        diverged=diverged,
        step=step,
    )
    if mesh is not None:
        rep = replicated(mesh)
        per_chain = strategy.per_chain(carry.strategy_state)
        check_state_divides(mesh, carry.strategy_state, per_chain)
        shardings = Carry(
            params=jax.tree.map(lambda _: rep, carry.params),
            opt_state=jax.tree.map(lambda _: rep, carry.opt_state),
            strategy_state=state_shardings(mesh, carry.strategy_state, per_chain),
            ema=jax.tree.map(lambda _: rep, carry.ema),
            lr_scale=rep,
            diverged=rep,
            step=rep,
        )
        carry = place(carry, shardings)
    history: dict[str, list] = {}
    resumed_from = None
    if resume:
        loaded = load_checkpoint(os.fspath(checkpoint_dir), carry, run=run, num_steps=num_steps)
        if loaded is not None:
            carry, saved_history = loaded
            resumed_from = int(carry.step)
            history = {k: list(v) for k, v in saved_history.items()}
            if mesh is not None:  # a checkpoint from any device count resumes on this one
                carry = place(carry, shardings)
    spec = StepSpec(
        strategy=strategy,
        optimizer=optimizer,
        static=static,
        key=train_key,
        ema_decay=None if ema_decay is None else host_scalar(ema_decay, np.float32),
        batch_size=batch_size,
        chunk_size=chunk_size,
        mesh=mesh,
        carry_shardings=shardings if mesh is not None else None,
        shard_data=shard_data,
    )
    probe = None
    if divergence_guard is not None:
        probe = draw_probe(divergence_guard.num_probe, x, init_key)
        if mesh is not None:
            probe = place(probe, replicated(mesh))

    # ---- train -----------------------------------------------------------------------
    carry, history, reports = train_loop(
        spec, carry, data, num_steps=num_steps, history=history, guard=divergence_guard, probe=probe,
        event_size=model.event_size, callbacks=callbacks, progress=progress,
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        checkpoint_every=checkpoint_every, run=run, resumed_from=resumed_from,
    )
    return FitResult(
        model=eqx.combine(carry.params, static),
        state=carry.strategy_state,
        history={k: np.asarray(v) for k, v in history.items()},
        ema_model=eqx.combine(carry.ema, static) if ema_decay is not None else None,
        opt_state=carry.opt_state,
        step=int(carry.step),
        lr_scale=float(carry.lr_scale),
        warnings=reports,
        resumed_from=resumed_from,
    )


@eqx.filter_jit
def _initial_state(optimizer: optax.GradientTransformation, params: Any) -> tuple[Any, Array, Array, Array]:
    """``optimizer.init(params)`` and the carry's counters (``lr_scale`` 1, ``diverged``
    false, ``step`` 0) as one compiled program: eagerly, each leaf of the optimizer's
    state and each counter is a program of its own, compiled on first use."""
    return optimizer.init(params), jnp.asarray(1.0, jnp.float32), jnp.asarray(False), jnp.asarray(0, jnp.int32)
