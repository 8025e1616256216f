"""Save and load a model: ``declebm.save(path, model)``, ``declebm.load(path, like=None, *, trust=())``.

A model file is one unit, written to a temporary file and renamed into place::

    declebm-model 2\\n
    sha256 <64 hex digits> <n>\\n     digest and length of everything below this line
    <one line of JSON: the header>\\n
    <the leaves, in Equinox's ``tree_serialise_leaves`` format>

The checksum covers the header as well as the leaves, so an edited header (another class,
activation or shape) is refused like a truncated file or a flipped byte. The header
records the class, every leaf's path, shape and dtype, and, when the model knows how to
rebuild itself, a *rebuild recipe*. Files of format 1 (``declebm-model 1``, whose header
held the size and sha256 of the leaves only) still load, checked as they were then.

Rebuild recipe (the ``constructor_kwargs`` convention). A module class that defines::

    def constructor_kwargs(self) -> dict:
        "The arguments that rebuild this module's structure (declebm.save/load)."
        return dict(in_size=self.in_size, width=..., activation=self.activation)

can be loaded without a template: ``load`` imports the class by its recorded import path,
calls ``cls(**kwargs)`` (with ``key=jax.random.key(0)`` added when the constructor takes a
``key``), and then overwrites every leaf with the saved values, so the kwargs only need
to fix the *structure*. Values may be ``None``, bools, numbers, strings, lists, tuples,
dicts, arrays, a ``jax.ShapeDtypeStruct`` (an array whose values only the file needs to
hold: rebuilt as zeros of that shape and dtype), other modules that follow the
convention, activations from ``ACTIVATIONS`` (``jax.nn.silu``, ``jnp.tanh``, ...), and the
NumPyro densities declebm itself puts into models as bases (``Normal``,
``MultivariateNormal`` and ``Independent`` of them, i.e. ``.to_event``: NCE's fitted
noise). ``EBM`` itself is handled here. Anything else (a custom activation, another
NumPyro density, a module without the method) is saved without a recipe, and ``load``
then asks for ``like=``: a model of the same structure, Equinox's convention
(``eqx.tree_deserialise_leaves``).

Trust. Rebuilding a class imports its module, which runs that module's code, and calls
its constructor with the file's arguments. So without ``like=``, ``load`` rebuilds only
declebm's own classes (modules ``declebm``, ``declebm.models``, ``declebm.inference`` and
below), the NumPyro densities and activations above (looked up in tables here, nothing
imported by name), and classes from the modules the caller names, ``trust=("mypkg",)``; a
file naming any other module is refused before anything is imported. With ``like=``
nothing is imported or called: the file supplies array values only.
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
import numpyro.distributions as dist

from ._ebm import EBM
from ._hosts import host_copy, is_writer, several

_MAGIC = b"declebm-model "  # then the format version and a newline
VERSION = 2
_READS = (1, 2)
_CHECKSUM_LINE = re.compile(rb"sha256 ([0-9a-f]{64}) ([0-9]+)")

#: Modules whose classes ``load`` rebuilds without being told to trust them.
OWN_MODULES = ("declebm",)
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

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

#: The NumPyro densities a rebuild recipe can hold: those declebm puts into models as
#: bases (NCE's fitted noise: ``MultivariateNormal``, or ``Normal(...).to_event(k)``).
NUMPYRO_BASES: dict[str, type] = {
    "Normal": dist.Normal,
    "MultivariateNormal": dist.MultivariateNormal,
    "Independent": dist.Independent,
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


def _is_written(x: Any) -> bool:
    """Whether ``eqx.tree_serialise_leaves`` writes this leaf (any other leaf, e.g. a
    function, is skipped and comes back from the template)."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def _is_distribution(x: Any) -> bool:
    return isinstance(x, dist.Distribution)


def _distribution_fields(d: dist.Distribution) -> dict[str, Any]:
    """The pytree data fields of a NumPyro density by name, in sorted order."""
    return {name: d.__dict__.get(name) for name in sorted(type(d).gather_pytree_data_fields())}


def canonical_tree(tree: Any) -> Any:
    """``tree`` with every NumPyro density replaced by a dict of its data fields by name.

    NumPyro flattens a density's fields in the order of a Python ``set`` of their names
    (``Distribution.gather_pytree_data_fields``), which changes with the interpreter's
    string hashing from one process to the next: ``Normal``'s leaves are ``(loc, scale)``
    in one process and ``(scale, loc)`` in another. A file written in the order of the
    first and read in the order of the second would swap same-shaped fields silently.
    Dicts flatten in sorted key order, so the canonical tree's leaves, and the paths that
    name them (``.base['base_dist']['loc']``), are the same in every process."""

    def convert(x):
        if not _is_distribution(x):
            return x
        return {name: canonical_tree(v) for name, v in _distribution_fields(x).items()}

    return jtu.tree_map(convert, tree, is_leaf=_is_distribution)


def from_canonical_tree(canonical: Any, like: Any) -> Any:
    """Undo ``canonical_tree``: ``like``'s structure (its densities included) with the
    leaves of ``canonical``, a tree of ``canonical_tree(like)``'s structure."""
    leaves, treedef = jtu.tree_flatten(like, is_leaf=_is_distribution)
    parts = treedef.flatten_up_to(canonical)

    def rebuild(part, template):
        if not _is_distribution(template):
            return part
        names = type(template).gather_pytree_data_fields()
        children = tuple(from_canonical_tree(part[n], template.__dict__.get(n)) for n in names)
        return type(template).tree_unflatten(template.tree_flatten()[1], children)

    return jtu.tree_unflatten(treedef, [rebuild(p, t) for p, t in zip(parts, leaves)])


def write_leaves(f: Any, tree: Any) -> None:
    """Equinox's ``tree_serialise_leaves`` of ``tree`` in the canonical leaf order."""
    eqx.tree_serialise_leaves(f, canonical_tree(tree))


def read_leaves(f: Any, like: Any, saved_specs: list) -> Any:
    """The leaves ``write_leaves`` wrote, read into ``like``. Files written before the
    canonical order hold a density's leaves in the writer's set order: they are read in
    this process's order when their recorded specs match it (as they always were)."""
    if _is_legacy_order(saved_specs, like):
        return eqx.tree_deserialise_leaves(f, like)
    return from_canonical_tree(eqx.tree_deserialise_leaves(f, canonical_tree(like)), like)


def _is_legacy_order(saved_specs: list, like: Any) -> bool:
    return bool(diff_leaf_specs(saved_specs, leaf_specs(like))) and not diff_leaf_specs(saved_specs, _raw_leaf_specs(like))


def leaf_differences(saved_specs: list, like: Any) -> list[str]:
    """``diff_leaf_specs`` of a file's recorded specs against ``like`` (either leaf order)."""
    return [] if _is_legacy_order(saved_specs, like) else diff_leaf_specs(saved_specs, leaf_specs(like))


def leaf_specs(tree: Any) -> list[list]:
    """``[path, shape, dtype]`` of every array leaf and ``[path, type]`` of every other
    leaf, of the canonical tree (``canonical_tree``: the same in every process)."""
    return _raw_leaf_specs(canonical_tree(tree))


def _raw_leaf_specs(tree: Any) -> list[list]:
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


class _Untrusted(Exception):
    """A recipe names a class from a module the caller did not trust (nothing imported)."""

    def __init__(self, module: str, import_path: str):
        super().__init__(module, import_path)
        self.module, self.import_path = module, import_path


def _import_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_trusted(module: str, trusted: tuple[str, ...]) -> bool:
    return any(module == t or module.startswith(t + ".") for t in OWN_MODULES + trusted)


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


def _placeholder_spec(x: Any, where: str) -> dict:
    """What a placeholder for one parameter of a NumPyro density needs: its shape and dtype."""
    if isinstance(x, (bool, int, float)):
        return {"number": type(x).__name__}
    if _is_array(x) and np.dtype(x.dtype).kind in "biuf":
        # NumPyro keeps a Python-number parameter as a NumPy array (``Normal(loc, 1.0)``'s
        # scale is ``np.ndarray`` float64): the placeholder must be the same kind of leaf
        spec = {"shape": [int(s) for s in np.shape(x)], "dtype": str(x.dtype)}
        return {**spec, "numpy": True} if isinstance(x, np.ndarray) else spec
    raise _NoRecipe(f"{where} is a {type(x).__name__}, which cannot be recorded")


def _encode_numpyro(d: Any, where: str) -> dict:
    name = type(d).__name__
    if NUMPYRO_BASES.get(name) is not type(d):
        known = ", ".join(NUMPYRO_BASES)
        raise _NoRecipe(f"{where} is a NumPyro {name}; the file can rebuild only these NumPyro densities: {known}")
    validate = getattr(d, "_validate_args", None)
    out: dict[str, Any] = {
        "__numpyro__": name,
        "batch_shape": [int(s) for s in d.batch_shape],
        "event_shape": [int(s) for s in d.event_shape],
        "validate_args": validate if isinstance(validate, bool) else None,
    }
    if isinstance(d, dist.Independent):
        out["base_dist"] = _encode_numpyro(d.base_dist, f"{where}.base_dist")
        out["reinterpreted_batch_ndims"] = int(d.reinterpreted_batch_ndims)
    elif isinstance(d, dist.MultivariateNormal):
        out["loc"] = _placeholder_spec(d.loc, f"{where}.loc")
        out["scale_tril"] = _placeholder_spec(d.scale_tril, f"{where}.scale_tril")
    else:
        out["loc"] = _placeholder_spec(d.loc, f"{where}.loc")
        out["scale"] = _placeholder_spec(d.scale, f"{where}.scale")
    return out


def _encode(value: Any, where: str) -> Any:
    """A JSON-able recipe of ``value`` (raises _NoRecipe for what cannot be recorded)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, jax.ShapeDtypeStruct):
        if np.dtype(value.dtype).kind not in "biuf":
            raise _NoRecipe(f"{where} is a jax.ShapeDtypeStruct of dtype {value.dtype}")
        return {"__zeros__": [int(s) for s in value.shape], "dtype": str(value.dtype)}
    if isinstance(value, dist.Distribution):  # before `callable`: a NumPyro density is callable
        return _encode_numpyro(value, where)
    for name, fn in ACTIVATIONS.items():
        if value is fn:
            return {"__function__": name}
    if isinstance(value, eqx.Module) and (isinstance(value, EBM) or hasattr(type(value), "constructor_kwargs")):
        kwargs = _constructor_kwargs(value)
        return {
            "__module__": _import_path(type(value)),
            "kwargs": {k: _encode(v, f"{where}.{k}") for k, v in kwargs.items()},
        }
    if _is_array(value):
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


def _numeric_dtype(name: Any) -> np.dtype:
    dtype = np.dtype(str(name))
    if dtype.kind not in "biuf":
        raise ValueError(f"dtype {name!r} is not numeric")
    return dtype


def _placeholder(spec: dict, fill: float) -> Any:
    if "number" in spec:
        kinds = {"bool": bool, "int": int, "float": float}
        return kinds[spec["number"]](fill)
    if spec.get("numpy") is True:
        return np.full(tuple(int(s) for s in spec["shape"]), fill, _numeric_dtype(spec["dtype"]))
    return jnp.full(tuple(int(s) for s in spec["shape"]), fill, _numeric_dtype(spec["dtype"]))


def _decode_numpyro(value: dict) -> Any:
    """A NumPyro density of the recorded structure, placeholder values (the file's go in)."""
    name = value["__numpyro__"]
    if name not in NUMPYRO_BASES:
        raise ValueError(f"{name!r} is not one of the NumPyro densities a file can rebuild ({', '.join(NUMPYRO_BASES)})")
    validate = value.get("validate_args")
    validate = validate if isinstance(validate, bool) else None
    if name == "Independent":
        base = _decode_numpyro(value["base_dist"])
        d = dist.Independent(base, int(value["reinterpreted_batch_ndims"]), validate_args=validate)
    elif name == "MultivariateNormal":
        spec = value["scale_tril"]
        shape = tuple(int(s) for s in spec["shape"])
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ValueError(f"MultivariateNormal.scale_tril: expected a shape (..., n, n), got {shape}")
        tril = jnp.broadcast_to(jnp.eye(shape[-1], dtype=_numeric_dtype(spec["dtype"])), shape)
        d = dist.MultivariateNormal(_placeholder(value["loc"], 0.0), scale_tril=tril, validate_args=validate)
    else:
        d = dist.Normal(_placeholder(value["loc"], 0.0), _placeholder(value["scale"], 1.0), validate_args=validate)
    shapes = (list(d.batch_shape), list(d.event_shape))
    if shapes != (value["batch_shape"], value["event_shape"]):
        raise ValueError(
            f"the rebuilt {name} has batch_shape {shapes[0]} and event_shape {shapes[1]}, "
            f"the file records {value['batch_shape']} and {value['event_shape']}"
        )
    return d


def _recorded_class(import_path: Any, trusted: tuple[str, ...]) -> type:
    """The class named ``module:qualname``, imported only from a trusted module."""
    module_name, sep, qualname = str(import_path).partition(":")
    if not (sep and _MODULE_NAME.fullmatch(module_name) and _MODULE_NAME.fullmatch(qualname)):
        raise ValueError(f"{import_path!r} is not the import path of a class (module:qualname)")
    if not _is_trusted(module_name, trusted):
        raise _Untrusted(module_name, import_path)
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, eqx.Module) and (obj is EBM or hasattr(obj, "constructor_kwargs"))):
        raise TypeError(f"{import_path} is not an Equinox module class with a constructor_kwargs() method")
    return obj


def _decode(value: Any, trusted: tuple[str, ...]) -> Any:
    if isinstance(value, list):
        return [_decode(v, trusted) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__function__" in value:
        if value["__function__"] not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value['__function__']!r}")
        return ACTIVATIONS[value["__function__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, trusted) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v, trusted) for k, v in value["__dict__"].items()}
    if "__array__" in value:
        return jnp.asarray(np.asarray(value["__array__"], dtype=_numeric_dtype(value["dtype"])).reshape(value["shape"]))
    if "__zeros__" in value:
        return jnp.zeros(tuple(int(s) for s in value["__zeros__"]), _numeric_dtype(value["dtype"]))
    if "__numpyro__" in value:
        return _decode_numpyro(value)
    if "__module__" in value:
        cls = _recorded_class(value["__module__"], trusted)
        kwargs = {str(k): _decode(v, trusted) for k, v in dict(value["kwargs"]).items()}
        if "key" in inspect.signature(cls).parameters and "key" not in kwargs:
            kwargs["key"] = jax.random.key(0)  # any key: every leaf is overwritten by the file
        return cls(**kwargs)
    raise ValueError(f"unknown recipe entry {sorted(value)}")


def _check_trust(trust: Any) -> tuple[str, ...]:
    if isinstance(trust, str):
        raise TypeError(f"trust: expected a tuple of module names, got the string {trust!r}; write trust=({trust!r},)")
    if not isinstance(trust, (tuple, list)):
        raise TypeError(f"trust: expected a tuple of module names such as ('mypkg',), got {type(trust).__name__}")
    for name in trust:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
            raise ValueError(f"trust: expected module names such as 'mypkg' or 'mypkg.energies', got {name!r}")
    return tuple(trust)


# ---- save / load -------------------------------------------------------------------------


def _check_path(path: Any) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def save(path: str | os.PathLike, model: Any) -> None:
    """Save ``model`` (an Equinox module or a pytree of arrays) to the file ``path``.

    The file holds the leaves (Equinox's ``tree_serialise_leaves``), their paths, shapes
    and dtypes, and, for the shipped models (everything in ``declebm.models``, ``EBM``,
    ``GaussianBase``, and the NumPyro bases NCE fits: ``Normal``, ``MultivariateNormal``,
    ``Independent``), a recipe that rebuilds it, so ``load(path)`` needs no template; one
    sha256 covers all of it. The write is atomic: a temporary file in the same folder,
    fsync'd, then renamed over ``path``.

    With several processes (``jax.distributed``), process 0 alone writes the file and the
    others return without writing, so calling ``save`` on every process (or on process 0
    only, for a model whose arrays are replicated, as ``fit`` returns them) writes it once.
    Arrays split over the processes are gathered first, a collective: then every process
    must call ``save``. It does not wait for the others: a process that reads the file
    next waits for process 0 first (``jax.experimental.multihost_utils.sync_global_devices``).

    A module of your own gets a recipe by defining ``constructor_kwargs(self) -> dict``,
    the keyword arguments that rebuild its structure (``load`` calls ``cls(**kwargs)``,
    adding ``key=jax.random.key(0)`` if the constructor takes a key, then overwrites every
    leaf). Values may be ``None``, numbers, strings, lists, tuples, dicts, arrays, a
    ``jax.ShapeDtypeStruct`` (rebuilt as zeros), modules with the same method, and the
    activations ``jax.nn.silu``, ``relu``, ``gelu``, ``elu``, ``celu``, ``selu``,
    ``softplus``, ``sigmoid``, ``leaky_relu``, ``log_sigmoid``, ``jnp.tanh``, ``jnp.sin``.
    ``load`` rebuilds such a class only when told to trust its module
    (``load(path, trust=("mypkg",))``). Without a recipe (a custom activation, another
    NumPyro density) the model is still saved; ``load`` then needs ``like=``.

    Arguments:
        path: the file to write (its folder must exist); conventionally ``*.eqx``.
        model: what to save: an Equinox module, or a pytree with at least one array.

    Raises:
        TypeError: ``model`` is neither an Equinox module nor a pytree (e.g. ``object()``).
        ValueError: ``model`` holds no array to save, or ``path`` is a folder or lies in a
            folder that does not exist.
    """
    path = _check_path(path)
    if several():  # one writer; split leaves gathered first (a collective: every process calls save)
        model = host_copy(model)
        if not is_writer():
            return
    if os.path.isdir(path):
        raise ValueError(f"path: {path!r} is a directory; give a file name such as {os.path.join(path, 'model.eqx')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path: the folder {folder!r} does not exist")
    leaves = jax.tree.leaves(model)
    if not isinstance(model, eqx.Module) and len(leaves) == 1 and leaves[0] is model and not _is_written(model):
        raise TypeError(
            f"model: expected an Equinox module or a pytree of arrays, got {type(model).__name__}, "
            f"which is neither (nothing of it would be written)"
        )
    if not any(_is_written(leaf) for leaf in leaves):
        raise ValueError(f"model: expected a model with arrays to save, got {type(model).__name__} with none")
    buf = io.BytesIO()
    try:
        write_leaves(buf, model)
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
        "recipe": recipe,
        "no_recipe": no_recipe,
    }
    payload = json.dumps(header, separators=(",", ":")).encode() + b"\n" + body
    checksum = b"sha256 %s %d\n" % (hashlib.sha256(payload).hexdigest().encode(), len(payload))
    atomic_write_bytes(path, [_MAGIC + b"%d\n" % VERSION, checksum, payload])


def _split_header(path: str, data: bytes) -> tuple[dict, bytes]:
    end = data.find(b"\n")
    try:
        if end < 0:
            raise ValueError("no end of header")
        header = json.loads(data[:end])
        if not isinstance(header, dict) or not isinstance(header.get("leaves"), list):
            raise ValueError("not a declebm header")
    except (ValueError, TypeError) as e:
        raise ValueError(f"path: the header of {path!r} is damaged ({type(e).__name__}: {e})") from None
    return header, data[end + 1 :]


def _read_model_file(path: str) -> tuple[dict, bytes]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"path: no such file {path!r}") from None
    except IsADirectoryError:
        raise ValueError(f"path: {path!r} is a directory, not a model file") from None
    first = raw.find(b"\n")
    if not raw.startswith(_MAGIC) or first < 0 or not raw[len(_MAGIC) : first].isdigit():
        raise ValueError(
            f"path: {path!r} is not a model file written by declebm.save (it does not start with "
            f"{_MAGIC + str(VERSION).encode()!r})"
        )
    version, rest = int(raw[len(_MAGIC) : first]), raw[first + 1 :]
    if version not in _READS:
        raise ValueError(
            f"path: {path!r} is a model file of format version {version}; this declebm reads versions "
            f"{', '.join(map(str, _READS))} (a newer declebm wrote it)"
        )
    if version == 1:  # the header outside any checksum; its leaves' size and sha256 in it
        header, body = _split_header(path, rest)
        try:
            expected, digest = int(header["bytes"]), str(header["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"path: the header of {path!r} is damaged ({type(e).__name__}: {e})") from None
        if len(body) != expected:
            raise ValueError(f"path: {path!r} is truncated or damaged: {len(body)} bytes of leaves, the header says {expected}")
        if hashlib.sha256(body).hexdigest() != digest:
            raise ValueError(f"path: {path!r} is corrupt: the leaves' sha256 does not match the one in its header")
        return header, body
    end = rest.find(b"\n")
    m = _CHECKSUM_LINE.fullmatch(rest[:end]) if end >= 0 else None
    if m is None:
        raise ValueError(f"path: the header of {path!r} is damaged (its checksum line is missing or malformed)")
    payload, expected = rest[end + 1 :], int(m.group(2))
    if len(payload) != expected:
        raise ValueError(
            f"path: {path!r} is truncated or damaged: {len(payload)} bytes after its checksum line, the file says {expected}"
        )
    if hashlib.sha256(payload).hexdigest().encode() != m.group(1):
        raise ValueError(
            f"path: {path!r} is corrupt: its sha256 does not match the one it records (its header or leaves were changed)"
        )
    return _split_header(path, payload)


def _like_example(header: dict) -> str:
    with_base = any(str(s[0]).startswith(".base") for s in header["leaves"] if s)
    base = ", base=<a base density of the same kind>" if with_base else ""
    return f"like=EBM(MyEnergy(..., key=jax.random.key(0)){base})"


def load(path: str | os.PathLike, like: Any = None, *, trust: tuple[str, ...] | list[str] = ()) -> Any:
    """Load a model saved by ``save``.

    Without ``like``, the file's recipe rebuilds the model: every shipped model
    (``declebm.models``, ``EBM``, ``GaussianBase``, the NumPyro bases NCE fits) and any
    class with a ``constructor_kwargs()`` method from a module named in ``trust``. Only
    those are rebuilt because rebuilding imports the class's module (running its code) and
    calls its constructor with the file's arguments; a file that names another module is
    refused before it is imported. With ``like`` nothing is imported or called.

    Arguments:
        path: the file.
        like: a model of the same structure whose leaves are replaced by the saved ones
            (Equinox's convention). Optional for the shipped models; required for any
            module without a recipe (a custom activation, another NumPyro density).
        trust: names of modules (and so their submodules) whose classes the file may
            rebuild, e.g. ``trust=("mypkg",)`` for a ``mypkg.energies.MyEnergy`` with a
            ``constructor_kwargs()`` method. Trust only modules of your own or files you
            wrote.

    Raises:
        ValueError: the file is missing, not a declebm model file, truncated or corrupt
            (checked with the sha256 it records over its header and leaves), names a
            class of a module that is not trusted, or ``like`` has another structure (the
            message names the leaves that differ).
    """
    path = _check_path(path)
    trusted = _check_trust(trust)
    header, body = _read_model_file(path)
    if like is None:
        if header.get("recipe") is None:
            raise ValueError(
                f"like: the model in {path!r} ({header.get('class')}) cannot be rebuilt from the file "
                f"({header.get('no_recipe')}); pass like=, a model of the same structure (its values do not matter), "
                f"e.g. load({path!r}, {_like_example(header)})"
            )
        try:
            like = _decode(header["recipe"], trusted)
        except _Untrusted as e:
            raise ValueError(
                f"trust: {path!r} asks to rebuild {e.import_path}, from the module {e.module!r}, which is not trusted: "
                f"without like=, load rebuilds only declebm's own classes, since importing a module runs its code. "
                f"If you trust that module, load({path!r}, trust=({e.module!r},)); or pass like=, a model of the same "
                f"structure (nothing is then imported)"
            ) from None
        except Exception as e:  # noqa: BLE001 -- re-raised with the file named
            raise ValueError(
                f"path: cannot rebuild {header.get('class')} recorded in {path!r} ({type(e).__name__}: {e}); "
                f"pass like=, a model of the same structure"
            ) from e
        # The recipe fixes the structure; the dtypes are the file's (e.g. float64 under x64).
        dtypes = {s[0]: s[2] for s in header["leaves"] if len(s) == 3}
        like = from_canonical_tree(
            jtu.tree_map_with_path(
                lambda p, x: x.astype(dtypes[jtu.keystr(p)])
                if isinstance(x, jax.Array) and jtu.keystr(p) in dtypes and str(x.dtype) != dtypes[jtu.keystr(p)]
                else x,
                canonical_tree(like),
            ),
            like,
        )
        from_where = "the rebuilt model"
    else:
        from_where = "like"
    differences = leaf_differences(header["leaves"], like)
    if differences:
        raise ValueError(
            f"{'like' if from_where == 'like' else 'path'}: the model in {path!r} ({header.get('class')}) does not match "
            f"{from_where} ({type(like).__name__}): " + "; ".join(differences)
        )
    try:
        return read_leaves(io.BytesIO(body), like, header["leaves"])
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
