"""Data-parallel placement over a one-axis device mesh, through ``jax.sharding``.

Parameters, optimizer state and everything small are replicated; the batch and the
strategy's per-chain state (persistent chains, replay buffer, particles) are split along
the mesh axis ``"data"``. The compiler (``jit`` with shardings) partitions each step and
averages gradients; nothing here writes a collective by hand.
"""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree

from ._hosts import put

AXIS = "data"


def make_mesh(devices: Sequence[Any] | Mesh | None, name: str = "devices") -> Mesh | None:
    """The mesh for ``devices``: ``None`` (one device, nothing sharded), a list of devices
    (one axis named ``"data"``), or a ``jax.sharding.Mesh`` that has a ``"data"`` axis."""
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if AXIS not in devices.axis_names:
            raise ValueError(f"{name}: a Mesh must have an axis named {AXIS!r}, got axes {devices.axis_names}")
        if len(devices.axis_names) != 1:
            raise ValueError(f"{name}: expected a one-axis Mesh ({AXIS!r}), got axes {devices.axis_names}")
        devs = list(devices.devices.flat)
    else:
        if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
            raise TypeError(f"{name}: expected a list of jax devices or a jax.sharding.Mesh, got {type(devices).__name__}")
        devs = list(devices)
        if not devs:
            raise ValueError(f"{name}: the list of devices is empty")
        if not all(isinstance(d, jax.Device) for d in devs):
            bad = next(d for d in devs if not isinstance(d, jax.Device))
            raise TypeError(f"{name}: expected jax devices (jax.devices()), got an item of type {type(bad).__name__}")
        if len(set(devs)) != len(devs):
            raise ValueError(f"{name}: a device appears more than once")
    platforms = sorted({d.platform for d in devs})
    if len(platforms) > 1:
        raise ValueError(f"{name}: all devices must be of one platform, got {platforms}")
    if isinstance(devices, Mesh):
        return devices
    return Mesh(np.asarray(devs), (AXIS,))


def num_devices(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.devices.size


def check_divides(mesh: Mesh | None, size: int, what: str, name: str = "devices") -> None:
    n = num_devices(mesh)
    if size % n:
        raise ValueError(f"{name}: {n} devices do not divide {what} ({size}); use a multiple of {n}")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def split(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def state_shardings(mesh: Mesh, state: PyTree, per_chain: PyTree) -> PyTree:
    """Per-chain leaves split along their first axis, the rest replicated."""
    return jax.tree.map(lambda leaf, chains: split(mesh) if chains else replicated(mesh), state, per_chain)


def check_state_divides(mesh: Mesh | None, state: PyTree, per_chain: PyTree) -> None:
    if mesh is None:
        return
    for (path, leaf), chains in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(per_chain)):
        if chains:
            check_divides(mesh, leaf.shape[0], f"the chains of strategy_state{jax.tree_util.keystr(path)}")


def place(tree: PyTree, shardings: PyTree) -> PyTree:
    """``tree`` on ``shardings`` (with several processes, each passing the whole value)."""
    return put(tree, shardings)


def replicate_model(model: Any, mesh: Mesh) -> Any:
    """A copy of ``model`` with every array on every device of ``mesh``."""
    arrays, rest = eqx.partition(model, eqx.is_array)
    return eqx.combine(place(arrays, replicated(mesh)), rest)


def constrain(tree: PyTree, shardings: PyTree) -> PyTree:
    """``with_sharding_constraint`` leaf by leaf (inside ``jit``)."""
    return jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)
