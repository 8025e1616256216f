"""The training step's finiteness test (``all_finite``): one reduction over every leaf."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from declebm._train_step import all_finite

LEAVES = {"f32": ((3, 4), jnp.float32), "bf16": ((5,), jnp.bfloat16), "f16": ((), jnp.float16),
          "c64": ((2,), jnp.complex64)}


def _tree():
    # Finite values near each dtype's largest, where a sum would overflow; a static leaf and an integer one.
    big = {"f32": 3e38, "bf16": 3e38, "f16": 65504.0, "c64": 3e38 + 3e38j}
    return {**{k: jnp.full(shape, big[k], dtype) for k, (shape, dtype) in LEAVES.items()},
            "int": jnp.arange(3), "static": "a string"}


def test_all_finite_finds_each_non_finite_value_in_each_leaf():
    f = eqx.filter_jit(all_finite)  # one program for every case below: same shapes and dtypes
    assert bool(f(_tree()))
    bads = [np.inf, -np.inf, np.nan]
    for name in LEAVES:
        for bad in bads + ([1j * np.inf, complex(0, np.nan)] if name == "c64" else []):
            tree = _tree()
            tree[name] = tree[name].ravel().at[-1].set(bad).reshape(tree[name].shape)
            assert not bool(f(tree)), (name, bad)


def test_all_finite_without_float_leaves_and_in_float64():
    assert bool(all_finite({"i": jnp.arange(4), "s": None}))
    with jax.enable_x64(True):
        assert bool(all_finite({"d": jnp.asarray([1e300, -1e300], jnp.float64)}))
        assert not bool(all_finite({"d": jnp.asarray([1e300, np.nan], jnp.float64)}))
