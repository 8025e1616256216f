"""declebm.save / declebm.load: with a template for any module, without one for the shipped models."""

import hashlib
import importlib
import inspect
import os
import re
import sys
import uuid

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import declebm as eb
import declebm.models
from declebm.models import (
    ClassifierEnergy,
    ConvEnergy,
    GaussianEnergy,
    LearnableSwish,
    LeakyReLU,
    MixtureEnergy,
    MLPClassifier,
    MLPEnergy,
    NoiseConditionedConvEnergy,
    NoiseConditionedMLPEnergy,
    NoiseConditionedResNetEnergy,
    ResNetEnergy,
)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def _assert_same_model(a, b):
    assert jax.tree.structure(eqx.filter(a, eqx.is_array)) == jax.tree.structure(eqx.filter(b, eqx.is_array))
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _trained(model):
    """Every floating leaf moved off its constructed value (as training would), so a
    rebuilt model that kept its constructor's values cannot pass for the saved one."""
    return _perturbed(model)


@eqx.filter_jit  # one program per model, not one per operation and leaf shape
def _perturbed(model):
    return jax.tree.map(lambda a: a * 1.03 + 0.01 if eqx.is_inexact_array(a) else a, model)


@eqx.filter_jit
def _log_prob_and_score(model, x):
    return model.log_prob_unnorm_batch(x), model.score_batch(x)


K = jax.random.key(1)
SHIPPED = {
    # every class of declebm.models, under EBM and bare; every base declebm builds
    "MLPEnergy tanh, tempered, log_z": lambda: eb.EBM(MLPEnergy(2, 16, 2, activation=jnp.tanh, key=K), log_z=3.0).tempered(2.0),
    "MLPEnergy depth 0": lambda: eb.EBM(MLPEnergy(3, 4, 0, key=K)),
    "MLPEnergy LearnableSwish": lambda: eb.EBM(MLPEnergy(2, 8, 2, activation=LearnableSwish(1.5), key=K)),
    "MLPEnergy LearnableSwish depth 0": lambda: eb.EBM(MLPEnergy(2, 8, 0, activation=LearnableSwish(), key=K)),
    "NoiseConditionedMLPEnergy": lambda: eb.EBM(
        NoiseConditionedMLPEnergy(2, 8, 1, activation=jax.nn.softplus, default_sigma=0.3, key=K)),
    "NoiseConditionedMLPEnergy LearnableSwish": lambda: eb.EBM(
        NoiseConditionedMLPEnergy(2, 8, 2, activation=LearnableSwish(), key=K)),
    "GaussianEnergy": lambda: eb.EBM(GaussianEnergy(jnp.array([1.0, -2.0]), covariance=[[2.0, 0.5], [0.5, 1.0]])),
    "MixtureEnergy": lambda: eb.EBM(MixtureEnergy(jnp.array([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]]),
                                                  covariances=jnp.stack([jnp.eye(2), 2 * jnp.eye(2), jnp.diag(jnp.array([0.5, 3.0]))]),
                                                  weights=jnp.array([1.0, 2.0, 3.0]))),
    "ConvEnergy spectral norm, flattened": lambda: eb.EBM(
        ConvEnergy((36,), image_shape=(1, 6, 6), channels=(4, 8), spectral_norm=True, power_iterations=3, key=K)),
    "ConvEnergy (H, W) LearnableSwish": lambda: eb.EBM(ConvEnergy((5, 6), channels=(3,), activation=LearnableSwish(), key=K)),
    "NoiseConditionedConvEnergy": lambda: eb.EBM(
        NoiseConditionedConvEnergy((3, 6, 5), channels=(4, 8), activation=jax.nn.gelu, default_sigma=0.3, key=K)),
    "ResNetEnergy LeakyReLU spectral norm, flattened": lambda: eb.EBM(ResNetEnergy(
        (36,), image_shape=(1, 6, 6), channels=(3, 4), downsample=(True, False), activation=LeakyReLU(0.1),
        power_iterations=2, key=K)),
    "NoiseConditionedResNetEnergy silu": lambda: eb.EBM(NoiseConditionedResNetEnergy(
        (2, 4, 4), width=2, channel_multipliers=(1, 2), blocks_per_level=2, activation=jax.nn.silu, spectral_norm=False,
        default_sigma=0.3, divide_by_sigma=True, key=K)),
    "ClassifierEnergy(MLPClassifier) LearnableSwish": lambda: eb.EBM(ClassifierEnergy(
        MLPClassifier(4, 3, width=8, depth=2, activation=LearnableSwish(0.7), key=K))),
    "bare ClassifierEnergy(MLPClassifier) depth 0": lambda: ClassifierEnergy(MLPClassifier(3, 5, width=4, depth=0, key=K)),
    "base GaussianBase": lambda: eb.EBM(MLPEnergy(2, 8, 1, key=K), base=eb.GaussianBase(jnp.array([0.5, -1.0]), 2.0)),
    "base MultivariateNormal (NCE's noise for vectors)": lambda: eb.EBM(
        MLPEnergy(2, 8, 1, key=K), base=dist.MultivariateNormal(jnp.array([0.5, -1.0]), jnp.array([[2.0, 0.3], [0.3, 1.0]]))),
    "base Normal.to_event (NCE's noise for images)": lambda: eb.EBM(
        ConvEnergy((1, 6, 6), channels=(2,), key=K), base=dist.Normal(jnp.full((1, 6, 6), 0.5), jnp.full((1, 6, 6), 0.2)).to_event(3)),
    "base Normal of numbers": lambda: eb.EBM(MLPEnergy(2, 8, 1, key=K), base=dist.Normal(0.0, 2.0)),
    "bare MLPEnergy": lambda: MLPEnergy(2, 8, 1, key=K),
    "bare MixtureEnergy": lambda: MixtureEnergy(jnp.array([[0.0, 1.0], [2.0, -1.0]]), stds=jnp.array([0.5, 2.0])),
    "bare ConvEnergy": lambda: ConvEnergy((2, 4, 4), channels=(3, 2), key=K),
    "bare NoiseConditionedConvEnergy": lambda: NoiseConditionedConvEnergy((1, 4, 4), channels=(2,), key=K),
    "bare GaussianBase": lambda: eb.GaussianBase(jnp.zeros((2, 3)), 0.5),
}


def test_the_shipped_cases_cover_every_model_class():
    shipped = {name for name, obj in vars(declebm.models).items()
               if inspect.isclass(obj) and issubclass(obj, eqx.Module)}
    covered = {type(m).__name__ for make in SHIPPED.values() for m in _modules(make())}
    assert shipped - covered == set() and "GaussianBase" in covered


def _modules(tree):
    out = []

    def visit(x):
        if isinstance(x, eqx.Module):
            out.append(x)
            for v in vars(x).values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    visit(tree)
    return out


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_models_load_without_a_template(tmp_path, name):
    model = _trained(SHIPPED[name]())
    path = tmp_path / "model.eqx"
    eb.save(path, model)
    loaded = eb.load(path)
    assert type(loaded) is type(model)
    _assert_same_model(model, loaded)
    assert jax.tree.structure(loaded) == jax.tree.structure(model)
    x = jax.random.normal(jax.random.key(5), (3, *model.event_shape))
    if isinstance(model, eb.EBM):
        assert loaded.event_shape == model.event_shape
        for a, b in zip(_log_prob_and_score(loaded, x), _log_prob_and_score(model, x)):
            np.testing.assert_array_equal(a, b)
        energy, ref = loaded.energy_module, model.energy_module
        if hasattr(ref, "mlp") and not isinstance(ref.mlp.activation, eqx.Module):
            assert energy.mlp.activation is ref.mlp.activation
        if hasattr(ref, "default_sigma"):
            assert energy.default_sigma == ref.default_sigma
            energy_at = eqx.filter_jit(lambda m, x: m.energy_batch(x, sigma=0.7))
            np.testing.assert_array_equal(energy_at(loaded, x), energy_at(model, x))
        if model.base is not None:
            assert type(loaded.base) is type(model.base)
        if isinstance(model.base, dist.Distribution):
            assert (loaded.base.batch_shape, loaded.base.event_shape) == (model.base.batch_shape, model.base.event_shape)
    elif isinstance(model, eb.GaussianBase):
        np.testing.assert_array_equal(*(eqx.filter_jit(lambda m, x: m.log_prob(x))(m, x) for m in (loaded, model)))
    else:
        np.testing.assert_array_equal(*(eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(m, x) for m in (loaded, model)))


def test_a_model_trained_with_nce_loads_without_a_template(tmp_path):
    # NCE's fitted noise (a NumPyro MultivariateNormal) becomes the model's base.
    from declebm.inference import NCE

    data = eb.datasets.toy("8gaussians", 256, key=jax.random.key(0))
    result = eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), data, NCE(), num_steps=4, batch_size=16,
                    key=jax.random.key(1), progress=False)
    assert isinstance(result.model.base, dist.MultivariateNormal)
    eb.save(tmp_path / "nce.eqx", result.model)
    loaded = eb.load(tmp_path / "nce.eqx")
    _assert_same_model(result.model, loaded)
    np.testing.assert_array_equal(loaded.log_prob_unnorm_batch(data[:8]), result.model.log_prob_unnorm_batch(data[:8]))


def test_another_numpyro_base_asks_for_a_template_naming_the_base(tmp_path):
    model = eb.EBM(MLPEnergy(2, 4, 1, key=K), base=dist.StudentT(3.0, jnp.zeros(2), jnp.ones(2)).to_event(1))
    eb.save(tmp_path / "t.eqx", model)
    with pytest.raises(ValueError, match=r"like: .*EBM.base.base_dist is a NumPyro StudentT.*Normal, MultivariateNormal, "
                                         r"Independent.*like=EBM\(MyEnergy\(.*\), base="):
        eb.load(tmp_path / "t.eqx")
    like = eb.EBM(MLPEnergy(2, 4, 1, key=K), base=dist.StudentT(1.0, jnp.ones(2), jnp.ones(2)).to_event(1))
    _assert_same_model(model, eb.load(tmp_path / "t.eqx", like=like))


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


def test_a_new_model_adopts_the_rebuild_recipe_with_one_method_and_its_module_is_trusted_by_name(tmp_path):
    model = eqx.tree_at(lambda m: m.w, RecipeEnergy(4, scale=2.5), jnp.arange(4.0))
    eb.save(tmp_path / "r.eqx", eb.EBM(model))
    module = RecipeEnergy.__module__
    with pytest.raises(ValueError, match=rf"trust: .*r\.eqx.*{re.escape(module)}:RecipeEnergy.*not trusted.*"
                                         rf"trust=\({re.escape(repr(module))},\).*like="):
        eb.load(tmp_path / "r.eqx")
    loaded = eb.load(tmp_path / "r.eqx", trust=(module.split(".")[0],))  # a package trusts its submodules
    assert isinstance(loaded.energy_module, RecipeEnergy) and loaded.energy_module.scale == 2.5
    _assert_same_model(eb.EBM(model), loaded)


PROBE_MODULE = """
import equinox as eqx
import jax
import jax.numpy as jnp

with open({log!r}, "a") as f:  # records every import of this module
    f.write("imported\\n")


class ProbeEnergy(eqx.Module):
    w: jax.Array

    def __init__(self, n):
        self.w = jnp.zeros(n)

    def __call__(self, x):
        return jnp.sum(self.w * x**2)

    def constructor_kwargs(self):
        return dict(n=self.w.shape[0])
"""


def test_a_file_naming_an_untrusted_module_is_refused_without_importing_it(tmp_path, monkeypatch):
    name = f"declebm_probe_{uuid.uuid4().hex[:10]}"
    log = tmp_path / "imports.log"
    (tmp_path / f"{name}.py").write_text(PROBE_MODULE.format(log=str(log)))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        probe = importlib.import_module(name)
        model = eb.EBM(eqx.tree_at(lambda e: e.w, probe.ProbeEnergy(2), jnp.array([1.0, 2.0])))
        eb.save(tmp_path / "m.eqx", model)
        del sys.modules[name], probe
        assert log.read_text() == "imported\n"
        with pytest.raises(ValueError, match=rf"trust: .*m\.eqx.*{name}:ProbeEnergy.*not trusted.*trust=\('{name}',\).*like="):
            eb.load(tmp_path / "m.eqx")
        with pytest.raises(ValueError, match=r"trust: .*not trusted"):
            eb.load(tmp_path / "m.eqx", trust=("declebm_probe",))  # a prefix of the name is not its package
        assert name not in sys.modules and log.read_text() == "imported\n"  # refused before importing
        loaded = eb.load(tmp_path / "m.eqx", trust=(name,))
        assert log.read_text() == "imported\n" * 2 and type(loaded.energy_module).__name__ == "ProbeEnergy"
        np.testing.assert_array_equal(loaded.energy_module.w, model.energy_module.w)  # a new class object: values only
        x = jnp.array([[0.5, -1.0]])
        np.testing.assert_array_equal(loaded.log_prob_unnorm_batch(x), model.log_prob_unnorm_batch(x))
    finally:
        sys.modules.pop(name, None)


def _rewrite_header(path, edit):
    """A consistent file with another header: the checksum recomputed, as a crafted file would be."""
    magic, _, header, body = path.read_bytes().split(b"\n", 3)
    header = edit(header) + b"\n"
    payload = header + body
    path.write_bytes(magic + b"\n" + b"sha256 %s %d\n" % (hashlib.sha256(payload).hexdigest().encode(), len(payload)) + payload)


@pytest.mark.parametrize(
    "import_path, match",
    [
        ("os:PathLike", r"trust: .*asks to rebuild os:PathLike, from the module 'os', which is not trusted"),
        ("declebm._checks:check_number", r"path: cannot rebuild .*declebm._checks:check_number is not an Equinox module class"),
        ("declebm._ebm:EBM.__init__.__globals__", r"path: cannot rebuild .*is not an Equinox module class"),
        ("os; import this:X", r"path: cannot rebuild .*is not the import path of a class"),
    ],
)
def test_a_header_naming_another_class_is_refused(tmp_path, import_path, match):
    p = tmp_path / "m.eqx"
    eb.save(p, eb.EBM(MLPEnergy(2, 4, 1, key=K)))
    _rewrite_header(p, lambda h: h.replace(b"declebm.models._mlp:MLPEnergy", import_path.encode()))
    with pytest.raises(ValueError, match=match):
        eb.load(p)


@pytest.mark.parametrize("old, new, match", [
    (b"jax.nn.silu", b"jax.nn.softplus", "is truncated or damaged"),
    (b"jax.nn.silu", b"jax.nn.gelu", "is corrupt: its sha256 does not match the one it records"),
    (b"[8,2]", b"[8,3]", "is corrupt: its sha256 does not match the one it records"),
])
def test_an_edited_header_is_refused(tmp_path, old, new, match):
    p = tmp_path / "m.eqx"
    eb.save(p, eb.EBM(MLPEnergy(2, 8, 1, key=K)))  # activation jax.nn.silu
    data = p.read_bytes()
    assert data.count(old) >= 1
    p.write_bytes(data.replace(old, new, 1))
    with pytest.raises(ValueError, match=rf"path: .*m\.eqx.* {match}"):
        eb.load(p)


def test_files_of_format_1_still_load_checked_as_then(tmp_path):
    # Written by declebm.save before the checksum covered the header (commit 553af19).
    path = os.path.join(DATA, "mlp_tanh_v1.eqx")
    ref = np.load(os.path.join(DATA, "mlp_tanh_v1_values.npz"))
    with open(path, "rb") as f:
        assert f.read(16) == b"declebm-model 1\n"
    model = eb.load(path)
    assert model.energy_module.mlp.activation is jnp.tanh and float(model.log_z) == 1.25
    # The leaves are checked bit for bit by the file's sha256; the energies computed from them
    # differ across CPUs by an ulp or two (XLA's vectorised tanh differs between AVX2 and AVX-512).
    np.testing.assert_allclose(model.energy_batch(ref["x"]), ref["energy"], rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(model.log_prob_unnorm_batch(ref["x"]), ref["log_prob_unnorm"], rtol=2e-6, atol=1e-7)
    _assert_same_model(model, eb.load(path, like=eb.EBM(MLPEnergy(2, 8, 2, activation=jnp.tanh, key=K))))
    flipped = tmp_path / "flipped.eqx"
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x01
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is corrupt: the leaves' sha256"):
        eb.load(flipped)
    newer = tmp_path / "newer.eqx"
    newer.write_bytes(b"declebm-model 9\n" + bytes(data[16:]))
    with pytest.raises(ValueError, match="path: .*newer.eqx.* is a model file of format version 9; this declebm reads versions 1, 2"):
        eb.load(newer)


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
        (_flip, "is corrupt: its sha256"),
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
        (lambda d: eb.save(d / "m.eqx", [object(), "x"]), ValueError, "model: expected a model with arrays"),
        (lambda d: eb.save(d / "m.eqx", object()), TypeError, "model: expected an Equinox module or a pytree of arrays, got object"),
        (lambda d: eb.save(d / "m.eqx", "weights"), TypeError, "model: expected an Equinox module or a pytree of arrays, got str"),
        (lambda d: eb.load(d / "m.eqx", trust="mypkg"), TypeError, r"trust: expected a tuple of module names, got the string 'mypkg'; write trust=\('mypkg',\)"),
        (lambda d: eb.load(d / "m.eqx", trust=None), TypeError, "trust: expected a tuple of module names"),
        (lambda d: eb.load(d / "m.eqx", trust=("my pkg",)), ValueError, "trust: expected module names such as"),
        (lambda d: eb.load(d / "missing.eqx"), ValueError, "path: no such file"),
        (lambda d: eb.load(None), TypeError, "path: expected a file path"),
        (lambda d: eb.load(d), ValueError, "path: .* is a directory"),
    ],
)
def test_bad_arguments(tmp_path, call, exc, match):
    eb.save(tmp_path / "m.eqx", eb.EBM(MLPEnergy(2, 4, 1, key=jax.random.key(0))))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(exc, match=match):
        call(tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # a refused save writes nothing


def test_a_trained_model_round_trips(tmp_path):
    from declebm.inference import Langevin, PersistentCD

    data = eb.datasets.toy("8gaussians", 256, key=jax.random.key(0))
    result = eb.fit(eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0))), data, PersistentCD(Langevin(0.05), steps=1),
                    num_steps=10, batch_size=16, key=jax.random.key(1), progress=False)
    eb.save(tmp_path / "trained.eqx", result.model)
    loaded = eb.load(tmp_path / "trained.eqx")
    _assert_same_model(result.model, loaded)
    np.testing.assert_array_equal(loaded.energy_batch(data[:8]), result.model.energy_batch(data[:8]))


@pytest.fixture
def reversed_numpyro_field_order(monkeypatch):
    """NumPyro flattens a density's fields in the order of a ``set`` of their names, which
    changes with PYTHONHASHSEED between processes: emulate the other process's order."""

    def patch():
        for cls in (dist.Normal, dist.MultivariateNormal, dist.Independent):
            order = tuple(reversed(cls.gather_pytree_data_fields()))
            monkeypatch.setattr(cls, "gather_pytree_data_fields", classmethod(lambda c, o=order: o))

    return patch


@pytest.mark.parametrize("scale", [np.arange(1.0, 5.0, dtype=np.float32), 1.0], ids=["array", "python-float"])
def test_a_numpyro_base_loads_in_a_process_whose_field_order_differs(tmp_path, reversed_numpyro_field_order, scale):
    # loc and scale of the same shape: read in the other order, they would swap silently
    base = dist.Normal(jnp.arange(4.0), scale).to_event(1)
    model = eb.EBM(MLPEnergy(4, 8, 1, key=jax.random.key(0)), base=base)
    eb.save(tmp_path / "m.eqx", model)
    reversed_numpyro_field_order()
    loaded = eb.load(tmp_path / "m.eqx")
    np.testing.assert_array_equal(loaded.base.base_dist.loc, np.arange(4.0))
    np.testing.assert_array_equal(loaded.base.base_dist.scale, np.broadcast_to(scale, np.shape(base.base_dist.scale)))
    x = jnp.ones((3, 4))
    np.testing.assert_array_equal(loaded.log_prob_unnorm_batch(x), model.log_prob_unnorm_batch(x))


def test_a_file_written_before_the_canonical_order_still_loads(tmp_path, monkeypatch):
    import declebm._serialise as serialise

    model = eb.EBM(MLPEnergy(4, 8, 1, key=jax.random.key(0)), base=dist.Normal(jnp.arange(4.0), jnp.ones(1)).to_event(1))
    with monkeypatch.context() as m:  # the writer of before: NumPyro's own leaf order and paths
        m.setattr(serialise, "canonical_tree", lambda tree: tree)
        eb.save(tmp_path / "old.eqx", model)
    assert "<flat index" in (tmp_path / "old.eqx").read_bytes().decode("latin-1")
    loaded = eb.load(tmp_path / "old.eqx")
    np.testing.assert_array_equal(loaded.base.base_dist.loc, np.arange(4.0))
