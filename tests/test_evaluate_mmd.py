"""Squared MMD: unbiased, zero for equal distributions, positive for different ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb

from declebm.evaluate import median_bandwidth, mmd


def _closed_form(shift_sq, h, d=2):
    # x ~ N(0, I), y ~ N(mu, I), k = exp(-|a-b|^2 / (2 h^2)):
    # E k(x, x') = E k(y, y') = (h^2 / (h^2 + 2))^{d/2}, E k(x, y) = that * exp(-|mu|^2 / (2 (h^2 + 2))).
    c = (h * h / (h * h + 2.0)) ** (d / 2)
    return 2.0 * c * (1.0 - np.exp(-shift_sq / (2.0 * (h * h + 2.0))))


def _pairs(shift, seeds, n=500):
    out = []
    for s in seeds:
        kx, ky = jax.random.split(jax.random.key(s))
        out.append((jax.random.normal(kx, (n, 2)), jax.random.normal(ky, (n, 2)) + jnp.asarray(shift)))
    return out


def test_unbiased_against_the_closed_form():
    f = jax.jit(lambda a, b: mmd(a, b, bandwidth=1.0))
    seeds = range(20)
    same = np.array([f(x, y) for x, y in _pairs([0.0, 0.0], seeds)])
    shifted = np.array([f(x, y) for x, y in _pairs([0.3, 0.0], seeds)])
    # Per-estimate sd at n = 500 (measured over 30 seeds): 0.0014 (same) and 0.0053 (shift
    # 0.3). The mean of 20 estimates has s.e. 0.0003 / 0.0012; we allow 3.5 s.e.
    assert abs(same.mean() - 0.0) < 3.5 * 0.0014 / np.sqrt(20)
    assert abs(shifted.mean() - _closed_form(0.09, 1.0)) < 3.5 * 0.0053 / np.sqrt(20)
    # The unbiased estimator goes negative for equal distributions (a biased V-statistic would not).
    assert (same < 0).any()


def test_small_for_the_same_distribution_large_for_different_ones():
    (x, y), = _pairs([0.0, 0.0], [7])
    (_, z), = _pairs([1.0, 0.0], [8])
    # Same distribution: sd 0.0014 at this size, so 0.007 is 5 sd. Shift 1 (median
    # bandwidth ~1.7): MMD^2 ~ 0.08, sd ~ 0.006, far above 0.03.
    assert abs(float(mmd(x, y))) < 0.007
    assert float(mmd(x, z)) > 0.03
    # Fixed bandwidth 1: closed form 0.102.
    np.testing.assert_allclose(float(mmd(x, z, bandwidth=1.0)), _closed_form(1.0, 1.0), atol=0.02)


@pytest.mark.slow
def test_median_heuristic_and_mixture_kernel():
    x = jax.random.normal(jax.random.key(0), (1000, 2))
    # |x - x'| for x, x' ~ N(0, I_2) is sqrt(2) times a Rayleigh(1) variable: median
    # sqrt(2) * sqrt(2 ln 2) = 1.665. On 1000 points (~5e5 pairs, correlated) within 3%.
    np.testing.assert_allclose(float(median_bandwidth(x)), np.sqrt(4 * np.log(2)), rtol=0.03)
    (a, b), = _pairs([0.5, 0.0], [3])
    mix = mmd(a, b, bandwidth=[0.5, 2.0])
    np.testing.assert_allclose(mix, 0.5 * (mmd(a, b, bandwidth=0.5) + mmd(a, b, bandwidth=2.0)), rtol=1e-5)
    # Jit-friendly, including the default bandwidth; examples of any (common) shape are flattened.
    np.testing.assert_allclose(jax.jit(mmd)(a, b), mmd(a, b), rtol=1e-5)
    np.testing.assert_allclose(mmd(a.reshape(-1, 2, 1), b.reshape(-1, 2, 1)), mmd(a, b), rtol=1e-6)


@pytest.mark.parametrize("case", ["normal", "ties", "mostly_equal", "all_equal", "tiny", "wide"])
def test_median_bandwidth_is_the_median_of_the_distinct_pairs_distances(case):
    # numpy's median of every pair's distance (i != j), computed independently, with the
    # fallbacks: the median of the non-zero distances when most pairs coincide, 1 when all do
    rng = np.random.default_rng(0)
    x = {"normal": rng.normal(size=(300, 2)), "ties": rng.integers(0, 3, size=(101, 2)).astype(float),
         "mostly_equal": np.r_[np.zeros((40, 2)), rng.normal(size=(5, 2))], "all_equal": np.ones((30, 3)),
         "tiny": 1e-3 * rng.normal(size=(50, 3)), "wide": 1e15 * rng.normal(size=(64, 4))}[case].astype(np.float32)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))[~np.eye(len(x), dtype=bool)]
    expected = np.median(d) if np.median(d) > 0 else (np.median(d[d > 0]) if np.any(d > 0) else 1.0)
    np.testing.assert_allclose(float(median_bandwidth(x)), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((10, 2)), np.zeros((10, 3))), {}, "y"),
        ((np.zeros((1, 2)), np.zeros((10, 2))), {}, "x"),
        ((np.zeros((10, 2), np.int32), np.zeros((10, 2))), {}, "x"),
        ((np.zeros((10, 2)), np.zeros((10, 2))), {"bandwidth": 0.0}, "bandwidth"),
        ((np.zeros((10, 2)), np.zeros((10, 2))), {"bandwidth": [1.0, -1.0]}, "bandwidth"),
        # examples of different shapes, even of the same size, are different things
        ((np.zeros((10, 2)), np.zeros((10, 1, 2))), {}, "y"),
        ((np.full((10, 2), np.nan), np.zeros((10, 2))), {}, "x"),
        ((np.zeros((6, 0)), np.zeros((6, 0))), {}, "x"),
        ((np.zeros((10, 2)), np.zeros((10, 2))), {"bandwidth": "1"}, "bandwidth"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mmd(*args, **kwargs)


def test_constant_samples_give_a_number():
    # Constant samples made the median heuristic 0 and the MMD NaN; the same constant is
    # MMD 0 exactly, two different constants a positive MMD.
    same = mmd(np.ones((10, 2), np.float32), np.ones((12, 2), np.float32))
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    apart = mmd(np.zeros((10, 2), np.float32), np.ones((12, 2), np.float32))
    assert np.isfinite(float(apart)) and float(apart) > 0.1


def test_mmd_is_finite_and_scale_free_for_huge_values_and_tiny_bandwidths():
    # Squares of |x| > ~1e19 overflow float32 (inf - inf = NaN in the distances), and
    # 1 / (2 h^2) overflows for h < ~1e-19: the scaled form gives the same value as unit scale.
    x = jax.random.normal(jax.random.key(0), (40, 3))
    y = jax.random.normal(jax.random.key(1), (40, 3)) + 0.5
    ref = float(eb.evaluate.mmd(x, y, bandwidth=1.0))
    for s in (1e20, 1e30, 1e-30):
        got = float(eb.evaluate.mmd(x * s, y * s, bandwidth=s))
        assert np.isfinite(got) and abs(got - ref) < 1e-5 * max(1.0, abs(ref)) + 1e-6, (s, got, ref)
    assert np.isfinite(float(eb.evaluate.mmd(x * 1e20, y * 1e20)))  # median bandwidth too
    np.testing.assert_allclose(eb.evaluate.median_bandwidth(x * 1e20), eb.evaluate.median_bandwidth(x) * 1e20,
                               rtol=1e-5)
    # a bandwidth far below every distance: the kernel vanishes between distinct points
    assert float(eb.evaluate.mmd(x, y, bandwidth=1e-25)) == 0.0
