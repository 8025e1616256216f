r"""MNIST, Fashion-MNIST and CIFAR-10 from their standard distribution files in a local
folder (nothing is downloaded), and the pixel transforms image recipes use, each with
the log-determinant a bits/dim figure needs.

Bits per dimension. Images of ``D = C*H*W`` 8-bit pixels ``k``, dequantised as
``x = (k + u) / 256`` (``u ~ U[0, 1)^D``), and a model density ``p_y`` on
``y = f(x)`` (``f`` one of the transforms here, or the identity) give

.. math:: \log p_x(x) = \log p_y(f(x)) + \log\lvert\det \partial f / \partial x\rvert,
          \qquad
          \text{bits/dim} = -\frac{\log p_x(x) - D \log 256}{D \log 2},

the ``- D log 256`` turning the density of ``x in [0, 1)^D`` into the (lower bound of
the, Theis et al. 2016) probability of the integer pixels, in nats, then bits per
dimension. Each transform returns ``log|det|`` per example for this sum.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import _describe, _is_traced, check_array, check_choice, check_flag, check_key, check_number

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_PUBLISHED = {
    "mnist": "https://yann.lecun.com/exdb/mnist/",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist "
    "(files at http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz; unpack it in root)",
}
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_IDX_DTYPES = {0x08: np.uint8}


def _check_root(root) -> str:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root: expected a folder path (str or os.PathLike), got {_describe(root)}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"root: no such folder {root!r}")
    return root


def _find_idx(root: str, name: str, dataset: str, split: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    images, labels = _MNIST_FILES[split]
    raise FileNotFoundError(
        f"root: {name} (or {name}.gz) not found in {root!r}; datasets.{dataset}(split={split!r}) reads the IDX "
        f"files {images} and {labels} (gzipped .gz or not) from root. Nothing is downloaded: get them from "
        f"{_PUBLISHED[dataset]}"
    )


def read_idx(path: str) -> np.ndarray:
    """An array from an IDX file (LeCun's MNIST format: two zero bytes, a type byte (8:
    unsigned bytes), the number of axes, each axis's size as a big-endian int32, then the
    data), gzipped when ``path`` ends in ``.gz``. A malformed file is a ``ValueError``
    naming it."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"root: {path!r} is not a readable IDX file ({type(e).__name__}: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"root: {path!r} is not an IDX file of unsigned bytes (its first 4 bytes are {raw[:4]!r})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"root: {path!r} is truncated (its header is incomplete)")
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(
            f"root: {path!r} is truncated or damaged: its header says shape {shape} ({math.prod(shape)} values), "
            f"it holds {data.size}"
        )
    return data.reshape(shape)


def _dequantised(pixels: np.ndarray, dequantise: bool, key) -> Array:
    """``pixels / 255`` exactly, or ``(pixels + u) / 256`` with ``u ~ U[0, 1)`` from ``key``."""
    if not dequantise:  # in NumPy, correctly rounded (XLA:CPU divides by multiplying by 1/255)
        return jnp.asarray(pixels.astype(np.float32) / np.float32(255.0))
    x = jnp.asarray(pixels, jnp.float32)
    return (x + jax.random.uniform(key, x.shape, jnp.float32)) / 256.0


def _check_options(split, dequantise, key, with_labels) -> None:
    check_choice(split, "split", ("train", "test"))
    check_flag(dequantise, "dequantise")
    check_flag(with_labels, "with_labels")
    if dequantise:
        if key is None:
            raise ValueError(
                "key: dequantise=True adds u ~ U[0, 1) to every pixel, drawn from key; pass key=jax.random.key(0), "
                "or dequantise=False for pixel / 255 exactly"
            )
        check_key(key)
    elif key is not None:
        check_key(key)


def _with_labels(images: Array, labels: np.ndarray, images_where: str, labels_where: str, with_labels: bool):
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"root: {labels_where} holds {labels.shape[0] if labels.ndim else 0} labels of shape {labels.shape}, "
            f"but {images_where} holds {images.shape[0]} images; the two files must come from the same split"
        )
    if with_labels:
        return images, jnp.asarray(labels.astype(np.int32))
    return images


def _idx_dataset(dataset: str, root, split, dequantise, key, with_labels):
    root = _check_root(root)
    _check_options(split, dequantise, key, with_labels)
    images_name, labels_name = _MNIST_FILES[split]
    images_path = _find_idx(root, images_name, dataset, split)
    labels_path = _find_idx(root, labels_name, dataset, split)
    pixels = read_idx(images_path)
    if pixels.ndim != 3 or pixels.shape[1:] != (28, 28):
        raise ValueError(f"root: {images_path!r} holds an array of shape {pixels.shape}, not 28x28 images (n, 28, 28)")
    labels = read_idx(labels_path)
    images = _dequantised(pixels[:, None], dequantise, key)
    return _with_labels(images, labels, images_path, labels_path, with_labels)


def mnist(
    root: str | os.PathLike,
    *,
    split: str = "train",
    dequantise: bool = True,
    key: PRNGKeyArray | None = None,
    with_labels: bool = False,
) -> Float[Array, "n 1 28 28"] | tuple[Float[Array, "n 1 28 28"], Int[Array, " n"]]:
    """MNIST (LeCun et al. 1998) from its IDX files in the folder ``root``:
    ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (60,000 images),
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (10,000), each gzipped
    (``.gz``, as published) or not. Nothing is downloaded: a missing file is a
    ``FileNotFoundError`` naming the files and where they are published.

    Returns float32 images ``(n, 1, 28, 28)`` in ``[0, 1]``: ``pixel / 255`` exactly with
    ``dequantise=False``; ``(pixel + u) / 256`` with ``u ~ U[0, 1)`` drawn from ``key``
    with ``dequantise=True`` (the default, which then needs ``key``): uniform
    dequantisation, which makes a density on ``[0, 1)^D`` a lower bound on the likelihood
    of the integer pixels (Theis et al. 2016; see this module's bits/dim formula). With
    ``with_labels=True``, ``(images, labels)``, the labels int32 0..9. A labels file whose
    count differs from the images file's is a ``ValueError``.

    Arguments:
        root: the folder holding the files.
        split: ``"train"`` or ``"test"``.
        dequantise: add uniform noise (see above).
        key: a ``jax.random.key`` for the noise (needed with ``dequantise=True``).
        with_labels: also return the labels.
    """
    return _idx_dataset("mnist", root, split, dequantise, key, with_labels)


def fashion_mnist(
    root: str | os.PathLike,
    *,
    split: str = "train",
    dequantise: bool = True,
    key: PRNGKeyArray | None = None,
    with_labels: bool = False,
) -> Float[Array, "n 1 28 28"] | tuple[Float[Array, "n 1 28 28"], Int[Array, " n"]]:
    """Fashion-MNIST (Xiao et al. 2017) from its IDX files in ``root``: the same file names,
    format, shapes and options as ``mnist`` (60,000 training and 10,000 test images of 10
    kinds of clothing, ``(n, 1, 28, 28)``)."""
    return _idx_dataset("fashion_mnist", root, split, dequantise, key, with_labels)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and NumPy arrays only: a pickle can name
    any function to call while it loads, so the CIFAR batches are read with nothing else
    allowed (the published files need only NumPy's array reconstruction)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # NumPy arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("_codecs", "encode"),  # bytes pickled with protocol 2 by Python 3
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays are allowed)")
        return super().find_class(module, name)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise ValueError(f"root: {path!r} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"root: {path!r} is not a CIFAR-10 python batch (it holds a {type(batch).__name__}, not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"root: {path!r} is not a CIFAR-10 python batch (its keys are {sorted(map(str, batch))})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"root: {path!r} holds data of dtype {data.dtype} and shape {data.shape}, not uint8 rows of 3072 pixels"
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(batch["labels"], np.int64)


def cifar10(
    root: str | os.PathLike,
    *,
    split: str = "train",
    dequantise: bool = True,
    key: PRNGKeyArray | None = None,
    with_labels: bool = False,
) -> Float[Array, "n 3 32 32"] | tuple[Float[Array, "n 3 32 32"], Int[Array, " n"]]:
    """CIFAR-10 (Krizhevsky 2009) from the python version's pickled batches in
    ``root/cifar-10-batches-py/``: ``data_batch_1`` ... ``data_batch_5`` (50,000 training
    images) and ``test_batch`` (10,000), as ``cifar-10-python.tar.gz`` unpacks. Each batch
    is a dict of ``data`` (uint8 rows of 3072 pixels: the 1024 red, then green, then blue
    values of a 32x32 image, row-major) and ``labels``. The pickles are read allowing
    NumPy arrays and plain values only (a pickle can otherwise run code while it loads).

    Returns float32 images ``(n, 3, 32, 32)``, with the options of ``mnist``
    (``pixel / 255`` or ``(pixel + u) / 256``; ``with_labels=True`` gives
    ``(images, labels)``, int32 0..9).
    """
    root = _check_root(root)
    _check_options(split, dequantise, key, with_labels)
    folder = os.path.join(root, _CIFAR_FOLDER)
    names = _CIFAR_FILES[split]
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(
            f"root: {', '.join(missing)} not found in {folder!r}; datasets.cifar10(split={split!r}) reads "
            f"{', '.join(names)} from root/{_CIFAR_FOLDER}/. Nothing is downloaded: get them from {_PUBLISHED['cifar10']}"
        )
    parts = [_read_cifar_batch(os.path.join(folder, n)) for n in names]
    for (data, labels), name in zip(parts, names):
        if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
            where = os.path.join(folder, name)
            raise ValueError(
                f"root: {where!r} holds {data.shape[0]} images but {labels.size} labels; a batch needs one label per image"
            )
    pixels = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = _dequantised(pixels, dequantise, key)
    if with_labels:
        return images, jnp.asarray(labels.astype(np.int32))
    return images


# ---- pixel transforms, with the log-determinant a bits/dim figure needs ---------------


def _check_pixels(x, name: str, transform: str) -> Array:
    arr = check_array(x, name)
    if arr.ndim < 1:
        raise ValueError(f"{name}: expected a batch of images (n, ...), got a scalar")
    if not _is_traced(arr):
        low, high = float(jnp.min(arr)), float(jnp.max(arr))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name}: {transform} expects images in [0, 1] (datasets.mnist/cifar10's pixel / 255 or "
                f"(pixel + u) / 256), got values in [{low:.4g}, {high:.4g}]"
            )
    return arr


def _per_example(values: Array) -> Array:
    return jnp.sum(values.reshape(values.shape[0], -1), axis=1)


def to_symmetric_range(x: Float[Array, "n *event"]) -> tuple[Float[Array, "n *event"], Float[Array, " n"]]:
    r"""Images in ``[0, 1]`` to ``[-1, 1]``, the convention of the recovery-likelihood
    code (Gao et al. 2021) and of DDPM: ``y = 2 x - 1``, with
    ``log|det dy/dx| = D log 2`` per example (``D`` numbers per example). Returns
    ``(y, log_det)``, ``log_det`` of shape ``(n,)``; a model's ``log p_y(y) + log_det`` is the
    log density of ``x`` (see the module's bits/dim formula). Values outside ``[0, 1]`` are a
    ``ValueError``."""
    x = _check_pixels(x, "x", "to_symmetric_range")
    d = math.prod(x.shape[1:])
    return 2.0 * x - 1.0, jnp.full((x.shape[0],), d * math.log(2.0), x.dtype)


def from_symmetric_range(y: Float[Array, "n *event"]) -> tuple[Float[Array, "n *event"], Float[Array, " n"]]:
    r"""The inverse of ``to_symmetric_range``: ``x = (y + 1) / 2``, with
    ``log|det dx/dy| = -D log 2``. Samples are not clipped (clip them to ``[0, 1]`` for
    display)."""
    y = check_array(y, "y")
    if y.ndim < 1:
        raise ValueError("y: expected a batch of images (n, ...), got a scalar")
    d = math.prod(y.shape[1:])
    return (y + 1.0) / 2.0, jnp.full((y.shape[0],), -d * math.log(2.0), y.dtype)


def logit_transform(
    x: Float[Array, "n *event"], *, alpha: float = 1e-6
) -> tuple[Float[Array, "n *event"], Float[Array, " n"]]:
    r"""The logit transform of images in ``[0, 1]`` (Dinh et al. 2017, RealNVP, with
    ``alpha = 0.05`` for CIFAR-10 and ``1e-6`` for MNIST), which maps them to the real line:

    .. math:: s = \alpha + (1 - 2\alpha) x, \qquad y = \log s - \log(1 - s),

    .. math:: \log\lvert\det \partial y/\partial x\rvert
              = \sum_i \bigl[\log(1 - 2\alpha) - \log s_i - \log(1 - s_i)\bigr].

    Returns ``(y, log_det)``, ``log_det`` of shape ``(n,)``. Values outside ``[0, 1]`` are a
    ``ValueError``; ``alpha`` must lie in ``(0, 0.5)``."""
    alpha = check_number(alpha, "alpha", low=0.0, high=0.5, low_open=True, high_open=True)
    x = _check_pixels(x, "x", "logit_transform")
    s = alpha + (1.0 - 2.0 * alpha) * x
    y = jnp.log(s) - jnp.log1p(-s)
    return y, _per_example(math.log(1.0 - 2.0 * alpha) - jnp.log(s) - jnp.log1p(-s))


def inverse_logit_transform(
    y: Float[Array, "n *event"], *, alpha: float = 1e-6
) -> tuple[Float[Array, "n *event"], Float[Array, " n"]]:
    r"""The inverse of ``logit_transform``: ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``, with
    ``log|det dx/dy| = sum_i [log s_i + log(1 - s_i) - log(1 - 2 alpha)]``,
    ``s = sigmoid(y)``."""
    alpha = check_number(alpha, "alpha", low=0.0, high=0.5, low_open=True, high_open=True)
    y = check_array(y, "y")
    if y.ndim < 1:
        raise ValueError("y: expected a batch of images (n, ...), got a scalar")
    s = jax.nn.sigmoid(y)
    log_s, log_1ms = jax.nn.log_sigmoid(y), jax.nn.log_sigmoid(-y)
    return (s - alpha) / (1.0 - 2.0 * alpha), _per_example(log_s + log_1ms - math.log(1.0 - 2.0 * alpha))
