import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb


@pytest.mark.parametrize("name", eb.datasets.TOY_NAMES)
def test_toy_shapes_and_reproducibility(name):
    a = eb.datasets.toy(name, 500, key=jax.random.key(0))
    b = eb.datasets.toy(name, 500, key=jax.random.key(0))
    assert a.shape == (500, 2) and a.dtype == jnp.float32
    assert np.all(np.isfinite(a)) and np.array_equal(a, b)
    assert np.abs(np.asarray(a)).max() < 6.0  # inside the [-5, 5]^2 evaluation box, up to noise tails


def test_eight_gaussians_matches_the_reference_definition():
    x = np.asarray(eb.datasets.toy("8gaussians", 40_000, key=jax.random.key(1)))
    # centres at radius 4/1.414 on the 8 compass directions, std 0.5/1.414 per coordinate
    angles = np.arange(8) * np.pi / 4
    units = np.stack([np.cos(angles), np.sin(angles)], -1)
    nearest = units[np.argmax(x @ units.T, axis=1)]
    along = np.sum(x * nearest, 1)  # ~ N(R, s^2) (modes are 5.7 s.d. apart from the boundary)
    across = x - along[:, None] * nearest
    # s.e. of a mean over 40000 draws: s / 200 = 0.0018; of a std: 0.0013. Allow ~5 s.e.
    assert abs(along.mean() - 4 / 1.414) < 0.01
    assert abs(np.sqrt(np.mean(np.sum(across**2, 1))) - 0.5 / 1.414) < 0.007
    # true entropy: log 8 + log(2 pi e sigma^2) = 2.837 nats; Monte Carlo s.e. ~ 1/sqrt(40000) * std(log p) ~ 0.005
    mean_log_p = float(jnp.mean(eb.datasets.toy_log_prob("8gaussians", x)))
    expected = -(np.log(8) + np.log(2 * np.pi * np.e * (0.5 / 1.414) ** 2))
    assert abs(mean_log_p - expected) < 0.03


def test_exact_densities_integrate_to_one():
    for name in ("8gaussians", "checkerboard"):
        g = np.linspace(-5, 5, 801)
        xx, yy = np.meshgrid(g, g, indexing="ij")
        p = np.exp(np.asarray(eb.datasets.toy_log_prob(name, np.stack([xx, yy], -1))))
        total = p.sum() * (g[1] - g[0]) ** 2
        assert abs(total - 1.0) < 0.02, (name, total)


def test_checkerboard_samples_lie_where_density_is_positive():
    x = eb.datasets.toy("checkerboard", 2000, key=jax.random.key(2))
    assert np.all(np.isfinite(eb.datasets.toy_log_prob("checkerboard", x)))


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="name"):
        eb.datasets.toy("9gaussians", 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="name"):
        eb.datasets.toy_log_prob("moons", np.zeros((1, 2)))
    with pytest.raises(ValueError, match="n"):
        eb.datasets.toy("moons", 0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        eb.datasets.toy("moons", 10, key=0)
    assert eb.datasets.has_log_prob("8gaussians") and not eb.datasets.has_log_prob("moons")


def test_mode_fraction_of_8gaussians_sees_the_modes():
    # Data: P(||z|| < 2) for a 2-D standard normal is 1 - e^-2 = 0.8647 (the modes, 2.16 apart,
    # barely overlap); 20000 points give a standard error of 0.0024, tolerance ~4 s.e.
    x = eb.datasets.toy("8gaussians", 20_000, key=jax.random.key(0))
    assert abs(float(eb.datasets.toy_mode_fraction("8gaussians", x)) - (1 - np.exp(-2))) < 0.01
    # A ring of the modes' radius and the data's radial spread, without modes: 2 std = 0.71 is an
    # arc of +-0.25 rad around each of 8 centres, 64% of the circle at most, less off the radius.
    angle = jax.random.uniform(jax.random.key(1), (20_000,), maxval=2 * np.pi)
    radius = 4 / 1.414 + 0.354 * jax.random.normal(jax.random.key(2), (20_000,))
    ring = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], -1)
    assert float(eb.datasets.toy_mode_fraction("8gaussians", ring)) < 0.6
    with pytest.raises(ValueError, match="^name: 'moons' is not made of Gaussian modes"):
        eb.datasets.toy_mode_fraction("moons", x)
    with pytest.raises(ValueError, match="^x: expected 2-D points"):
        eb.datasets.toy_mode_fraction("8gaussians", x[:, :1])


@pytest.mark.slow
def test_toy_sample_metrics_see_the_modes_that_the_median_bandwidth_cannot():
    key = jax.random.key(0)
    test = eb.datasets.toy("8gaussians", 2000, key=key)
    good = eb.datasets.toy("8gaussians", 2000, key=jax.random.key(1))
    angle = jax.random.uniform(jax.random.key(2), (2000,), maxval=2 * np.pi)
    ring = 2.83 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)  # the modes' circle, no modes
    m_good = eb.datasets.toy_sample_metrics("8gaussians", good, test)
    m_ring = eb.datasets.toy_sample_metrics("8gaussians", ring, test)
    small = next(k for k in m_good if k.startswith("sample_mmd2_bw_"))
    assert small == "sample_mmd2_bw_0.2"  # a tenth of 8gaussians' per-axis std (2.0)
    assert m_ring[small] > 10 * max(m_good[small], 1e-4)
    # the data score 1 - exp(-2) = 0.865; a uniform ring through the modes about 0.66
    assert m_good["sample_mode_fraction"] > 0.8 > 0.75 > m_ring["sample_mode_fraction"]
    assert "sample_mode_fraction" not in eb.datasets.toy_sample_metrics("moons", good, test)
