r"""Files of a run over several processes (``jax.distributed``): one writer, global values.

With several processes, an array split over the devices of all of them (the data's rows,
the persistent chains) cannot be read by any one process: each holds its own shards. What
is written to a file is then

* the value of every array on the host: a replicated one from this process's copy, a split
  one gathered from every process (``multihost_utils.process_allgather``, a collective that
  every process enters, in the same order);
* written by process 0 only, the others waiting for it (``agree``), so that no two
  processes race on one file and none goes on before the file is complete;
* and read back by every process, each one building its own shards of the global arrays
  from its copy of the whole value (``put``, behind ``_devices.place``).

With one process every function here is the identity (or a no-op), and nothing is
gathered or waited for.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils


def several() -> bool:
    """Whether this program is one of several processes joined by ``jax.distributed``."""
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the files of the run (process 0)."""
    return jax.process_index() == 0


def _global(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def host_copy(tree: Any) -> Any:
    """``tree`` with every array that spans other processes' devices replaced by its whole
    value on this process (PRNG keys stay keys). Replicated arrays are this process's copy;
    split ones, as NumPy arrays, are gathered from all processes, in one collective that
    every process must call with a tree of the same structure."""
    leaves, treedef = jax.tree.flatten(tree)
    split = [i for i, x in enumerate(leaves) if _global(x) and not x.is_fully_replicated]
    out = [x.addressable_data(0) if _global(x) and x.is_fully_replicated else x for x in leaves]
    if split:
        keys = {i: jnp.issubdtype(leaves[i].dtype, jax.dtypes.prng_key) for i in split}
        raw = [jax.random.key_data(leaves[i]) if keys[i] else leaves[i] for i in split]
        gathered = multihost_utils.process_allgather(raw, tiled=True)
        for i, g in zip(split, gathered):
            out[i] = jax.random.wrap_key_data(g, impl=jax.random.key_impl(leaves[i])) if keys[i] else np.asarray(g)
    return jax.tree.unflatten(treedef, out)


def local_rows(x: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""``(indices, rows)``: the rows of ``x`` this process holds, with their indices in the
    global array: its addressable shards, each distinct block once, in the order of their
    first index (for data split over the devices, the rows this process passed; for
    replicated data, all of it). All rows when ``x`` is not a global array."""
    if not _global(x):
        rows = np.asarray(x)
        return np.arange(rows.shape[0]), rows
    blocks: dict[tuple, np.ndarray] = {}
    for shard in x.addressable_shards:
        index = tuple((s.start or 0, s.stop) for s in shard.index)
        blocks.setdefault(index, np.asarray(shard.data))
    order = sorted(blocks)
    indices = np.concatenate([np.arange(k[0][0], k[0][0] + blocks[k].shape[0]) for k in order])
    return indices, np.concatenate([blocks[k] for k in order], axis=0)


def gather_digests(digest: bytes) -> list[bytes]:
    """Every process's ``digest`` (bytes of one fixed length on all processes), in process
    order: a collective that every process must call."""
    if not several():
        return [digest]
    rows = multihost_utils.process_allgather(np.frombuffer(digest, np.uint8))
    return [bytes(np.asarray(r, np.uint8)) for r in rows]


def gather_ints(value: int) -> list[int]:
    """Every process's ``value``, in process order: a collective that every process must call."""
    if not several():
        return [int(value)]
    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.array([value], np.int64))).reshape(-1)]


def agree(ok: bool, what: str) -> None:
    """Wait until process 0 has done ``what`` (a barrier); on the other processes, raise a
    ``RuntimeError`` when it failed (``ok`` is process 0's outcome). Every process must
    call it, process 0 after its attempt."""
    if not several():
        return
    flag = multihost_utils.broadcast_one_to_all(np.int32(1 if ok else 0))
    if not int(flag) and not is_writer():
        raise RuntimeError(f"{what}: process 0 failed to do it (its error says why); this process stops too")


def share_text(text: str | None, what: str, limit: int = 4096) -> str:
    """Process 0's ``text`` on every process (a barrier, like ``agree``): process 0 passes
    the text, or ``None`` when it failed to make it (then the others raise a
    ``RuntimeError`` naming ``what``); the others' ``text`` is ignored. Every process must
    call it. With one process, ``text`` itself."""
    if not several():
        return text  # type: ignore[return-value]
    raw = np.zeros(limit + 1, np.uint8)
    if is_writer() and text is not None:
        encoded = text.encode()
        if len(encoded) > limit:
            raise ValueError(f"{what}: the text to share has {len(encoded)} bytes, more than {limit}")
        raw[0] = 1
        raw[1:1 + len(encoded)] = np.frombuffer(encoded, np.uint8)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(raw), np.uint8)
    if not shared[0]:
        if is_writer():
            return text  # type: ignore[return-value]  -- None: the caller raises its own error
        raise RuntimeError(f"{what}: process 0 failed to do it (its error says why); this process stops too")
    return bytes(shared[1:]).rstrip(b"\0").decode()


def put(tree: Any, shardings: Any) -> Any:
    """``jax.device_put(tree, shardings)`` that also holds with several processes, where each
    process passes the whole value (the same on all): every leaf whose sharding spans other
    processes' devices is built from this process's copy, each process filling its own
    shards (``jax.make_array_from_callback``). (``device_put`` of a process-local array
    onto such a sharding gives, in jax 0.10, an array whose local buffer is itself the
    global array, which cannot be read back.) ``shardings`` is a sharding or a tree of
    them with ``tree``'s structure as a prefix, as for ``device_put``."""
    if not several():
        return jax.device_put(tree, shardings)

    def leaf(value: Any, sharding: Any) -> Any:
        if not isinstance(sharding, jax.sharding.Sharding) or sharding.is_fully_addressable or _global(value) \
                or not (isinstance(value, (jax.Array, np.ndarray)) or np.isscalar(value)):
            return jax.device_put(value, sharding)
        key = isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(value) if key else value)
        out = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
        return jax.random.wrap_key_data(out, impl=jax.random.key_impl(value)) if key else out

    return jax.tree.map(lambda s, sub: jax.tree.map(lambda v: leaf(v, s), sub), shardings, tree,
                        is_leaf=lambda x: x is None)
