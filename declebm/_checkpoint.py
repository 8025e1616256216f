r"""Checkpoints of a training run: each one a unit published by a rename, resumed exactly;
with several processes the arrays are written and read by Orbax (``orbax-checkpoint``).

Layout of ``checkpoint_dir``::

    step-00000100/          a complete checkpoint (only ever appears complete)
        state.eqx           one process (format 2): the training carry (parameters,
                            optimizer and strategy state, EMA, step) in Equinox's
                            tree_serialise_leaves format, then one line
                            ``declebm-history sha256 <hex>``
        arrays/             several processes (format 3): the carry's arrays, written by
                            Orbax's StandardCheckpointer, each process writing the shards
                            it holds
        history.sha256      (format 3) the line ``declebm-history sha256 <hex>``
        meta.json           step, history, the run's fingerprint, the size and sha256 of
                            every other file, the carry's leaf specs and a checksum of
                            meta.json's own content
    step-00000200/          the newest one; the two newest are kept
    .tmp-<pid>-...          a checkpoint being written (or left by a killed writer:
                            removed at the next save or load once that process is gone)

Why two formats: a single process holds every shard and needs nothing of Orbax, and with
Orbax loaded in the process, jaxlib 0.10.2 segfaulted inside XLA compilations of other
programs (three full test-suite runs of three, each in one pytest worker that had written
checkpoints through Orbax; none before). So a single process writes one file and loads
Orbax only to read a checkpoint of several processes.

A checkpoint is written into a temporary folder (with several processes, Orbax's arrays
by every process), its files fsync'd by process 0, renamed to ``step-<step>`` (atomic on
POSIX) and the parent folder fsync'd; only then are older ones removed. A kill at any
instant, of any process, leaves the newest complete checkpoint (or the one before)
intact. On load, each checkpoint is verified (files present, sizes, sha256, checksum,
every entry of meta.json present and of its type, a history of equal-length lists of
numbers); a damaged newest one falls back to the previous complete one with a warning,
and if none is intact the error names the damaged file. The run's fingerprint
(``run_fingerprint``: strategy and hyperparameters, optimizer, key, data, model
structure, batch size, EMA decay) must match the resuming call, otherwise a
``ValueError`` names what changed. The data's digest is the same however its rows are
split over processes, and the arrays are read onto the resuming run's devices (Orbax's
restore with its shardings; a whole ``state.eqx`` placed by ``_devices.place``): a
checkpoint resumes on another number of processes or devices.

The history is covered twice: by meta.json's checksum, and by its digest at the end of
state.eqx (or in history.sha256), whose sha256 meta.json records. So an edit of the
history that also recomputes meta.json's checksum (a tool rewriting meta.json) is still
refused. Neither is a signature: whoever rewrites both files and every digest is not
stopped. Checkpoints of format 1 (no history line in state.eqx) still resume, checked as
they were then.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ebm import trainable_filter
from ._hosts import agree, gather_digests, gather_ints, is_writer, local_rows, several, share_text
from ._serialise import (
    canonical_tree,
    describe,
    from_canonical_tree,
    fsync_dir,
    leaf_differences,
    leaf_specs,
    read_leaves,
    sha256_file,
    write_leaves,
)

FORMAT = "declebm-checkpoint"
_READS = (1, 2, 3)  # 1: state.eqx without the history line; 2: state.eqx with it; 3: Orbax's arrays/
KEEP = 2
_STATE = "state.eqx"  # formats 1 and 2
_ARRAYS = "arrays"
_HISTORY = "history.sha256"
_META = "meta.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP = re.compile(r"^\.tmp-(\d+)-")
_LEGACY_TMP = re.compile(r"\.tmp-(\d+)$")
_LEGACY = ("checkpoint.eqx", "checkpoint.json")
_DATA_HASH_LIMIT = 64 << 20  # bytes of data hashed in full; beyond, every k-th example


def _hook(stage: str, path: str) -> None:
    """Called at the instants a crash matters ("written": temp folder complete, not yet
    published; "published": renamed into place, older ones not yet removed; "removing":
    an old checkpoint renamed aside, not yet deleted). A no-op; tests replace it."""


# ---- the argument check ---------------------------------------------------------------


def check_checkpoint_dir(path: Any, *, resume: bool = False) -> str:
    """Check ``checkpoint_dir`` before training: a path to a folder that is (or can be)
    created and written. Without ``resume``, a folder that already holds checkpoints is
    refused (it would be overwritten by a new run). Returns the path as a ``str``."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir: expected a folder path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise ValueError("checkpoint_dir: expected a folder path, got an empty string")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"checkpoint_dir: {path!r} is an existing file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".tmp-{os.getpid()}-probe-{uuid.uuid4().hex[:8]}")
        with open(probe, "wb") as f:
            f.write(b"x")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"checkpoint_dir: {path!r} is not writable: cannot create or write to it ({type(e).__name__}: {e.strerror or e})"
        ) from None
    if not resume:
        steps = _complete_steps(path)
        if steps or any(os.path.exists(os.path.join(path, n)) for n in _LEGACY):
            what = f"checkpoints up to step {steps[-1][0]}" if steps else "a checkpoint"
            raise ValueError(
                f"checkpoint_dir: {path!r} already holds {what}; pass resume=True to continue that run, "
                f"or choose an empty folder (a new run would overwrite them)"
            )
    return path


# ---- what defines a run -----------------------------------------------------------------


def _stride(data: Any) -> int:
    """Every how many examples the data's digests read (1 up to ``_DATA_HASH_LIMIT`` bytes)."""
    nbytes = int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize
    if nbytes > _DATA_HASH_LIMIT and len(data.shape) >= 1 and data.shape[0] > 1:
        return int(np.ceil(nbytes / _DATA_HASH_LIMIT))
    return 1


def _rows_digest(indices: np.ndarray, rows: np.ndarray, stride: int) -> bytes:
    r"""The exclusive or, over the rows :math:`x_i` whose global index :math:`i` is a
    multiple of ``stride``, of :math:`\mathrm{sha256}(i \Vert \text{bytes of } x_i)`: a
    digest of the whole array that any split of its rows over processes computes in parts
    (each process the digest of its rows, then the exclusive or of the parts)."""
    acc = np.zeros(32, np.uint8)
    for i, row in zip(indices.tolist(), rows):
        if i % stride == 0:
            digest = hashlib.sha256(int(i).to_bytes(8, "little") + np.ascontiguousarray(row).tobytes()).digest()
            acc ^= np.frombuffer(digest, np.uint8)
    return acc.tobytes()


def _data_fingerprint(data: Any) -> dict:
    r"""The data's record in the run's fingerprint: shape, dtype and ``rows``, the digest of
    its rows (``_rows_digest``; beyond ``_DATA_HASH_LIMIT`` bytes, of every k-th example,
    said in ``hashed``), which is the same however the rows are split over processes, so a
    run resumes on another number of processes.

    With one process (or data that no other process holds a part of), ``sha256`` of the
    whole array too (the record of checkpoints before format 3). With the rows split over
    several processes, no process can read all of them: each one digests the rows it holds,
    the digests :math:`d_p` are gathered from every process (``per_process``, in process
    order, so that other rows on one process are named by its index) and ``rows`` is
    :math:`d_0 \oplus d_1 \oplus \dots`."""
    stride = _stride(data)
    out: dict[str, Any] = {"shape": [int(s) for s in data.shape], "dtype": str(data.dtype)}
    if stride > 1:
        out["hashed"] = f"every {stride}th example"
    if isinstance(data, jax.Array) and not data.is_fully_addressable and not data.is_fully_replicated:
        digests = gather_digests(_rows_digest(*local_rows(data), stride))
        combined = np.zeros(32, np.uint8)
        for d in digests:
            combined ^= np.frombuffer(d, np.uint8)
        out.update(rows=combined.tobytes().hex(), processes=len(digests), per_process=[d.hex() for d in digests])
        return out
    indices, rows = local_rows(data)  # replicated over processes: every process holds every row
    out["rows"] = _rows_digest(indices, rows, stride).hex()
    whole = rows[::stride] if stride > 1 else rows
    out["sha256"] = hashlib.sha256(np.ascontiguousarray(whole).tobytes()).hexdigest()
    return out


def _comparable_data(saved: Any, current: Any) -> tuple[Any, Any]:
    """Two data records reduced to what both can show: the per-process digests only when
    both runs had as many processes, each digest (``rows``, ``sha256``) only when both
    records hold it. Records with no digest in common differ."""
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        pairs = [_comparable_data(a, b) for a, b in zip(saved, current)]
        return [a for a, _ in pairs], [b for _, b in pairs]
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return saved, current
    saved, current = dict(saved), dict(current)
    if saved.get("processes", 1) != current.get("processes", 1):
        for record in (saved, current):
            record.pop("processes", None)
            record.pop("per_process", None)
    for digest in ("rows", "sha256"):
        if digest not in saved or digest not in current:
            saved.pop(digest, None)
            current.pop(digest, None)
    if "rows" not in saved and "sha256" not in saved:
        saved["digest"], current["digest"] = "sha256 of the whole array", "a digest of its rows"
    return saved, current


def _closure_values(fn: Any, depth: int = 0, seen: set | None = None) -> Any:
    """The numbers, strings and arrays captured by a function's closure (recursively):
    the hyperparameters of an optax transformation (learning rate, b1, b2, eps...)."""
    seen = set() if seen is None else seen
    if depth > 8 or id(fn) in seen:
        return "..."
    seen.add(id(fn))
    if isinstance(fn, (list, tuple)):
        return [_closure_values(v, depth + 1, seen) for v in fn]
    if isinstance(fn, dict):
        return {str(k): _closure_values(v, depth + 1, seen) for k, v in sorted(fn.items(), key=lambda kv: str(kv[0]))}
    cells = getattr(fn, "__closure__", None)
    code = getattr(fn, "__code__", None)
    if cells is None or code is None:
        return describe(fn, values=True)
    out = {}
    for name, cell in zip(code.co_freevars, cells):
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        if callable(v) and hasattr(v, "__code__"):
            out[name] = {"function": v.__qualname__, "closure": _closure_values(v, depth + 1, seen)}
        elif isinstance(v, (list, tuple, dict)):
            out[name] = _closure_values(v, depth + 1, seen)
        else:
            out[name] = describe(v, values=True)
    return out


def _probe_updates(optimizer: Any, params: Any) -> list[float]:
    """Two updates of ``optimizer`` from ``params`` on fixed probe gradients, summarised as
    ``[<u1, g1>, |u1|_1, <u2, g2>, |u2|_1]`` (one small compiled program)."""

    def probe(p):
        state, out = optimizer.init(p), []
        for phase in (0.0, 1.3):
            leaves, treedef = jax.tree.flatten(p)
            g = treedef.unflatten([
                (0.1 * jnp.cos(0.7 * jnp.arange(x.size, dtype=jnp.float32) + phase)).reshape(x.shape).astype(x.dtype)
                for x in leaves
            ])
            u, state = optimizer.update(g, state, p)
            p = eqx.apply_updates(p, u)
            pairs = list(zip(jax.tree.leaves(u), jax.tree.leaves(g)))
            out.append(sum(jnp.vdot(a.astype(jnp.float32), b.astype(jnp.float32)) for a, b in pairs))
            out.append(sum(jnp.sum(jnp.abs(a.astype(jnp.float32))) for a, _ in pairs))
        return jnp.stack(out)

    return [float(v) for v in np.asarray(jax.jit(probe)(params))]


def _optimizer_fingerprint(optimizer: Any, params: Any) -> dict:
    """Structure and hyperparameters of an optax optimizer: the type, the values its
    closures captured (learning rate, b1, b2, eps, schedules' constants...), the
    structure of ``init(params)``, and two updates on fixed probe gradients (on a small
    probe vector, or the parameters when the optimizer needs their structure)."""
    out: dict[str, Any] = {
        "type": type(optimizer).__name__,
        "init": _closure_values(getattr(optimizer, "init", None)),
        "update": _closure_values(getattr(optimizer, "update", None)),
    }
    try:
        out["state"] = describe(jax.eval_shape(optimizer.init, params), values=False)
    except Exception as e:  # noqa: BLE001 -- recorded, compared like any value
        out["state"] = f"unavailable ({type(e).__name__})"
    try:
        out["probe"] = _probe_updates(optimizer, jnp.linspace(-1.0, 1.0, 8))
    except Exception:  # noqa: BLE001 -- e.g. a transformation that needs the model's structure
        try:
            out["probe"] = _probe_updates(optimizer, params)
        except Exception as e:  # noqa: BLE001 -- e.g. an optimizer that needs extra arguments
            out["probe"] = f"unavailable ({type(e).__name__})"
    return out


def run_fingerprint(*, model: Any, data: Any, strategy: Any, optimizer: Any, key: Any, batch_size: int, ema_decay: Any) -> dict:
    """A JSON-able record of what defines a training run, stored in every checkpoint and
    compared on resume: the strategy (type, hyperparameters, sampler; ``num_chains``
    included), the optimizer (closure hyperparameters, state structure, a probe update),
    the key, the data (shape, dtype, sha256), the model's structure (trainable leaves by
    shape and dtype, fixed ones by value), ``batch_size`` and ``ema_decay``."""
    spec = trainable_filter(model)
    params, fixed = eqx.partition(model, spec)
    if jnp.issubdtype(getattr(key, "dtype", jnp.float32), jax.dtypes.prng_key):
        key_record = {"impl": str(jax.random.key_impl(key)), "data": np.asarray(jax.random.key_data(key)).tolist()}
    else:
        key_record = {"impl": "raw", "data": np.asarray(key).tolist()}
    run = {
        "strategy": describe(strategy, values=True),
        "optimizer": _optimizer_fingerprint(optimizer, params),
        "key": key_record,
        "data": [_data_fingerprint(a) for a in data] if isinstance(data, tuple) else _data_fingerprint(data),
        "model": {"trainable": describe(params, values=False), "fixed": describe(fixed, values=True)},
        "batch_size": int(batch_size),
        "ema_decay": None if ema_decay is None else float(ema_decay),
    }
    return json.loads(json.dumps(run))  # exactly what a JSON round trip gives back


_WHAT = {
    "model": "model structure",
    "data": "data",
    "key": "key",
    "strategy": "strategy or strategy hyperparameters (sampler, steps, num_chains, ...)",
    "optimizer": "learning rate/optimizer",
    "batch_size": "batch_size",
    "ema_decay": "ema_decay",
}


def _differences(saved: Any, current: Any, path: str, out: list, tolerant: bool = False) -> None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in list(saved) + [k for k in current if k not in saved]:
            if k not in saved or k not in current:
                out.append((f"{path}.{k}", saved.get(k, "(absent)"), current.get(k, "(absent)")))
            else:
                sub = path if k == "fields" else f"{path}.{k}"
                _differences(saved[k], current[k], sub, out, tolerant or k == "probe")
    elif isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current)):
            _differences(a, b, f"{path}[{i}]", out, tolerant)
    elif tolerant and isinstance(saved, float) and isinstance(current, float):
        # Probe updates: another device may round differently; a changed learning rate
        # changes them by far more than 1e-3 relative.
        if not np.isclose(saved, current, rtol=1e-3, atol=1e-9):
            out.append((path, saved, current))
    elif saved != current:
        out.append((path, saved, current))


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "..."


def compare_runs(saved: dict, current: dict, directory: str) -> None:
    """Raise a ValueError naming what differs between a checkpoint's run and this call's."""
    diffs: list = []
    if isinstance(saved, dict) and isinstance(current, dict) and "data" in saved and "data" in current:
        saved, current = dict(saved), dict(current)
        saved["data"], current["data"] = _comparable_data(saved["data"], current["data"])
    _differences(saved, current, "", diffs)
    if any(p.startswith(".model") for p, _, _ in diffs):
        # The optimizer's state and probe follow the model's structure: name the model only.
        diffs = [d for d in diffs if not d[0].startswith((".optimizer.state", ".optimizer.probe"))]
    if not diffs:
        return
    order = list(_WHAT)
    diffs.sort(key=lambda d: order.index(d[0].split(".")[1].split("[")[0]) if d[0].split(".")[1].split("[")[0] in order else len(order))
    tops = []
    for p, _, _ in diffs:
        top = p.split(".")[1].split("[")[0]
        if top not in tops:
            tops.append(top)
    shown = "; ".join(f"{p[1:]}: {_short(a)} in the checkpoint, {_short(b)} now" for p, a, b in diffs[:3])
    more = f" (and {len(diffs) - 3} more differences)" if len(diffs) > 3 else ""
    raise ValueError(
        f"resume: the checkpoint in {directory!r} was written with a different "
        f"{' and '.join(_WHAT.get(t, t) for t in tops)}: {shown}{more}. Resume with the same settings, "
        f"or start a new run in another checkpoint_dir."
    )


# ---- the folder ---------------------------------------------------------------------------


def _complete_steps(directory: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every published checkpoint folder, oldest first."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        m = _STEP_DIR.match(name)
        if m and os.path.isdir(os.path.join(directory, name)):
            out.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(out)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def clean_temporaries(directory: str) -> None:
    """Remove what writers killed mid-write left behind (``.tmp-<pid>-*``, and the old
    layout's ``*.tmp-<pid>``), unless that process is still running."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        m = _TMP.match(name) or _LEGACY_TMP.search(name)
        if m and not _alive(int(m.group(1))):
            _remove(os.path.join(directory, name))


def _new_temporary(directory: str, step: int) -> str:
    """Make ``directory`` if needed, remove what interrupted writes left in it, and make the
    empty temporary folder that step ``step``'s checkpoint is written into."""
    os.makedirs(directory, exist_ok=True)
    clean_temporaries(directory)
    tmp = _temp_name(directory, f"step-{step}")
    os.mkdir(tmp)
    return tmp


def _temp_name(directory: str, what: str) -> str:
    return os.path.join(directory, f".tmp-{os.getpid()}-{what}-{uuid.uuid4().hex[:8]}")


def _meta_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _history_line(history: dict) -> bytes:
    """The line ending state.eqx: the sha256 of the history as meta.json records it."""
    digest = hashlib.sha256(json.dumps(history, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return b"declebm-history sha256 " + digest.encode() + b"\n"


_HISTORY_LINE_BYTES = len(_history_line({}))

#: meta.json's entries and what each must be (besides "format", "version", "checksum").
_META_ENTRIES = {"step": (int, "an integer"), "run": (dict, "an object"), "history": (dict, "an object"),
                 "files": (dict, "an object"), "carry": (list, "a list")}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _meta_problem(meta: dict, mpath: str) -> str:
    """Why ``meta`` (checksum valid) cannot describe a checkpoint, or ``""``: a missing
    entry or one of another type, or a history that is not equal-length lists of numbers."""
    for key, (kind, what) in _META_ENTRIES.items():
        if key not in meta:
            return f"{mpath} has no {key!r} entry"
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            return f"{mpath}: its {key!r} entry is {type(meta[key]).__name__}, expected {what}"
    files = meta["files"]
    for name, record in files.items():
        if not (isinstance(record, dict) and _is_number(record.get("bytes")) and isinstance(record.get("sha256"), str)):
            return f"{mpath}: its 'files' entry does not record the size and sha256 of {name}"
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            return f"{mpath}: its 'files' entry names {name!r}, a path outside its checkpoint folder"
    needed = [_STATE] if meta.get("version") in (1, 2) else [_HISTORY]
    if any(n not in files for n in needed) or (meta.get("version") == 3 and not any(n.startswith(_ARRAYS + "/") for n in files)):
        what = _STATE if meta.get("version") in (1, 2) else f"{_HISTORY} and the files of {_ARRAYS}/"
        return f"{mpath}: its 'files' entry does not record the size and sha256 of {what}"
    lengths = set()
    for name, values in meta["history"].items():
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            return f"{mpath}: its history entry {name!r} is not a list of numbers"
        lengths.add(len(values))
    if len(lengths) > 1:
        return f"{mpath}: its history's entries have different lengths ({sorted(lengths)})"
    if not all(isinstance(v, int) and v >= 0 for v in meta["history"].get("step", [])):
        return f"{mpath}: its history's 'step' entry holds a value that is not a step count"
    return ""


def _stored_arrays(carry: Any) -> dict[str, Any]:
    """The arrays of ``carry`` that Orbax writes, named by their index among the leaves of
    ``canonical_tree(carry)`` (``"000003"``): PRNG keys as their key data, NumPy values and
    Python numbers as NumPy arrays. Arrays of size 0 (no data; Orbax refuses them) and
    leaves that are not arrays come back from the template."""
    out = {}
    for i, leaf in enumerate(jax.tree.leaves(canonical_tree(carry))):
        if isinstance(leaf, jax.Array):
            value = jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
        elif isinstance(leaf, (np.ndarray, np.generic, bool, int, float, complex)):
            value = np.asarray(leaf)
        else:
            continue
        if value.size:
            out[f"{i:06d}"] = value
    return out


def _restore_arrays(path: str, like: Any) -> Any:
    """What ``_stored_arrays`` wrote in ``path``, read by Orbax into ``like``'s structure:
    each array of ``like`` read onto its sharding (with several processes, each one reads
    the shards it holds; a checkpoint of another number of devices or processes is read
    onto this one's), NumPy values and numbers as NumPy values and numbers."""
    import orbax.checkpoint as ocp

    leaves, treedef = jax.tree.flatten(canonical_tree(like))
    target: dict[str, Any] = {}
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.Array):
            value = jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
            if value.size:
                target[f"{i:06d}"] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=value.sharding)
        elif isinstance(leaf, (np.ndarray, np.generic, bool, int, float, complex)) and np.size(leaf):
            target[f"{i:06d}"] = np.asarray(leaf)
    checkpointer = ocp.StandardCheckpointer()
    try:
        read = checkpointer.restore(os.path.abspath(path), target) if target else {}
    finally:
        checkpointer.close()
    out = []
    for i, leaf in enumerate(leaves):
        name = f"{i:06d}"
        if name not in target:
            out.append(leaf)
        elif isinstance(leaf, jax.Array):
            value = read[name]
            out.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf))
                       if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else value)
        elif isinstance(leaf, (np.ndarray, np.generic)):
            out.append(np.asarray(read[name], leaf.dtype).reshape(np.shape(leaf)))
        else:
            out.append(type(leaf)(np.asarray(read[name]).item()))
    return from_canonical_tree(jax.tree.unflatten(treedef, out), like)


def save_checkpoint(directory: str, carry: Any, history: dict, *, step: int, run: dict, keep: int = KEEP) -> str:
    """Write the checkpoint of ``step`` as one unit and keep the ``keep`` newest.

    The arrays are written by Orbax (``orbax.checkpoint.StandardCheckpointer``) into the
    temporary folder's ``arrays/``; process 0 then records the size and sha256 of every
    file, writes meta.json and publishes the folder with a rename. With several processes
    (``jax.distributed``) every process calls it: process 0 makes the temporary folder and
    shares its name, Orbax has every process write the shards it holds of the arrays split
    over the processes (chains, buffers, particles; nothing is gathered) and the replicated
    ones once, and every process returns once the checkpoint is published (if process 0
    fails, the others raise too). Returns the path of the published ``step-<step>`` folder."""
    directory, step = os.fspath(directory), int(step)
    what = f"checkpoint_dir: writing the checkpoint of step {step} in {directory!r}"
    recorded = json.loads(json.dumps({k: np.asarray(v).tolist() for k, v in history.items()}))
    if not several():  # one process holds every shard: one file (format 2), Orbax not loaded
        tmp = _new_temporary(directory, step)
        try:
            with open(os.path.join(tmp, _STATE), "wb") as f:
                write_leaves(f, carry)
                f.write(_history_line(recorded))
                f.flush()
                os.fsync(f.fileno())
            return _publish(directory, tmp, step=step, run=run, history=recorded, specs=leaf_specs(carry), keep=keep,
                            version=2)
        except BaseException:
            _remove(tmp)
            raise

    import orbax.checkpoint as ocp

    arrays = _stored_arrays(carry)
    tmp = None
    if is_writer():
        try:
            tmp = _new_temporary(directory, step)
        except BaseException:
            share_text(None, what)
            raise
    tmp = share_text(tmp, what)
    try:
        checkpointer = ocp.StandardCheckpointer()
        try:
            checkpointer.save(os.path.abspath(os.path.join(tmp, _ARRAYS)), arrays)  # Orbax takes absolute paths
            checkpointer.wait_until_finished()
        finally:
            checkpointer.close()
        _hook("arrays", tmp)
        if not is_writer():
            agree(True, what)
            return os.path.join(directory, f"step-{step:08d}")
        final = _publish(directory, tmp, step=step, run=run, history=recorded, specs=leaf_specs(carry), keep=keep,
                         version=3)
    except BaseException:
        if is_writer():
            _remove(tmp)
            agree(False, what)
        raise
    agree(True, what)
    return final


def _file_records(folder: str) -> dict[str, dict]:
    """``{path relative to folder: {"bytes": size, "sha256": digest}}`` of every file under
    ``folder`` (each one fsync'd, and every folder, as it is read)."""
    out = {}
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                os.fsync(f.fileno())
            size, digest = sha256_file(full)
            out[os.path.relpath(full, folder).replace(os.sep, "/")] = {"bytes": size, "sha256": digest}
        fsync_dir(root)
    return out


def _publish(directory: str, tmp: str, *, step: int, run: dict, history: dict, specs: list, keep: int,
             version: int) -> str:
    """Process 0's part of a save, once the carry is in ``tmp``: the history's digest (its
    own file in format 3; format 2 ends state.eqx with it), meta.json (every file's size
    and sha256, its own checksum), the rename into place and the retirement of older
    checkpoints."""
    if version == 3:
        with open(os.path.join(tmp, _HISTORY), "wb") as f:
            f.write(_history_line(history))
            f.flush()
            os.fsync(f.fileno())
    meta = {
        "format": FORMAT,
        "version": version,
        "step": step,
        "run": run,
        "history": history,
        "files": _file_records(tmp),
        "carry": specs,
    }
    meta["checksum"] = _meta_checksum(meta)
    with open(os.path.join(tmp, _META), "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    _hook("written", tmp)
    final = os.path.join(directory, f"step-{step:08d}")
    if os.path.exists(final):  # the same step again (e.g. saved on interrupt): swap
        aside = _temp_name(directory, "replaced")
        os.rename(final, aside)
        os.rename(tmp, final)
        _remove(aside)
    else:
        os.rename(tmp, final)
    fsync_dir(directory)
    _hook("published", final)
    # Older than the newest `keep`, or newer than this one (a damaged or abandoned later
    # checkpoint that resume fell back from).
    _retire(directory, step, keep, newer=True)
    return final


def _retire(directory: str, step: int, keep: int, *, newer: bool) -> None:
    """Remove the checkpoints older than the ``keep`` newest up to ``step`` (and, with
    ``newer``, those after ``step``): each renamed aside, then deleted, so a kill midway
    leaves no half-deleted checkpoint."""
    steps = _complete_steps(directory)
    upto = [sp for sp in steps if sp[0] <= step]
    retired = upto[:-keep] + ([sp for sp in steps if sp[0] > step] if newer else [])
    for _, path in retired:
        aside = _temp_name(directory, "old")
        os.rename(path, aside)
        _hook("removing", aside)
        _remove(aside)
    if retired:
        fsync_dir(directory)


def _verify(path: str) -> tuple[dict | None, str]:
    """``(meta, "")`` for an intact checkpoint folder, ``(None, reason)`` otherwise."""
    mpath, spath = os.path.join(path, _META), os.path.join(path, _STATE)
    if not os.path.isfile(mpath):
        return None, f"{mpath} is missing"
    try:
        with open(mpath) as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"{mpath} is not valid JSON ({type(e).__name__})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None, f"{mpath} is not a declebm checkpoint description"
    if meta.get("checksum") != _meta_checksum(meta):
        return None, f"{mpath} is corrupt (its checksum does not match its content)"
    if isinstance(meta.get("version"), bool) or meta.get("version") not in _READS:
        return None, f"{mpath} has format version {meta.get('version')}, this declebm reads {', '.join(map(str, _READS))}"
    problem = _meta_problem(meta, mpath)
    if problem:
        return None, problem
    m = _STEP_DIR.match(os.path.basename(path))
    if m is None or int(m.group(1)) != meta.get("step"):
        return None, f"{mpath} records step {meta.get('step')}, its folder is {os.path.basename(path)}"
    for name, expected in sorted(meta["files"].items(), key=lambda kv: (kv[0] != _STATE, kv[0])):
        fpath = os.path.join(path, *name.split("/"))
        if not os.path.isfile(fpath):
            return None, f"{fpath} is missing"
        size, digest = sha256_file(fpath)
        if size != expected["bytes"]:
            return None, f"{fpath} is truncated or damaged ({size} bytes, {expected['bytes']} expected)"
        if digest != expected["sha256"]:
            return None, f"{fpath} is corrupt (its sha256 does not match the one in {_META})"
    if meta["version"] >= 2:  # the history's digest: the last line of state.eqx, or history.sha256
        hpath = spath if meta["version"] == 2 else os.path.join(path, _HISTORY)
        with open(hpath, "rb") as f:
            f.seek(max(os.path.getsize(hpath) - _HISTORY_LINE_BYTES, 0))
            line = f.read()
        if line != _history_line(meta["history"]):
            where = f"at the end of {spath}" if meta["version"] == 2 else f"in {hpath}"
            return None, (
                f"{mpath}: its history does not match the one recorded {where} "
                f"(the history was edited after the checkpoint was written)"
            )
    return meta, ""


def load_checkpoint(directory: str, like: Any, *, run: dict, num_steps: int) -> tuple[Any, dict] | None:
    """The newest intact checkpoint in ``directory`` read into the structure of ``like``
    (each array onto the sharding of ``like``'s), with its history; ``None`` when the
    folder holds no checkpoint.

    Raises ``ValueError`` when the checkpoint was written by a different run (naming what
    changed), when ``num_steps`` is below its step, or when every checkpoint is damaged
    (naming the file). A damaged newest checkpoint with an intact older one gives a
    warning and the older one.

    With several processes, every one finds and checks the checkpoint (``checkpoint_dir``
    must be a folder they share), and they check that they all found the same step before
    any reads it: otherwise a ``ValueError`` names what each one found. A process whose
    check fails raises its error after that, the others the mismatch, so that none waits
    for the others forever. The checkpoint may come from any number of processes and
    devices: Orbax reads onto this run's."""
    directory = os.fspath(directory)
    try:
        found, error = _find(directory, like, run=run, num_steps=num_steps), None
    except Exception as e:  # noqa: BLE001 -- re-raised once every process has reported
        found, error = None, e
    if several():
        steps = gather_ints(-2 if error is not None else -1 if found is None else found[0])
        if error is None and len(set(steps)) > 1:
            seen = {-2: "an error", -1: "no checkpoint"}
            error = ValueError(
                f"checkpoint_dir: the processes found different checkpoints in {directory!r} ("
                + ", ".join(f"process {i}: {seen.get(s, f'step {s}')}" for i, s in enumerate(steps))
                + "); with several processes, checkpoint_dir must be one folder that every process reads "
                "(a shared file system)"
            )
    if error is not None:
        raise error
    if found is None:
        return None
    step, path, meta = found
    carry = _read_state(path, meta, like)
    # A kill between publishing a checkpoint and retiring the oldest leaves one too many:
    # a resume keeps the promise of the `KEEP` newest (the damaged newer ones stay until
    # the next save replaces them).
    if is_writer():
        _retire(directory, step, KEEP, newer=False)
    return carry, {k: np.asarray(v) for k, v in meta["history"].items()}


def _find(directory: str, like: Any, *, run: dict, num_steps: int) -> tuple[int, str, dict] | None:
    """``(step, path, meta)`` of the newest intact checkpoint, checked against this call
    (its run, ``num_steps``, the structure of ``like``); ``None`` when there is none."""
    if is_writer():  # with several processes, every one reads; process 0 alone tidies
        clean_temporaries(directory)
    candidates = _complete_steps(directory)
    if not candidates:
        legacy = [n for n in _LEGACY if os.path.exists(os.path.join(directory, n))]
        if legacy:
            raise ValueError(
                f"resume: {os.path.join(directory, legacy[0])!r} is a checkpoint in the layout of an older "
                f"declebm, which cannot be resumed; start a new run in another checkpoint_dir"
            )
        return None
    damaged = []
    for step, path in reversed(candidates):
        meta, reason = _verify(path)
        if meta is None:
            damaged.append((path, reason))
            continue
        if damaged:
            warnings.warn(
                f"resume: the newest checkpoint is damaged ({'; '.join(r for _, r in damaged)}); "
                f"resuming from the previous complete checkpoint {path} (step {step})",
                stacklevel=4,
            )
        _check(path, meta, like, run=run, num_steps=num_steps, directory=directory)
        return step, path, meta
    raise ValueError(
        f"resume: every checkpoint in {directory!r} is damaged: {'; '.join(r for _, r in damaged)}. "
        f"Remove the folder to start over, or restore it from a backup."
    )


def _check(path: str, meta: dict, like: Any, *, run: dict, num_steps: int, directory: str) -> None:
    compare_runs(meta["run"], run, directory)
    step = int(meta["step"])
    if num_steps < step:
        raise ValueError(
            f"num_steps: {num_steps} is below the step {step} of the checkpoint in {directory!r}; a resumed run "
            f"cannot go back. Pass num_steps >= {step}, or start a new run in another checkpoint_dir."
        )
    differences = leaf_differences(meta["carry"], like)
    if differences:
        where = os.path.join(path, _STATE if meta["version"] < 3 else _ARRAYS)
        raise ValueError(
            f"resume: {where} holds a training state of another structure than this call's: "
            + "; ".join(differences).replace("template", "this call")
        )


def _read_state(path: str, meta: dict, like: Any) -> Any:
    """The training carry of an intact checkpoint (``_find``), read into ``like``."""
    where = os.path.join(path, _STATE if meta["version"] < 3 else _ARRAYS)
    try:
        if meta["version"] < 3:
            with open(where, "rb") as f:
                carry = read_leaves(f, like, meta["carry"])
        else:
            carry = _restore_arrays(where, like)
    except Exception as e:  # noqa: BLE001 -- re-raised with the file named
        raise ValueError(f"resume: cannot read {where} ({type(e).__name__}: {e})") from e
    saved_step = getattr(carry, "step", None)
    if saved_step is not None and int(saved_step) != int(meta["step"]):
        raise ValueError(f"resume: {where} holds step {int(saved_step)}, its {_META} says {meta['step']}")
    return carry
