import re
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.models import GaussianEnergy, MLPEnergy


def test_grid_log_z_matches_gaussian_normaliser():
    g = GaussianEnergy(jnp.array([0.5, -0.3]), covariance=jnp.array([[0.8, 0.2], [0.2, 0.5]]))
    # The box holds > 1 - 1e-12 of the mass; midpoint rule error at h = 0.05 is ~1e-4 relative.
    np.testing.assert_allclose(eb.evaluate.grid_log_z(eb.EBM(g)), g.log_z, atol=2e-3)


def test_grid_log_z_1d():
    g = GaussianEnergy(jnp.array([0.0]), covariance=jnp.array([[0.3]]))
    np.testing.assert_allclose(eb.evaluate.grid_log_z(eb.EBM(g), resolution=400), g.log_z, atol=2e-3)


def test_grid_nll_of_true_density_is_its_entropy():
    # A model equal to the 8gaussians density (energy = -log p) has grid NLL = mean -log p(data).
    class TrueEnergy(eqx.Module):
        def __call__(self, x):
            return -eb.datasets.toy_log_prob("8gaussians", x)

    model = eb.EBM(TrueEnergy(), event_shape=(2,))
    x = eb.datasets.toy("8gaussians", 5000, key=jax.random.key(0))
    expected = -float(jnp.mean(eb.datasets.toy_log_prob("8gaussians", x)))
    np.testing.assert_allclose(eb.evaluate.grid_nll(model, x), expected, atol=5e-3)


def test_grid_log_prob_is_normalised():
    m = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    axes, log_p = eb.evaluate.grid_log_prob(m, resolution=50)
    cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
    np.testing.assert_allclose(jnp.exp(log_p).sum() * cell, 1.0, rtol=1e-4)


def test_grid_bad_input():
    m3 = eb.EBM(MLPEnergy(3, 8, 1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="model"):
        eb.evaluate.grid_log_z(m3)
    m2 = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="bounds"):
        eb.evaluate.grid_log_z(m2, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="resolution"):
        eb.evaluate.grid_log_z(m2, resolution=0)
    with pytest.raises(ValueError, match="data"):
        eb.evaluate.grid_nll(m2, np.zeros((4, 3), np.float32))


class _HalfNaN(eqx.Module):
    """NaN on the half plane x0 > 0.5, a Gaussian elsewhere."""

    def __call__(self, x):
        return jnp.where(x[0] > 0.5, jnp.nan, 0.5 * jnp.sum(x**2))


class _HalfPlane(eqx.Module):
    """A valid hard constraint: +inf on x0 < 0 (zero density), a Gaussian elsewhere."""

    def __call__(self, x):
        return jnp.where(x[0] < 0, jnp.inf, 0.5 * jnp.sum(x**2))


def test_grid_refuses_a_nan_energy_and_accepts_an_infinite_one():
    x = jax.random.normal(jax.random.key(0), (100, 2))
    with pytest.raises(ValueError, match=r"^model: the energy is NaN at \d+ of \d+ grid points"):
        eb.evaluate.grid_nll(eb.EBM(_HalfNaN(), event_shape=(2,)), x)
    with pytest.raises(ValueError, match=r"^model: the energy is NaN"):
        eb.evaluate.grid_log_z(eb.EBM(_HalfNaN(), event_shape=(2,)), bounds=(-5, 5))
    # +inf: half of a standard normal, log Z = log(2 pi / 2)
    got = float(eb.evaluate.grid_log_z(eb.EBM(_HalfPlane(), event_shape=(2,)), bounds=(-6, 6), resolution=400))
    np.testing.assert_allclose(got, np.log(np.pi), atol=2e-3)


# ---- issue 19, item 10: a model without an event shape ------------------------------------


class _Bowl(eqx.Module):
    """A custom energy that declares no event_shape."""

    def __call__(self, x):
        return 0.5 * jnp.sum(x**2)


def test_grid_says_how_to_declare_a_missing_event_shape():
    model = eb.EBM(_Bowl())
    x = jax.random.normal(jax.random.key(0), (50, 2))
    with pytest.raises(ValueError, match=r"^model: its event_shape is unknown .*EBM\(energy, event_shape=\(2,\)\)"):
        eb.evaluate.grid_nll(model, x)
    with pytest.raises(ValueError, match=r"^model: its event_shape is unknown .*event_shape=\(1,\) or \(2,\)"):
        eb.evaluate.grid_log_z(model)
    # declared as the message says, it works
    got = float(eb.evaluate.grid_log_z(eb.EBM(_Bowl(), event_shape=(2,)), bounds=(-8, 8)))
    np.testing.assert_allclose(got, np.log(2 * np.pi), atol=2e-3)


# ---- issue 19, item 8: a model whose mass no box holds -----------------------------------


def test_an_untrained_model_scored_on_the_data_box_on_purpose_gives_no_warning():
    # An untrained MLP energy (no base) is not integrable: its grid NLL grows without bound
    # as the box widens (4.9, 6.4, 8.2 nats for the box of 8gaussians data, twice and four
    # times as wide), so no box holds its mass and the only defined score is the density
    # truncated to a box. Asked for that, nothing is missing and nothing is warned.
    model = eb.EBM(MLPEnergy(2, 32, 2, key=jax.random.key(3)))
    x = eb.datasets.toy("8gaussians", 500, key=jax.random.key(0))
    with pytest.warns(RuntimeWarning, match=r"truncated=True") as record:
        default = float(eb.evaluate.grid_nll(model, x, resolution=60))
    message = str(record[0].message)
    assert "widen bounds" in message and "base" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        truncated = float(eb.evaluate.grid_nll(model, x, resolution=60, truncated=True))
        eb.evaluate.grid_log_z(model, resolution=20, truncated=True)
        eb.evaluate.grid_log_prob(model, resolution=20, truncated=True)
    assert truncated == default  # the same number, now asked for
    with pytest.raises(TypeError, match="^truncated: expected True or False"):
        eb.evaluate.grid_nll(model, x, truncated="yes")


# ---- issue 19, item 12: the memory check counts every temporary --------------------------


def _needed_gib(monkeypatch, fn, **kwargs) -> float:
    """The GiB the memory check says ``fn`` needs, read from its refusal under a tiny limit."""
    monkeypatch.setattr(eb.evaluate._grid, "_MAX_GIB", 1e-9)
    with pytest.raises(ValueError, match=r"^resolution: a \d+\^\d grid would need") as err:
        fn(**kwargs)
    return float(re.search(r"would need ([0-9.e+-]+) GiB", str(err.value)).group(1))


def test_grid_memory_check_counts_the_temporaries_not_only_the_coordinates(monkeypatch):
    # 300^2 points: their coordinates take 0.7 MB; evaluating an MLP 128x2 on them takes
    # far more (its activations, the values, the reductions). Under a 1 MiB limit the old
    # check, which counted coordinates only, let it run.
    model = eb.EBM(MLPEnergy(2, 128, 2, key=jax.random.key(0)))
    monkeypatch.setattr(eb.evaluate._grid, "_MAX_GIB", 1 / 1024)
    with pytest.raises(ValueError, match=r"^resolution: a 300\^2 grid would need .* GiB .*more than the 0.00097\d* GiB"):
        eb.evaluate.grid_log_z(model, resolution=300)


def test_grid_log_z_memory_does_not_grow_with_the_resolution(monkeypatch):
    # Compiled, not run: the grid is evaluated chunk by chunk, so log Z at resolution
    # 16,000 (2.6e8 points; the old code materialised 3 GB) needs what 1,000 needs, up to
    # a few bytes per chunk; the normalised grid itself (grid_log_prob) is the output and
    # needs its 1 GB, no more than twice.
    model = eb.EBM(MLPEnergy(2, 128, 2, key=jax.random.key(0)))
    small = _needed_gib(monkeypatch, eb.evaluate.grid_log_z, model=model, resolution=1000)
    large = _needed_gib(monkeypatch, eb.evaluate.grid_log_z, model=model, resolution=16_000)
    assert large < 0.25 and large < small + 0.01
    full = _needed_gib(monkeypatch, eb.evaluate.grid_log_prob, model=model, resolution=16_000)
    output = 16_000**2 * 4 / 2**30
    assert output <= full < 2 * output + large


def test_grid_points_counts_the_mesh_and_its_copy(monkeypatch):
    # grid_points returns the mesh: its d coordinate arrays and their stacked copy exist at
    # once, 2 * d * r^d numbers (300^2: 1.4 MB; the old check counted the 0.7 MB of the copy).
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    monkeypatch.setattr(eb.evaluate._grid, "_MAX_GIB", 1 / 1024)
    with pytest.raises(ValueError, match=r"^resolution: a 300\^2 grid of points would need 3\.6e\+05 values"):
        eb.evaluate.grid_points(model, resolution=300)
    points, cell = eb.evaluate.grid_points(model, resolution=200)
    assert points.shape == (40_000, 2) and cell == pytest.approx((10 / 200) ** 2, rel=1e-4)  # float32 axes
