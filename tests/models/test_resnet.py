"""Residual image energies: shapes, gradients, spectral norm, noise conditioning, shape errors, a fit step."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import DiffusionRecoveryLikelihood, Langevin, MALA, PersistentCD
from declebm.models import NoiseConditionedResNetEnergy, ResNetEnergy
from declebm.models._resnet import _Conv, _Normalisation, level_embedding

K = jax.random.key(0)
SMALL = dict(channels=(4, 8), downsample=(True, False), power_iterations=3)
SMALL_COND = dict(width=4, channel_multipliers=(1, 2), blocks_per_level=1, power_iterations=3)


@eqx.filter_jit
def _jit_call(module, x, kw):
    return module(x, **kw)


def call(module, x, **kw):
    """``module(x, **kw)`` as one compiled program: eagerly, each of a residual network's
    hundreds of operations would compile on its own (seconds per test on two CPU cores)."""
    return _jit_call(module, x, {k: jnp.asarray(v) for k, v in kw.items()})


@eqx.filter_jit
def _energies_scores_and_grads(model, x, sigma=None):
    kw = {} if sigma is None else {"sigma": sigma}
    grads = eqx.filter_grad(lambda m: m.energy_batch(x, **kw).sum())(model)
    return model.energy_batch(x, **kw), model.score_batch(x, **kw), grads


@pytest.mark.parametrize("event_shape, image_shape", [((64,), (8, 8)), ((3, 6, 5), None)])
def test_resnet_energy_shapes_and_gradients(event_shape, image_shape):
    energy = ResNetEnergy(event_shape, image_shape=image_shape, key=K, **SMALL)
    assert energy.event_shape == event_shape
    x = jax.random.uniform(jax.random.key(1), (3, *event_shape))
    e, s, grads = _energies_scores_and_grads(eb.EBM(energy), x)
    assert e.shape == (3,) and s.shape == x.shape and bool(jnp.all(jnp.isfinite(s)))
    assert float(jnp.abs(s).sum()) > 0
    g = grads.energy_module
    for leaf in [g.conv_in.kernel, g.head.weight] + [b.conv_1.kernel for b in g.blocks] + [b.conv_2.kernel for b in g.blocks]:
        assert float(jnp.abs(leaf).sum()) > 0  # every layer gets a gradient
    assert g.blocks[1].shortcut is not None  # 4 -> 8 channels: a 1x1 shortcut convolution
    # one example agrees with the batch (the flattened and image layouts are one network)
    np.testing.assert_allclose(call(energy, x[1]), e[1], rtol=1e-5, atol=1e-6)


def test_spectral_normalisation_of_hwio_kernels():
    norm = _Normalisation(True, 30)
    w = jax.random.normal(jax.random.key(2), (3, 3, 4, 6))  # HWIO
    normed = np.asarray(norm.weight(w)).reshape(-1, 6)
    # the largest singular value of the (fan_in, out) matrix is 1 (power iteration from below: within 1%)
    assert np.linalg.norm(normed, 2) >= 1.0 - 1e-4 and np.linalg.norm(normed, 2) < 1.01
    np.testing.assert_allclose(normed * np.linalg.norm(np.asarray(w).reshape(-1, 6), 2), np.asarray(w).reshape(-1, 6),
                               rtol=2e-2)
    # lower-bounded (the code's zero-initialised layers): w / max(sigma, 1), so small and zero weights stay as they are
    small = 0.01 * w
    np.testing.assert_allclose(norm.weight(small, lower_bounded=True), small, rtol=1e-6)
    zero = jnp.zeros_like(w)
    assert bool(jnp.all(norm.weight(zero, lower_bounded=True) == 0))
    g = jax.grad(lambda v: jnp.sum(norm.weight(v, lower_bounded=True) ** 2))(zero)
    assert bool(jnp.all(jnp.isfinite(g)))
    # the energy with spectral_norm=True is the energy of the normalised kernels (the output layer as it is)
    energy = ResNetEnergy((1, 8, 8), key=K, **SMALL)
    plain = jax.tree.map(lambda c: eqx.tree_at(lambda c: c.kernel, c, energy.norm.weight(c.kernel)) if isinstance(c, _Conv)
                         else c, energy, is_leaf=lambda c: isinstance(c, _Conv))
    plain = eqx.tree_at(lambda e: e.norm, plain, _Normalisation(False, 3))
    x = jax.random.uniform(jax.random.key(1), (1, 8, 8))
    np.testing.assert_allclose(call(energy, x), call(plain, x), rtol=1e-5)
    unnormalised = eqx.tree_at(lambda e: e.norm, energy, _Normalisation(False, 3))
    assert not np.isclose(call(energy, x), call(unnormalised, x), rtol=1e-3)


def test_noise_conditioned_resnet_conventions():
    energy = NoiseConditionedResNetEnergy((1, 8, 8), default_sigma=0.2, key=K, **SMALL_COND)
    x = jax.random.uniform(jax.random.key(1), (4, 1, 8, 8))
    sig = jnp.array([0.1, 0.3, 0.6, 1.0])
    model = eb.EBM(energy)
    e, s, grads = _energies_scores_and_grads(model, x, sig)
    looped = np.array([call(energy, x[i], sigma=sig[i]) for i in range(4)])
    np.testing.assert_allclose(e, looped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(call(energy, x[0]), call(energy, x[0], sigma=0.2), rtol=1e-6)
    assert not np.isclose(call(energy, x[0], sigma=0.2), call(energy, x[0], sigma=0.9))
    g = grads.energy_module
    assert float(jnp.abs(g.level_1.weight).sum()) > 0 and float(jnp.abs(g.levels[1][0].conv_2.kernel).sum()) > 0
    # the second convolution of each block starts at zero (the code's init_scale=0): the blocks start as the
    # identity (or their shortcut), so the embedding reaches the output only through the final product
    assert all(float(jnp.abs(b.conv_2.kernel).sum()) == 0 for level in energy.levels for b in level)
    divided = NoiseConditionedResNetEnergy((1, 8, 8), divide_by_sigma=True, key=K, **SMALL_COND)
    np.testing.assert_allclose(call(divided, x[0], sigma=0.5), call(energy, x[0], sigma=0.5) / 0.5, rtol=1e-5)
    emb = level_embedding(jnp.log(0.5), 7)
    assert emb.shape == (7,) and float(emb[-1]) == 0.0
    np.testing.assert_allclose(emb[:3] ** 2 + emb[3:6] ** 2, 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="^sigma"):
        call(energy, x[0], sigma=jnp.ones(2))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"^ResNetEnergy\(event_shape=...\): expected an image shape"):
        ResNetEnergy((64,), key=K)
    with pytest.raises(ValueError, match=r"^NoiseConditionedResNetEnergy\(event_shape"):
        NoiseConditionedResNetEnergy((10,), key=K)
    with pytest.raises(ValueError, match=r"^ResNetEnergy\(downsample"):
        ResNetEnergy((1, 8, 8), channels=(4, 8), downsample=(True,), key=K)
    with pytest.raises(ValueError, match=r"^ResNetEnergy: 4 halvings of the 8x8 image"):
        ResNetEnergy((1, 8, 8), channels=(4,) * 4, downsample=(True,) * 4, key=K)
    with pytest.raises(ValueError, match=r"^NoiseConditionedResNetEnergy\(channel_multipliers"):
        NoiseConditionedResNetEnergy((1, 8, 8), channel_multipliers=(), key=K)
    with pytest.raises(ValueError, match=r"^default_sigma"):
        NoiseConditionedResNetEnergy((1, 8, 8), default_sigma=0.0, key=K)
    with pytest.raises(TypeError, match=r"^activation"):
        ResNetEnergy((1, 8, 8), activation="relu", key=K)
    # grey images without their channel axis: the error says to add it, in energy_batch and in fit
    model = eb.EBM(ResNetEnergy((1, 8, 8), key=K, **SMALL))
    x = jnp.zeros((5, 8, 8))
    with pytest.raises(ValueError, match=r"^x: .*lack the channel axis: add it with x\[:, None\]"):
        model.energy_batch(x)
    with pytest.raises(ValueError, match=r"^data: .*lack the channel axis: add it with data\[:, None\]"):
        eb.fit(model, x, PersistentCD(MALA(0.01)), num_steps=1, batch_size=2, key=K)


@pytest.mark.slow
def test_fit_steps_on_digits():
    # slow: two compiled fits (about 3x test_conv.py's fit test). Langevin and no divergence
    # guard for the first (the guard's programs, tested elsewhere, doubled its compile time).
    train, _ = eb.datasets.digits(key=jax.random.key(0), flatten=False)
    images = train[:64, None]
    model = eb.EBM(ResNetEnergy((1, 8, 8), key=K, **SMALL))
    res = eb.fit(model, images, PersistentCD(Langevin(step_size=0.01), steps=2), num_steps=2, batch_size=8,
                 key=jax.random.key(1), progress=False, divergence_guard=None)
    assert np.all(np.isfinite(res.history["loss"]))
    assert not np.allclose(model.energy_module.head.weight, res.model.energy_module.head.weight)
    cond = eb.EBM(NoiseConditionedResNetEnergy((1, 8, 8), key=K, **SMALL_COND))
    symmetric, _ = eb.datasets.to_symmetric_range(images)
    res = eb.fit(cond, symmetric, DiffusionRecoveryLikelihood(num_levels=2, langevin_steps=2), num_steps=2,
                 batch_size=8, key=jax.random.key(1), progress=False)
    assert np.all(np.isfinite(res.history["loss"]))
