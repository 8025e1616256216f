"""Real data without downloads: scikit-learn's bundled digits and the user's own files."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_examples, check_key


def digits(*, key: PRNGKeyArray, test_fraction: float = 0.2, flatten: bool = True
           ) -> tuple[Float[Array, "n_train ..."], Float[Array, "n_test ..."]]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), dequantised as
    ``(x + U[0, 1)) / 17`` into ``[0, 1)`` and split ``1 - test_fraction`` / ``test_fraction``
    at random (REFERENCES.md's protocol). Returns ``(train, test)`` of shape ``(n, 64)``
    (or ``(n, 8, 8)`` with ``flatten=False``). Needs scikit-learn (``pip install scikit-learn``).
    """
    check_key(key)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("datasets.digits needs scikit-learn: pip install scikit-learn") from e
    images = jnp.asarray(load_digits().images, jnp.float32)  # integers 0..16
    k_perm, k_noise = jax.random.split(key)
    x = (images + jax.random.uniform(k_noise, images.shape)) / 17.0
    x = x[jax.random.permutation(k_perm, x.shape[0])]
    if flatten:
        x = x.reshape(x.shape[0], -1)
    n_test = int(round(x.shape[0] * float(test_fraction)))
    return x[n_test:], x[:n_test]


def load(path: str | os.PathLike, *, name: str | None = None) -> Float[Array, "n ..."]:
    """Examples from a local ``.npy`` or ``.npz`` file (e.g. MNIST saved by the user), as a
    float32 array ``(num_examples, *event_shape)``. For ``.npz`` give the array's ``name``
    unless the file holds exactly one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {path!r}")
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
    elif path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            if name is None:
                if len(keys) != 1:
                    raise ValueError(f"name: {path!r} holds arrays {keys}; say which one with name=")
                name = keys[0]
            if name not in keys:
                raise ValueError(f"name: {path!r} has no array {name!r}; it holds {keys}")
            arr = f[name]
    else:
        raise ValueError(f"path: expected a .npy or .npz file, got {path!r}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32)
    return check_examples(arr, f"array in {os.path.basename(path)}", None)
