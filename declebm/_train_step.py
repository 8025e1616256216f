"""The compiled part of ``fit``: one chunk of training steps in a ``lax.scan``.

Everything a step needs that is not an array (the strategy's static fields, the
optimizer, the model's structure, the batch size) travels in ``StepSpec``, an argument
of the module-level jitted ``run_chunk``; arrays (parameters, data, the key, a
strategy's numeric hyperparameters) are traced. So a second ``fit`` with the same
structures (same optimizer object, same kinds of model and strategy) reuses the
compiled chunk instead of compiling again.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ._devices import constrain, split
from ._guard import Probe, probe_statistics
from ._strategy import AbstractStrategy


class Carry(eqx.Module):
    """What one step hands to the next (and what a checkpoint stores).

    params: the trainable arrays of the model. opt_state: the optimizer's state.
    strategy_state: the strategy's state (chains, buffer, particles, ...).
    ema: the exponential moving average of ``params`` (``None`` when off).
    lr_scale: a factor on every update (1 unless a divergence rollback lowered it).
    diverged: set once a step went non-finite; later steps are not applied.
    step: updates applied so far.
    """

    params: PyTree
    opt_state: PyTree
    strategy_state: PyTree
    ema: PyTree
    lr_scale: Float[Array, ""]
    diverged: Bool[Array, ""]
    step: Int[Array, ""]


class StepSpec(eqx.Module):
    """The configuration of a training step: hashed (non-array parts) or traced (arrays)."""

    strategy: AbstractStrategy
    optimizer: optax.GradientTransformation
    static: Any  # the model's non-trainable part
    key: PRNGKeyArray
    ema_decay: Float[Array, ""] | None
    batch_size: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    mesh: Any = eqx.field(static=True, default=None)  # a one-axis jax Mesh, or None for one device
    carry_shardings: Any = None  # a Carry of NamedShardings (multi-device), else None
    shard_data: bool = eqx.field(static=True, default=False)


def host_scalar(value: Any, dtype: Any) -> Array:
    """A 0-d array of ``dtype`` put on the default device, without the small conversion
    program that ``jnp.asarray`` compiles for each dtype on first use."""
    return jax.device_put(np.asarray(value, dtype))


def examples_of(data: Any) -> Array:
    """The examples ``x`` of the training data: the data themselves, or ``x`` of labelled
    data ``(x, y)``."""
    return data[0] if isinstance(data, tuple) else data


def draw_batch(spec: StepSpec, data: Any, key: PRNGKeyArray) -> Any:
    """``batch_size`` examples drawn uniformly with replacement (of labelled data
    ``(x, y)``, the same rows of each).

    With data replicated on every device (the default), indices are drawn over the whole
    data set, so the batch does not depend on the number of devices. With
    ``shard_data`` each device holds ``1/n`` of the rows and draws its part of the batch
    from them (no data moves between devices or hosts; the batch then depends on the
    device count)."""
    num_rows = examples_of(data).shape[0]
    if not spec.shard_data:
        idx = jax.random.randint(key, (spec.batch_size,), 0, num_rows)
        batch = jax.tree.map(lambda a: a[idx], data)
    else:
        n = spec.mesh.devices.size
        idx = jax.random.randint(key, (n, spec.batch_size // n), 0, num_rows // n)

        def rows(a: Array) -> Array:
            per_device = a.reshape((n, num_rows // n) + a.shape[1:])
            return jax.vmap(lambda d, i: d[i])(per_device, idx).reshape((spec.batch_size,) + a.shape[1:])

        batch = jax.tree.map(rows, data)
    if spec.mesh is not None:
        batch = jax.tree.map(lambda b: jax.lax.with_sharding_constraint(b, split(spec.mesh)), batch)
    return batch


def all_finite(tree: PyTree) -> Bool[Array, ""]:
    """Whether every floating-point (or complex) array in ``tree`` is finite.

    One reduction over all leaves: ``x * 0`` is 0 where ``x`` is finite and NaN where it
    is infinite or NaN (for complex ``x``, in its real part), in any float dtype, so the
    leaves, cast to float32 and concatenated, are all finite exactly when every leaf is.
    A reduction per leaf (``each_finite``) makes XLA:CPU compile up to three kernels per
    leaf (the test, its reduction and a partial reduction): for the parameters and
    gradients of an MLP's PCD chunk, 19 of its 76 kernels, and a fifth of its compilation
    time (six fits of small MLPs, one process: 2.3-2.4 s of XLA compilation against
    2.9-3.1 s)."""
    leaves = [x for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.isfinite(jnp.concatenate([jnp.ravel(jnp.real(x * 0)).astype(jnp.float32) for x in leaves])))


def each_finite(tree: PyTree) -> Bool[Array, ""]:
    """``all_finite`` by one reduction per leaf."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _where(cond: Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _one_step(spec: StepSpec, carry: Carry, step: Array, data: Array, active: Array):
    """One update: draw a batch, ``strategy.loss`` and its gradient, the optimizer, the
    strategy's ``after_update``. A non-finite loss, gradient, parameter or state is not
    applied and sets ``diverged``."""
    strategy, static = spec.strategy, spec.static
    k_batch, k_loss, k_after = jax.random.split(jax.random.fold_in(spec.key, step), 3)
    batch = draw_batch(spec, data, k_batch)

    def loss_fn(p):
        return strategy.loss(eqx.combine(p, static), batch, carry.strategy_state, k_loss)

    (loss, (sstate, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(carry.params)
    updates, opt_state = spec.optimizer.update(grads, carry.opt_state, carry.params)
    updates = jax.tree.map(lambda u: (u * carry.lr_scale).astype(u.dtype), updates)
    params = eqx.apply_updates(carry.params, updates)
    sstate = strategy.after_update(eqx.combine(carry.params, static), eqx.combine(params, static), sstate, k_after)
    # The parameters and gradients in one reduction; the strategy state leaf by leaf: in one
    # concatenation with the rest, its step-size adaptation on 8 devices compiled otherwise
    # than on one, and the step sizes no longer matched bit for bit (tests/test_devices.py).
    finite = jnp.isfinite(loss) & all_finite((grads, params)) & each_finite(sstate)
    apply = active & finite & ~carry.diverged
    ema = carry.ema
    if spec.ema_decay is not None:
        d = spec.ema_decay
        ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(p.dtype), carry.ema, params)
    new = Carry(params, opt_state, sstate, ema, carry.lr_scale, carry.diverged, carry.step + 1)
    out = _where(apply, new, carry)
    out = eqx.tree_at(lambda c: c.diverged, out, carry.diverged | (active & ~finite))
    shown = active & ~carry.diverged
    metrics = {k: jnp.where(shown, jnp.asarray(v, jnp.float32), jnp.nan) for k, v in {"loss": loss, **metrics}.items()}
    return out, metrics


def _probe_statistics(spec: StepSpec, before: PyTree, after: PyTree, probe: Probe, data: Array) -> Float[Array, "2 2"]:
    """The divergence guard's statistics (energy spread, NLL excess) of the density the
    strategy trains, with the parameters ``before`` and ``after`` a chunk: one forward
    pass over both (``vmap``), so the compiled chunk holds one copy of it rather than two."""
    points = probe.points(examples_of(data))

    def statistics(params):
        return probe_statistics(spec.strategy.watched_model(eqx.combine(params, spec.static)), probe, points)

    return jax.vmap(statistics)(jax.tree.map(lambda a, b: jnp.stack([a, b]), before, after))


@eqx.filter_jit
def run_chunk(spec: StepSpec, carry: Carry, data: Array, start: Array, stop: Array, probe: Probe | None = None):
    """``spec.chunk_size`` steps from ``start`` in one ``lax.scan``; steps at or after
    ``stop`` are computed but not applied (a partial last chunk reuses the same code).

    Returns ``(carry, metrics, guard)``: with the divergence guard's ``probe``, ``guard``
    holds the energy spread and the NLL excess on its points (``probe_statistics``)
    before and after the chunk, shape ``(2, 2)`` (else ``None``), measured here rather
    than by a program of their own."""
    start_params = carry.params
    steps = start + jnp.arange(spec.chunk_size, dtype=jnp.int32)
    carry, metrics = jax.lax.scan(lambda c, s: _one_step(spec, c, s, data, s < stop), carry, steps)
    if spec.carry_shardings is not None:  # keep every chunk's output placed as its input
        carry = constrain(carry, spec.carry_shardings)
    guard = None if probe is None else _probe_statistics(spec, start_params, carry.params, probe, data)
    return carry, metrics, guard


def signature(tree: PyTree) -> list[tuple[str, str]]:
    """``(path, "shape dtype[weak]")`` of every array leaf, to explain a retrace."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.Array) or hasattr(leaf, "dtype"):
            weak = " (weak type)" if getattr(leaf, "weak_type", False) else ""
            out.append((jax.tree_util.keystr(path), f"{tuple(leaf.shape)} {leaf.dtype}{weak}"))
    return out


def check_same_signature(before: list, after: list, what: str = "carry") -> None:
    """Raise in one line if a chunk changed the shape or dtype of a leaf it carries,
    which would make the next chunk compile again."""
    if before == after:
        return
    for (path_a, sig_a), (path_b, sig_b) in zip(before, after):
        if path_a != path_b or sig_a != sig_b:
            raise TypeError(
                f"fit: a training step changed {what}{path_b} from {sig_a} to {sig_b}, which would recompile every "
                "chunk; make the strategy's state and the model's parameters keep their shape and dtype"
            )
    raise TypeError(f"fit: a training step changed the structure of the {what} ({len(before)} -> {len(after)} leaves)")
