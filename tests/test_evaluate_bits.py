"""bits_per_dim: exact on densities whose log-likelihood is known in closed form, through each
pixel transform's log-determinant, and carrying an AIS estimate's error bar and verdict."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import AIS
from declebm.models import GaussianEnergy


def test_a_uniform_density_on_the_pixel_cube_costs_the_bits_of_one_pixel():
    # p(x) = 1 on [0, 1)^D: log-likelihood 0, so every dimension costs log2(levels) bits
    assert eb.evaluate.bits_per_dim(0.0, (1, 28, 28)).bits_per_dim == pytest.approx(8.0)
    assert eb.evaluate.bits_per_dim(0.0, 64, levels=17).bits_per_dim == pytest.approx(math.log2(17))
    # a density twice as high everywhere (on half the cube) saves one bit per image, 1/D per dim
    assert eb.evaluate.bits_per_dim(math.log(2.0), 64, levels=17).bits_per_dim == pytest.approx(
        math.log2(17) - 1 / 64)


@pytest.mark.parametrize("transform", ["symmetric", "logit"])
def test_the_same_uniform_density_seen_through_a_pixel_transform(transform):
    # The uniform density of x in [0, 1)^D seen as y = T(x) has log p_y(y) = -log|det dT/dx|
    # exactly, so log p_y + log_det = 0 per image and bits/dim is 8 again, whatever T is:
    # the log-determinants the transforms return are what bits_per_dim must add.
    x = jax.random.uniform(jax.random.key(0), (50, 3, 4, 4), minval=0.01, maxval=0.99)
    if transform == "symmetric":
        y, log_det = eb.datasets.to_symmetric_range(x)
    else:
        y, log_det = eb.datasets.logit_transform(x, alpha=0.05)
    assert y.shape == x.shape and log_det.shape == (50,)
    log_likelihood = -float(jnp.mean(log_det))  # the mean of log p_y over these images
    bpd = eb.evaluate.bits_per_dim(log_likelihood, (3, 4, 4), log_det=log_det)
    assert bpd.bits_per_dim == pytest.approx(8.0, abs=1e-5)
    assert bpd.stderr is None and bpd.reliable is None


@pytest.mark.slow
def test_an_ais_estimate_carries_its_stderr_and_verdict_and_matches_the_exact_figure():
    # A Gaussian model of 16 "pixels" around 0.5 with sd 0.1: log Z is known, so the exact
    # test log-likelihood is too; AIS's estimate must agree within its error bar (4 stderr
    # plus float32 rounding), and bits_per_dim scales the stderr by 1/(D log 2).
    d = 16
    mean, std = 0.5 * jnp.ones(d), 0.1
    model = eb.EBM(GaussianEnergy(mean, covariance=std**2 * jnp.eye(d)), event_shape=(d,))
    x = mean + std * jax.random.normal(jax.random.key(1), (200, d))
    exact = float(jnp.mean(-model.energy_batch(x)) - model.energy_module.log_z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = eb.evaluate.log_likelihood(model, x, AIS(num_chains=64, num_steps=200), key=jax.random.key(2))
    bpd = eb.evaluate.bits_per_dim(est, (1, 4, 4))
    scale = d * math.log(2.0)
    assert bpd.stderr == pytest.approx(float(est.stderr) / scale)
    assert bpd.reliable == est.reliable and bpd.reliable is True
    exact_bits = eb.evaluate.bits_per_dim(exact, (1, 4, 4)).bits_per_dim
    assert abs(bpd.bits_per_dim - exact_bits) < 4 * bpd.stderr + 1e-4, (bpd, exact_bits)
    assert repr(bpd).startswith("BitsPerDim(bits_per_dim=") and "reliable=True" in repr(bpd)


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="^event_shape"):
        eb.evaluate.bits_per_dim(1.0, "1x8x8")
    with pytest.raises(ValueError, match="^event_shape"):
        eb.evaluate.bits_per_dim(1.0, (1, 0, 8))
    with pytest.raises(ValueError, match="^levels"):
        eb.evaluate.bits_per_dim(1.0, 64, levels=1)
    with pytest.raises(ValueError, match="^log_likelihood"):
        eb.evaluate.bits_per_dim(float("nan"), 64)
    with pytest.raises(ValueError, match="^log_likelihood"):
        eb.evaluate.bits_per_dim(np.ones(3), 64)
    with pytest.raises(ValueError, match="^log_det"):
        eb.evaluate.bits_per_dim(1.0, 64, log_det=np.ones((2, 2)))
