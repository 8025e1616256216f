"""Convolutional energies: shapes, scalar output, gradients, spectral norm, a fit step on digits."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import DenoisingScoreMatching, MALA, PersistentCD
from declebm.models import ConvEnergy, NoiseConditionedConvEnergy
from declebm.models._conv import spectral_normalise

SMALL = dict(channels=(4, 8))


@pytest.mark.parametrize(
    "event_shape, image_shape", [((8, 8), None), ((1, 8, 8), None), ((64,), (8, 8)), ((3, 6, 5), None)]
)
def test_shapes_scalar_and_grads(event_shape, image_shape):
    energy = ConvEnergy(event_shape, image_shape=image_shape, key=jax.random.key(0), **SMALL)
    assert energy.event_shape == event_shape
    x = jax.random.uniform(jax.random.key(1), event_shape)
    assert energy(x).shape == ()
    g = jax.grad(energy)(x)
    assert g.shape == event_shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    # parameter gradients reach every layer
    model = eb.EBM(energy)
    grads = eqx.filter_grad(lambda m: m.energy_batch(x[None]).sum())(model)
    for conv in grads.energy_module.net.convs:
        assert float(jnp.abs(conv.weight).sum()) > 0


def test_flattened_and_image_layouts_agree():
    e_img = ConvEnergy((1, 8, 8), key=jax.random.key(0), **SMALL)
    e_flat = ConvEnergy((64,), image_shape=(1, 8, 8), key=jax.random.key(0), **SMALL)
    x = jax.random.uniform(jax.random.key(1), (1, 8, 8))
    np.testing.assert_allclose(e_img(x), e_flat(x.reshape(64)), rtol=1e-6)


def test_spectral_normalise_divides_by_the_top_singular_value():
    w = jax.random.normal(jax.random.key(2), (16, 8, 3, 3))
    top = np.linalg.norm(np.asarray(w).reshape(16, -1), 2)
    normed = np.asarray(spectral_normalise(w, 50)).reshape(16, -1)
    # power iteration approaches sigma from below: after 50 steps the norm is within 1% of 1
    assert np.linalg.norm(normed, 2) >= 1.0 - 1e-4 and np.linalg.norm(normed, 2) < 1.01
    np.testing.assert_allclose(normed * np.linalg.norm(normed, 2) ** -1 * top, np.asarray(w).reshape(16, -1), rtol=1e-3)
    energy = ConvEnergy((8, 8), spectral_norm=True, key=jax.random.key(0), **SMALL)
    x = jax.random.uniform(jax.random.key(1), (8, 8))
    assert energy(x).shape == () and bool(jnp.isfinite(jax.grad(energy)(x)).all())
    # each layer is then ~1-Lipschitz and SiLU is 1.1-Lipschitz: the energy's input gradient is bounded
    assert float(jnp.linalg.norm(jax.grad(energy)(x))) < 1.1 ** 2 * 1.05 ** 3


def test_noise_conditioned_conventions():
    energy = NoiseConditionedConvEnergy((8, 8), default_sigma=0.2, key=jax.random.key(0), **SMALL)
    x = jax.random.uniform(jax.random.key(1), (8, 8))
    np.testing.assert_allclose(energy(x), energy(x, sigma=0.2), rtol=1e-6)
    assert not np.allclose(energy(x, sigma=0.2), energy(x, sigma=1.0))
    # E(x, sigma) = net([x, log sigma]) / sigma
    feats = jnp.concatenate([x[None], jnp.full((1, 8, 8), jnp.log(0.5))])
    np.testing.assert_allclose(energy(x, sigma=0.5), energy.net(feats) / 0.5, rtol=1e-5)
    model = eb.EBM(energy)
    xs = jax.random.uniform(jax.random.key(2), (4, 8, 8))
    sig = jnp.linspace(0.1, 1.0, 4)
    looped = jnp.stack([energy(xs[i], sigma=sig[i]) for i in range(4)])
    np.testing.assert_allclose(model.energy_batch(xs, sigma=sig), looped, rtol=1e-5)
    with pytest.raises(ValueError, match="^sigma"):
        energy(x, sigma=jnp.ones(2))


@pytest.fixture(scope="module")
def digits():
    train, _ = eb.datasets.digits(key=jax.random.key(0), flatten=False)
    return train[:256]


def test_fit_steps_on_digits(digits):
    # PCD on (1, 8, 8) images with spectral norm, DSM with the noise-conditioned energy on (8, 8)
    model = eb.EBM(ConvEnergy((1, 8, 8), spectral_norm=True, key=jax.random.key(0), **SMALL))
    res = eb.fit(model, digits[:, None], PersistentCD(MALA(step_size=0.01), steps=2), num_steps=3, batch_size=16,
                 key=jax.random.key(1))
    assert np.all(np.isfinite(res.history["loss"]))
    before = model.energy_module.net.head.weight
    assert not np.allclose(before, res.model.energy_module.net.head.weight)
    cond = eb.EBM(NoiseConditionedConvEnergy((8, 8), key=jax.random.key(0), **SMALL))
    res = eb.fit(cond, digits, DenoisingScoreMatching(sigma=0.1), num_steps=3, batch_size=16, key=jax.random.key(1))
    assert np.all(np.isfinite(res.history["loss"]))


def test_bad_input():
    with pytest.raises(ValueError, match=r"^ConvEnergy\(event_shape"):
        ConvEnergy((64,), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^ConvEnergy\(image_shape"):
        ConvEnergy((64,), image_shape=(7, 7), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^ConvEnergy\(channels"):
        ConvEnergy((8, 8), channels=(), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^NoiseConditionedConvEnergy\(default_sigma"):
        NoiseConditionedConvEnergy((8, 8), default_sigma=0.0, key=jax.random.key(0))


def test_plot_images(tmp_path):
    pytest.importorskip("matplotlib")
    import declebm.plot as ebplot

    x = np.random.default_rng(0).uniform(size=(10, 64))
    ax = ebplot.images(x, title="flat")
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (3 * 9 + 1, 4 * 9 + 1)  # 10 images, 4 per row in 3 rows, 1 px padding
    np.testing.assert_allclose(grid[1:9, 1:9], x[0].reshape(8, 8))
    ebplot.images(x.reshape(10, 1, 8, 8), ncols=5)
    ebplot.images(np.random.default_rng(0).uniform(size=(3, 3, 4, 4)))  # colour
    ax.figure.savefig(tmp_path / "grid.png")
    with pytest.raises(ValueError, match="^image_shape"):
        ebplot.images(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="^x"):
        ebplot.images(np.zeros((2, 5, 4, 4)))
