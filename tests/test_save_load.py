"""declebm.save / declebm.load: with a template for any module, without one for the shipped models."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.models import GaussianEnergy, MLPEnergy, NoiseConditionedMLPEnergy


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def _assert_same_model(a, b):
    assert jax.tree.structure(eqx.filter(a, eqx.is_array)) == jax.tree.structure(eqx.filter(b, eqx.is_array))
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


SHIPPED = {
    "EBM(MLPEnergy) tanh, tempered, log_z": lambda: eb.EBM(
        MLPEnergy(2, 16, 2, activation=jnp.tanh, key=jax.random.key(1)), log_z=3.0).tempered(2.0),
    "EBM(MLPEnergy) depth 0": lambda: eb.EBM(MLPEnergy(3, 4, 0, key=jax.random.key(1))),
    "EBM(NoiseConditionedMLPEnergy)": lambda: eb.EBM(
        NoiseConditionedMLPEnergy(2, 8, 1, activation=jax.nn.softplus, default_sigma=0.3, key=jax.random.key(2))),
    "EBM(GaussianEnergy)": lambda: eb.EBM(GaussianEnergy(jnp.array([1.0, -2.0]), covariance=[[2.0, 0.5], [0.5, 1.0]])),
    "bare MLPEnergy": lambda: MLPEnergy(2, 8, 1, key=jax.random.key(3)),
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_models_load_without_a_template(tmp_path, name):
    model = SHIPPED[name]()
    if isinstance(model, eb.EBM):  # changed (trained-like) values must come back, not the constructor's
        model = eqx.tree_at(lambda m: m.log_z, model, model.log_z + 0.25)
    path = tmp_path / "model.eqx"
    eb.save(path, model)
    loaded = eb.load(path)
    assert type(loaded) is type(model)
    _assert_same_model(model, loaded)
    x = jnp.array([[0.3, -0.7], [1.0, 2.0]]) if name != "EBM(MLPEnergy) depth 0" else jnp.ones((2, 3))
    if isinstance(model, eb.EBM):
        assert loaded.event_shape == model.event_shape
        np.testing.assert_array_equal(loaded.log_prob_unnorm_batch(x), model.log_prob_unnorm_batch(x))
        energy, ref = loaded.energy_module, model.energy_module
        if hasattr(ref, "mlp"):
            assert energy.mlp.activation is ref.mlp.activation
        if hasattr(ref, "default_sigma"):
            assert energy.default_sigma == ref.default_sigma
    else:
        np.testing.assert_array_equal(jax.vmap(loaded)(x), jax.vmap(model)(x))


class UserEnergy(eqx.Module):
    """A user's module with no rebuild recipe."""

    w: jax.Array
    scale: float = eqx.field(static=True)

    def __init__(self, n, scale=1.0):
        self.w = jnp.linspace(0.0, 1.0, n)
        self.scale = scale

    def __call__(self, x):
        return self.scale * jnp.sum(self.w * x**2)


class RecipeEnergy(UserEnergy):
    """The same module adopting the convention: three lines."""

    def constructor_kwargs(self) -> dict:
        return dict(n=self.w.shape[0], scale=self.scale)


def test_any_module_loads_with_a_template_and_asks_for_one_otherwise(tmp_path):
    model = eb.EBM(UserEnergy(3), log_z=1.5)
    model = eqx.tree_at(lambda m: m.energy_module.w, model, jnp.array([5.0, 6.0, 7.0]))
    path = tmp_path / "user.eqx"
    eb.save(path, model)
    _assert_same_model(model, eb.load(path, like=eb.EBM(UserEnergy(3))))
    with pytest.raises(ValueError, match=r"like: the model in .*user\.eqx.*EBM.energy is a UserEnergy, which has no constructor_kwargs.*pass like="):
        eb.load(path)


def test_a_new_model_adopts_the_rebuild_recipe_with_one_method(tmp_path):
    model = eqx.tree_at(lambda m: m.w, RecipeEnergy(4, scale=2.5), jnp.arange(4.0))
    eb.save(tmp_path / "r.eqx", eb.EBM(model))
    loaded = eb.load(tmp_path / "r.eqx")
    assert isinstance(loaded.energy_module, RecipeEnergy) and loaded.energy_module.scale == 2.5
    _assert_same_model(eb.EBM(model), loaded)


def test_a_custom_activation_is_saved_but_needs_a_template(tmp_path):
    model = eb.EBM(MLPEnergy(2, 4, 1, activation=lambda x: x * jax.nn.sigmoid(2 * x), key=jax.random.key(0)))
    eb.save(tmp_path / "m.eqx", model)
    with pytest.raises(ValueError, match="activation.*cannot be recorded.*pass like="):
        eb.load(tmp_path / "m.eqx")
    like = eb.EBM(MLPEnergy(2, 4, 1, activation=lambda x: x * jax.nn.sigmoid(2 * x), key=jax.random.key(9)))
    _assert_same_model(model, eb.load(tmp_path / "m.eqx", like=like))


def test_a_template_of_another_width_is_an_error_naming_the_file_and_the_leaf(tmp_path):
    eb.save(tmp_path / "m.eqx", eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0))))
    with pytest.raises(ValueError, match=r"like: the model in .*m\.eqx.*layers\[0\]\.weight: shape \(16, 2\) float32 "
                                         r"in the file, shape \(32, 2\) float32 in the template"):
        eb.load(tmp_path / "m.eqx", like=eb.EBM(MLPEnergy(2, 32, 1, key=jax.random.key(0))))


def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 40])


def _flip(p):
    data = bytearray(p.read_bytes())
    data[-5] ^= 0x01
    p.write_bytes(bytes(data))


def _garbage(p):
    p.write_bytes(os.urandom(500))


def _equinox_file(p):  # leaves written by eqx.tree_serialise_leaves, no declebm header
    eqx.tree_serialise_leaves(p, eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0))))


def _header_cut(p):
    p.write_bytes(p.read_bytes()[:40])


@pytest.mark.parametrize(
    "damage, match",
    [
        (_truncate, "is truncated or damaged"),
        (_flip, "is corrupt: the leaves' sha256"),
        (_garbage, "is not a model file written by declebm.save"),
        (_equinox_file, "is not a model file written by declebm.save"),
        (_header_cut, "the header of .* is damaged"),
    ],
)
def test_a_damaged_or_foreign_file_is_a_clear_error_naming_it(tmp_path, damage, match):
    p = tmp_path / "m.eqx"
    model = eb.EBM(MLPEnergy(2, 16, 1, key=jax.random.key(0)))
    eb.save(p, model)
    damage(p)
    with pytest.raises(ValueError, match=f"path: .*m\\.eqx.*{match}|path: the header of .*m\\.eqx.* is damaged"):
        eb.load(p)
    with pytest.raises(ValueError, match=r"m\.eqx"):
        eb.load(p, like=model)


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    p = tmp_path / "m.eqx"
    old = eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(0)))
    eb.save(p, old)
    before = p.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)  # the write fails after the bytes went to the temp file
    with pytest.raises(OSError, match="disk full"):
        eb.save(p, eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(1))))
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["m.eqx"]
    monkeypatch.undo()
    eb.save(p, eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(1))))
    assert os.listdir(tmp_path) == ["m.eqx"] and p.read_bytes() != before


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda d: eb.save(3, eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(0)))), TypeError, "path: expected a file path"),
        (lambda d: eb.save(d, eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(0)))), ValueError, "path: .* is a directory"),
        (lambda d: eb.save(d / "no" / "m.eqx", eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(0)))), ValueError,
         "path: the folder .* does not exist"),
        (lambda d: eb.save(d / "m.eqx", {}), ValueError, "model: expected a model with arrays"),
        (lambda d: eb.load(d / "missing.eqx"), ValueError, "path: no such file"),
        (lambda d: eb.load(None), TypeError, "path: expected a file path"),
        (lambda d: eb.load(d), ValueError, "path: .* is a directory"),
    ],
)
def test_bad_arguments(tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        call(tmp_path)


def test_a_trained_model_round_trips(tmp_path):
    from declebm.inference import Langevin, PersistentCD

    data = eb.datasets.toy("8gaussians", 256, key=jax.random.key(0))
    result = eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), data, PersistentCD(Langevin(0.05), steps=1),
                    num_steps=10, batch_size=16, key=jax.random.key(1), progress=False)
    eb.save(tmp_path / "trained.eqx", result.model)
    loaded = eb.load(tmp_path / "trained.eqx")
    _assert_same_model(result.model, loaded)
    np.testing.assert_array_equal(loaded.energy_batch(data[:8]), result.model.energy_batch(data[:8]))
