"""Save and load a model: ``declebm.save(path, model)``, ``declebm.load(path, like=None)``.

A model file is one unit, written to a temporary file and renamed into place::

    declebm-model 1\\n
    <one line of JSON: the header>\\n
    <the leaves, in Equinox's ``tree_serialise_leaves`` format>

The header records the class, every leaf's path, shape and dtype, the size and sha256 of
the leaves (so truncation and flipped bytes are caught), and, when the model knows how
to rebuild itself, a *rebuild recipe*.

Rebuild recipe (the ``constructor_kwargs`` convention). A module class that defines::

    def constructor_kwargs(self) -> dict:
        "The arguments that rebuild this module's structure (declebm.save/load)."
        return dict(in_size=self.in_size, width=..., activation=self.activation)

can be loaded without a template: ``load`` imports the class by its recorded import path
(``importlib``; the core never imports ``declebm.models`` statically), calls
``cls(**kwargs)`` (with ``key=jax.random.key(0)`` added when the constructor takes a
``key``), and then overwrites every leaf with the saved values, so the kwargs only need
to fix the *structure*. Values may be ``None``, bools, numbers, strings, lists, tuples,
dicts, arrays, other modules that follow the convention, and activations from
``ACTIVATIONS`` (``jax.nn.silu``, ``jnp.tanh``, ...). ``EBM`` itself (energy, base
``None``, ``log_z``, ``inverse_temperature``, ``event_shape``) is handled here. Anything
else (a custom activation, a NumPyro base density, a module without the method) is saved
without a recipe, and ``load`` then asks for ``like=``: a model of the same structure,
Equinox's convention (``eqx.tree_deserialise_leaves``).

``load`` imports the module named in the file; load files you trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import io
import json
import os
import re
import tempfile
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._ebm import EBM

_MAGIC = b"declebm-model 1\n"

#: Activations a rebuild recipe can name (a function is recorded by its name here).
ACTIVATIONS: dict[str, Callable] = {
    "jax.nn.silu": jax.nn.silu,
    "jax.nn.relu": jax.nn.relu,
    "jax.nn.gelu": jax.nn.gelu,
    "jax.nn.elu": jax.nn.elu,
    "jax.nn.celu": jax.nn.celu,
    "jax.nn.selu": jax.nn.selu,
    "jax.nn.softplus": jax.nn.softplus,
    "jax.nn.sigmoid": jax.nn.sigmoid,
    "jax.nn.leaky_relu": jax.nn.leaky_relu,
    "jax.nn.log_sigmoid": jax.nn.log_sigmoid,
    "jax.nn.tanh": jax.nn.tanh,
    "jax.numpy.tanh": jnp.tanh,
    "jax.numpy.sin": jnp.sin,
    "equinox.nn.Identity": eqx.nn.Identity(),
}


# ---- small shared helpers (also used by _checkpoint) ----------------------------------


def fsync_dir(path: str) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str) -> tuple[int, str]:
    """``(size in bytes, sha256 hex digest)`` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def leaf_specs(tree: Any) -> list[list]:
    """``[path, shape, dtype]`` of every array leaf and ``[path, type]`` of every other leaf."""
    out = []
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        name = jtu.keystr(path)
        if _is_array(leaf):
            out.append([name, [int(s) for s in np.shape(leaf)], str(leaf.dtype)])
        else:
            out.append([name, type(leaf).__name__])
    return out


def diff_leaf_specs(saved: list, current: list, limit: int = 3) -> list[str]:
    """Readable differences between two ``leaf_specs`` lists (at most ``limit``)."""
    saved_d = {s[0]: s[1:] for s in saved}
    current_d = {s[0]: s[1:] for s in current}
    out = []
    for name, spec in saved_d.items():
        if name not in current_d:
            out.append(f"leaf {name or '(root)'} is in the file but not in the template")
        elif current_d[name] != spec:
            out.append(f"leaf {name or '(root)'}: {_fmt_spec(spec)} in the file, {_fmt_spec(current_d[name])} in the template")
    for name in current_d:
        if name not in saved_d:
            out.append(f"leaf {name or '(root)'} is in the template but not in the file")
    if len(out) > limit:
        out = out[:limit] + [f"and {len(out) - limit} more"]
    return out


def _fmt_spec(spec: list) -> str:
    return f"shape {tuple(spec[0])} {spec[1]}" if len(spec) == 2 else f"a {spec[0]}"


def atomic_write_bytes(path: str, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``path`` through a temporary file in the same folder,
    fsync'd and renamed into place: readers see the old file or the whole new one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-{os.getpid()}-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


# ---- rebuild recipes -------------------------------------------------------------------


class _NoRecipe(Exception):
    pass


def _import_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _constructor_kwargs(module: Any) -> dict:
    if isinstance(module, EBM):
        return dict(
            energy=module.energy_module,
            base=module.base,
            log_z=module.log_z,
            inverse_temperature=module.inverse_temperature,
            event_shape=module.event_shape,
        )
    method = getattr(type(module), "constructor_kwargs", None)
    if method is None:
        raise _NoRecipe(f"{type(module).__name__} has no constructor_kwargs() method")
    kwargs = module.constructor_kwargs()
    if not isinstance(kwargs, dict):
        raise _NoRecipe(f"{type(module).__name__}.constructor_kwargs() returned a {type(kwargs).__name__}, not a dict")
    return kwargs


def _encode(value: Any, where: str) -> Any:
    """A JSON-able recipe of ``value`` (raises _NoRecipe for what cannot be recorded)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"__float__": repr(value)}
    for name, fn in ACTIVATIONS.items():
        if value is fn:
            return {"__function__": name}
    if isinstance(value, eqx.Module) and (isinstance(value, EBM) or hasattr(type(value), "constructor_kwargs")):
        kwargs = _constructor_kwargs(value)
        return {
            "__module__": _import_path(type(value)),
            "kwargs": {k: _encode(v, f"{where}.{k}") for k, v in kwargs.items()},
        }
    if _is_array(value) and not isinstance(value, jax.ShapeDtypeStruct):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" or arr.size > 100_000:
            raise _NoRecipe(f"{where} is an array of dtype {arr.dtype} and size {arr.size}")
        return {"__array__": arr.tolist(), "dtype": str(arr.dtype), "shape": list(arr.shape)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
    if isinstance(value, eqx.Module):
        raise _NoRecipe(f"{where} is a {type(value).__name__}, which has no constructor_kwargs() method")
    if callable(value):
        name = getattr(value, "__name__", type(value).__name__)
        known = ", ".join(ACTIVATIONS)
        raise _NoRecipe(f"{where} = {name} cannot be recorded: a function must be one of {known}")
    raise _NoRecipe(f"{where} is a {type(value).__name__}, which cannot be recorded")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__function__" in value:
        return ACTIVATIONS[value["__function__"]]
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v) for k, v in value["__dict__"].items()}
    if "__array__" in value:
        return jnp.asarray(np.asarray(value["__array__"], dtype=value["dtype"]).reshape(value["shape"]))
    if "__module__" in value:
        module_name, _, qualname = value["__module__"].partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, eqx.Module)):
            raise TypeError(f"{value['__module__']} is not an Equinox module class")
        kwargs = {k: _decode(v) for k, v in value["kwargs"].items()}
        if "key" in inspect.signature(obj).parameters and "key" not in kwargs:
            kwargs["key"] = jax.random.key(0)  # any key: every leaf is overwritten by the file
        return obj(**kwargs)
    raise ValueError(f"unknown recipe entry {sorted(value)}")


# ---- save / load -------------------------------------------------------------------------


def save(path: str | os.PathLike, model: Any) -> None:
    """Save ``model`` (any Equinox module or pytree of arrays) to the file ``path``.

    The file holds the leaves (Equinox's ``tree_serialise_leaves``), their paths, shapes,
    dtypes and sha256, and, for the shipped models (``EBM`` without a base density, and
    every module with a ``constructor_kwargs()`` method: ``MLPEnergy``,
    ``NoiseConditionedMLPEnergy``, ``GaussianEnergy``), a recipe that rebuilds it, so
    ``load(path)`` needs no template. The write is atomic: a temporary file in the same
    folder, fsync'd, then renamed over ``path``.

    A module of your own gets a recipe by defining ``constructor_kwargs(self) -> dict``,
    the keyword arguments that rebuild its structure (``load`` calls ``cls(**kwargs)``,
    adding ``key=jax.random.key(0)`` if the constructor takes a key, then overwrites every
    leaf). Values may be ``None``, numbers, strings, lists, tuples, dicts, arrays, modules
    with the same method, and the activations ``jax.nn.silu``, ``relu``, ``gelu``,
    ``elu``, ``celu``, ``selu``, ``softplus``, ``sigmoid``, ``leaky_relu``,
    ``log_sigmoid``, ``jnp.tanh``, ``jnp.sin``. Without a recipe (a custom activation,
    a NumPyro base density) the model is still saved; ``load`` then needs ``like=``.

    Arguments:
        path: the file to write (its folder must exist); conventionally ``*.eqx``.
        model: what to save.
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path: {path!r} is a directory; give a file name such as {os.path.join(path, 'model.eqx')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path: the folder {folder!r} does not exist")
    leaves = jax.tree.leaves(model)
    if not leaves:
        raise ValueError(f"model: expected a model with arrays to save, got {type(model).__name__} with none")
    buf = io.BytesIO()
    try:
        eqx.tree_serialise_leaves(buf, model)
    except Exception as e:  # noqa: BLE001 -- re-raised with the argument named
        raise TypeError(f"model: cannot serialise a {type(model).__name__} ({type(e).__name__}: {e})") from e
    body = buf.getvalue()
    try:
        recipe, no_recipe = _encode(model, type(model).__name__), None
    except _NoRecipe as e:
        recipe, no_recipe = None, str(e)
    header = {
        "class": _import_path(type(model)),
        "leaves": leaf_specs(model),
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "recipe": recipe,
        "no_recipe": no_recipe,
    }
    line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    atomic_write_bytes(path, [_MAGIC, line, body])


def _read_model_file(path: str) -> tuple[dict, bytes]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"path: no such file {path!r}") from None
    except IsADirectoryError:
        raise ValueError(f"path: {path!r} is a directory, not a model file") from None
    if not raw.startswith(_MAGIC):
        raise ValueError(
            f"path: {path!r} is not a model file written by declebm.save (it does not start with {_MAGIC[:-1]!r})"
        )
    end = raw.find(b"\n", len(_MAGIC))
    try:
        if end < 0:
            raise ValueError("no end of header")
        header = json.loads(raw[len(_MAGIC) : end])
        body = raw[end + 1 :]
        expected, digest = int(header["bytes"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"path: the header of {path!r} is damaged ({type(e).__name__}: {e})") from None
    if len(body) != expected:
        raise ValueError(f"path: {path!r} is truncated or damaged: {len(body)} bytes of leaves, the header says {expected}")
    if hashlib.sha256(body).hexdigest() != digest:
        raise ValueError(f"path: {path!r} is corrupt: the leaves' sha256 does not match the one in its header")
    return header, body


def load(path: str | os.PathLike, like: Any = None) -> Any:
    """Load a model saved by ``save``.

    Arguments:
        path: the file.
        like: a model of the same structure whose leaves are replaced by the saved ones
            (Equinox's convention). Optional for the shipped models, which the file can
            rebuild (the class is imported by its recorded import path); required for any
            other module.

    Raises:
        ValueError: the file is missing, not a declebm model file, truncated or corrupt
            (checked with the sha256 in its header), or ``like`` has another structure
            (the message names the leaves that differ).
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    header, body = _read_model_file(path)
    if like is None:
        if header.get("recipe") is None:
            raise ValueError(
                f"like: the model in {path!r} ({header.get('class')}) cannot be rebuilt from the file "
                f"({header.get('no_recipe')}); pass like=, a model of the same structure (its values do not matter), "
                f"e.g. load({path!r}, like=EBM(MyEnergy(..., key=jax.random.key(0))))"
            )
        try:
            like = _decode(header["recipe"])
        except Exception as e:  # noqa: BLE001 -- re-raised with the file named
            raise ValueError(
                f"path: cannot rebuild {header.get('class')} recorded in {path!r} ({type(e).__name__}: {e}); "
                f"pass like=, a model of the same structure"
            ) from e
        # The recipe fixes the structure; the dtypes are the file's (e.g. float64 under x64).
        dtypes = {s[0]: s[2] for s in header["leaves"] if len(s) == 3}
        like = jtu.tree_map_with_path(
            lambda p, x: x.astype(dtypes[jtu.keystr(p)])
            if isinstance(x, jax.Array) and jtu.keystr(p) in dtypes and str(x.dtype) != dtypes[jtu.keystr(p)]
            else x,
            like,
        )
        from_where = "the rebuilt model"
    else:
        from_where = "like"
    differences = diff_leaf_specs(header["leaves"], leaf_specs(like))
    if differences:
        raise ValueError(
            f"{'like' if from_where == 'like' else 'path'}: the model in {path!r} ({header.get('class')}) does not match "
            f"{from_where} ({type(like).__name__}): " + "; ".join(differences)
        )
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(body), like)
    except Exception as e:  # noqa: BLE001 -- re-raised with the file named
        raise ValueError(f"path: cannot read the leaves of {path!r} into {type(like).__name__} ({type(e).__name__}: {e})") from e


# ---- describing a run (used by the checkpoint fingerprint) -------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _qualified_name(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        wrapped = getattr(obj, "__wrapped__", None) or getattr(obj, "fun", None)
        if wrapped is not None and wrapped is not obj:
            return _qualified_name(wrapped)
        return _ADDRESS.sub("", repr(obj))[:200]
    return f"{getattr(obj, '__module__', '?')}.{name}"


def _float(x: float) -> Any:
    return x if np.isfinite(x) else repr(x)


def describe(x: Any, *, values: bool = True, depth: int = 0) -> Any:
    """A JSON-able description of ``x`` that two processes agree on: modules and
    dataclasses by type and fields (static ones included), arrays by shape, dtype and
    (if ``values``) their values or a sha256, functions by qualified name, other objects
    by their repr without memory addresses."""
    if depth > 24:
        return "..."
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return _float(x)
    if _is_array(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return {"shape": list(x.shape), "dtype": str(x.dtype)}
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return {"key": str(jax.random.key_impl(x)), "data": np.asarray(jax.random.key_data(x)).tolist()}
        out: dict[str, Any] = {"shape": list(np.shape(x)), "dtype": str(x.dtype)}
        if values:
            arr = np.asarray(x)
            if arr.size <= 16 and arr.dtype.kind in "biuf":
                out["values"] = [_float(float(v)) if arr.dtype.kind == "f" else int(v) for v in arr.ravel()]
            else:
                out["sha256"] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
        return out
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {
            "type": _qualified_name(type(x)),
            "fields": {f.name: describe(getattr(x, f.name, None), values=values, depth=depth + 1) for f in dataclasses.fields(x)},
        }
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # NamedTuple
        return {"type": _qualified_name(type(x)), "fields": {k: describe(v, values=values, depth=depth + 1) for k, v in zip(x._fields, x)}}
    if isinstance(x, (list, tuple)):
        return [describe(v, values=values, depth=depth + 1) for v in x]
    if isinstance(x, dict):
        return {str(k): describe(v, values=values, depth=depth + 1) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if callable(x) and not hasattr(x, "tree_flatten"):
        return {"function": _qualified_name(x)}
    leaves, treedef = jax.tree_util.tree_flatten(x)
    if not (len(leaves) == 1 and leaves[0] is x):  # a registered pytree (e.g. a NumPyro distribution)
        return {
            "type": _qualified_name(type(x)),
            "structure": _ADDRESS.sub("", str(treedef)),
            "leaves": [describe(v, values=values, depth=depth + 1) for v in leaves],
        }
    return {"object": _ADDRESS.sub("", repr(x))[:200]}
