"""Convolutional energies: shapes, scalar output, gradients, spectral norm, a fit step on digits."""

import os
import subprocess
import sys

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
    # compiled as one program (op by op, each operation would compile one of its own)
    e, g = eqx.filter_jit(lambda f, x: (f(x), jax.grad(f)(x)))(energy, x)
    assert e.shape == ()
    assert g.shape == event_shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    # parameter gradients reach every layer
    model = eb.EBM(energy)
    grads = eqx.filter_jit(eqx.filter_grad(lambda m, x: m.energy_batch(x[None]).sum()))(model, x)
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


@pytest.mark.slow
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


# ---- channel-last convolutions (fast inside compiled loops) ----------------------------

from declebm.models import conv2d  # noqa: E402
from declebm._conv2d import conv2d_native, conv2d_patches  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data")


def _reference_nchw(x_hwc, kernel_hwio, stride, padding):
    """The channel-first lax convolution the energies used before (NCHW/OIHW)."""
    y = jax.lax.conv_general_dilated(
        jnp.transpose(x_hwc, (2, 0, 1))[None], jnp.transpose(kernel_hwio, (3, 2, 0, 1)), stride, padding,
        dimension_numbers=("NCHW", "OIHW", "NCHW"))[0]
    return jnp.transpose(y, (1, 2, 0))


@pytest.mark.parametrize("shape, ksize, stride, padding", [
    ((8, 8, 1), 3, (1, 1), ((1, 1), (1, 1))),
    ((7, 9, 3), 3, (2, 2), ((1, 1), (1, 1))),
    ((6, 5, 4), 1, (1, 1), ((0, 0), (0, 0))),
    ((9, 8, 2), 4, (2, 3), ((0, 2), (1, 0))),
])
def test_conv2d_equals_the_channel_first_convolution_and_its_gradients(shape, ksize, stride, padding):
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    kernel = jax.random.normal(kk, (ksize, ksize, shape[-1], 5))
    ref = _reference_nchw(x, kernel, stride, padding)
    dy = jax.random.normal(kg, ref.shape)

    def value_and_grads(f):  # f(x, kernel) and the gradients of <f, dy>, as one compiled program
        def both(x, k):
            return f(x, k), jax.grad(lambda x, k: jnp.vdot(f(x, k), dy), argnums=(0, 1))(x, k)
        return jax.jit(both)(x, kernel)

    _, (rx, rk) = value_and_grads(lambda x, k: _reference_nchw(x, k, stride, padding))
    for impl in (conv2d_patches, conv2d_native, lambda x, k, s, p: conv2d(x, k, stride=s, padding=p)):
        out, (gx, gk) = value_and_grads(lambda x, k: impl(x, k, stride, padding))
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(gx, rx, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(gk, rk, atol=1e-4, rtol=1e-5)
    # leading batch axes
    xb = jnp.stack([x, 2 * x])
    np.testing.assert_allclose(conv2d(xb, kernel, stride=stride, padding=padding)[1], 2 * ref, atol=1e-4, rtol=1e-5)


def test_conv2d_bad_input():
    x, k = jnp.zeros((8, 8, 3)), jnp.zeros((3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"^conv2d\(stride"):
        conv2d(x, k, stride=0)
    with pytest.raises(ValueError, match=r"^conv2d\(padding"):
        conv2d(x, k, padding=-1)
    with pytest.raises(ValueError, match=r"^conv2d: expected x of shape \(\.\.\., H, W, C_in\)"):
        conv2d(jnp.zeros((3, 8, 8)), k)


def test_models_saved_with_the_channel_first_energies_load_and_agree():
    # Files and values written by the NCHW implementation (commit 6265035, before the
    # channel-last rewrite): the weights keep Equinox's OIHW storage, so the files load and
    # give the same energies and scores within 1e-5.
    ref = np.load(os.path.join(DATA, "conv_nchw_v0_values.npz"))
    like = eb.EBM(ConvEnergy((1, 8, 8), channels=(4, 8, 8), key=jax.random.key(9)))
    model = eb.load(os.path.join(DATA, "conv_nchw_v0.eqx"), like=like)
    e, g = eqx.filter_jit(lambda m, x: (m.energy_batch(x), m.score_batch(x)))(model, ref["conv_x"])
    np.testing.assert_allclose(e, ref["conv_energy"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(g, ref["conv_score"], atol=1e-5, rtol=1e-5)
    like = eb.EBM(NoiseConditionedConvEnergy((3, 6, 5), channels=(4, 8), spectral_norm=True, default_sigma=0.3,
                                             key=jax.random.key(9)))
    model = eb.load(os.path.join(DATA, "noise_conv_nchw_v0.eqx"), like=like)
    e, g = eqx.filter_jit(lambda f, x, s: (jax.vmap(lambda x, s: f(x, sigma=s))(x, s),
                                           jax.vmap(jax.grad(lambda x, s: f(x, sigma=s)))(x, s)))(
        model.energy_module, ref["noise_x"], ref["noise_sigma"])
    np.testing.assert_allclose(e, ref["noise_energy"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(g, ref["noise_score"], atol=1e-5, rtol=1e-5)


_DUMP_SCRIPT = r"""
import jax, jax.numpy as jnp, optax
import declebm as eb
from declebm.inference import HMC, Langevin, ShortRunML, DiffusionRecoveryLikelihood
from declebm.models import ConvEnergy, NoiseConditionedConvEnergy
k = jax.random.key(0)
data = jax.random.uniform(k, (64, 1, 8, 8))
model = eb.EBM(ConvEnergy((1, 8, 8), channels=(4, 8), key=k))
eb.fit(model, data, ShortRunML(Langevin(1e-3), steps=2), optimizer=optax.adam(1e-4), num_steps=2, batch_size=8,
       key=k, progress=False)
eb.sample(model, HMC(1e-3, num_integration_steps=2), num_samples=4, num_steps=2, key=k)
cond = eb.EBM(NoiseConditionedConvEnergy((1, 8, 8), channels=(4, 8), key=k))
eb.fit(cond, data, DiffusionRecoveryLikelihood(num_levels=2, langevin_steps=2), optimizer=optax.adam(1e-4), num_steps=2,
       batch_size=8, key=k, progress=False)
"""


@pytest.mark.slow
def test_no_convolution_op_in_any_compiled_program_on_cpu(tmp_path):
    # Structural check of the speed fix, without timing: on CPU the programs that fit (the
    # energy's gradient in x inside the sampler's loop, and in the parameters), sample (HMC)
    # and recovery likelihood (the noise-conditioned energy) compile for a conv energy hold no
    # convolution instruction (XLA:CPU runs those slowly inside while-loop bodies); the
    # convolutions are slices and dots. Every other entry point (AIS, SMC, long_run, particle
    # dynamics, the other samplers) calls the same two energies, so the same layers, through
    # the same first and second derivatives. XLA dumps every optimised module it compiles.
    dump = tmp_path / "dump"
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} --xla_dump_hlo_as_text", JAX_PLATFORMS="cpu",
               JAX_ENABLE_COMPILATION_CACHE="false")
    proc = subprocess.run([sys.executable, "-c", _DUMP_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = {p.name: p.read_text() for p in dump.glob("*after_optimizations.txt")}
    loops = [name for name, t in texts.items() if " while(" in t]
    assert len(loops) >= 3, f"expected the compiled loops of fit, the sampler and recovery, found {loops}"
    with_conv = sorted(name for name, t in texts.items() if " convolution(" in t)
    assert not with_conv, f"compiled programs with a convolution instruction: {with_conv}"
