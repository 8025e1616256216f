"""Real data without downloads: scikit-learn's bundled digits and the user's own files."""

from __future__ import annotations

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import _describe, check_examples, check_flag, check_key, check_number


def digits(*, key: PRNGKeyArray, test_fraction: float = 0.2, flatten: bool = True, with_labels: bool = False
           ) -> tuple[Array, ...]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), dequantised as
    ``(x + U[0, 1)) / 17`` into ``[0, 1)`` and split ``1 - test_fraction`` / ``test_fraction``
    at random (the protocol of the digits density-estimation references in the README).
    Returns ``(train, test)`` of shape ``(n, 64)`` (or ``(n, 8, 8)`` with ``flatten=False``);
    with ``with_labels=True``, ``(train, test, train_labels, test_labels)``, the labels
    integers 0..9 (the same split). Needs scikit-learn (``pip install scikit-learn``).
    """
    check_key(key)
    test_fraction = check_number(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    check_flag(flatten, "flatten")
    check_flag(with_labels, "with_labels")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("datasets.digits needs scikit-learn: pip install scikit-learn") from e
    bundled = load_digits()
    images = jnp.asarray(bundled.images, jnp.float32)  # integers 0..16
    n_test = int(round(images.shape[0] * test_fraction))
    if not 1 <= n_test <= images.shape[0] - 1:
        raise ValueError(
            f"test_fraction: {test_fraction!r} of {images.shape[0]} images leaves {images.shape[0] - n_test} for "
            f"training and {n_test} for testing; both need at least one"
        )
    k_perm, k_noise = jax.random.split(key)
    x = (images + jax.random.uniform(k_noise, images.shape)) / 17.0
    order = jax.random.permutation(k_perm, x.shape[0])
    x = x[order]
    if flatten:
        x = x.reshape(x.shape[0], -1)
    if with_labels:
        y = jnp.asarray(bundled.target, jnp.int32)[order]
        return x[n_test:], x[:n_test], y[n_test:], y[:n_test]
    return x[n_test:], x[:n_test]


def load(path: str | os.PathLike, *, name: str | None = None) -> Float[Array, "n ..."]:
    """Examples from a local ``.npy`` or ``.npz`` file (e.g. MNIST saved by the user), as a
    floating array ``(num_examples, *event_shape)``: integers become float32, floating
    arrays keep their dtype (float64 only under ``jax_enable_x64``). A file that is not a
    NumPy array file gives a ``ValueError`` naming ``path``. For ``.npz`` give the array's ``name``
    unless the file holds exactly one."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {_describe(path)}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name: expected the name of an array in the .npz file (a str), got {_describe(name)}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {path!r}")
    if not path.endswith((".npy", ".npz")):
        raise ValueError(f"path: expected a .npy or .npz file, got {path!r}")
    try:
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.keys())
                if name is None:
                    if len(keys) != 1:
                        raise ValueError(f"name: {path!r} holds arrays {keys}; say which one with name=")
                    name = keys[0]
                if name not in keys:
                    raise ValueError(f"name: {path!r} has no array {name!r}; it holds {keys}")
                arr = f[name]
    except ValueError as e:
        if str(e).startswith("name:"):
            raise
        raise ValueError(
            f"path: {path!r} is not a readable NumPy {os.path.splitext(path)[1]} file of numbers "
            f"(numpy says: {e}); save arrays with numpy.save / numpy.savez"
        ) from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"path: {path!r} is not a readable NumPy {os.path.splitext(path)[1]} file ({type(e).__name__}: {e})") from e
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32)
    return check_examples(arr, f"array in {os.path.basename(path)}", None)
