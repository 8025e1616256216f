"""Checkpoints of a training run: written atomically, resumed exactly."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import equinox as eqx
import numpy as np

_CKPT = "checkpoint.eqx"
_META = "checkpoint.json"


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(directory: str, carry: Any, history: dict, meta: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    # Leaves first, then the metadata that points at them: a crash between the two
    # leaves the previous metadata, which is then detected as a step mismatch.
    _atomic_write(os.path.join(directory, _CKPT), lambda f: eqx.tree_serialise_leaves(f, carry))
    payload = dict(meta, history={k: np.asarray(v).tolist() for k, v in history.items()})
    _atomic_write(os.path.join(directory, _META), lambda f: json.dump(payload, f), mode="w")


def load_checkpoint(directory: str, like: Any, meta: dict) -> tuple[Any, dict] | None:
    mpath, cpath = os.path.join(directory, _META), os.path.join(directory, _CKPT)
    if not os.path.exists(mpath) or not os.path.exists(cpath):
        return None
    with open(mpath) as f:
        saved = json.load(f)
    for k in ("batch_size", "strategy", "event_shape"):
        if saved.get(k) != meta.get(k):
            raise ValueError(
                f"resume=True: the checkpoint in {directory!r} was written with {k}={saved.get(k)!r}, "
                f"this call has {k}={meta.get(k)!r}"
            )
    carry = eqx.tree_deserialise_leaves(cpath, like)
    if int(carry.step) != saved["step"]:
        raise ValueError(
            f"resume=True: checkpoint files in {directory!r} disagree (step {int(carry.step)} vs {saved['step']})"
        )
    history = {k: np.asarray(v) for k, v in saved["history"].items()}
    return carry, history


def check_checkpoint_dir(path: Any) -> str:
    """``checkpoint_dir`` checked before training: a path that is, or can become, a
    writable directory."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir: expected a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"checkpoint_dir: {path!r} exists and is not a directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent) or "."
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"checkpoint_dir: {path!r} is not writable (no write permission in {parent!r})")
    return path
