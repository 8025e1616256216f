import jax
import numpy as np
import pytest

import declebm as eb


def test_digits_split_and_dequantisation():
    train, test = eb.datasets.digits(key=jax.random.key(0))
    assert train.shape == (1438, 64) and test.shape == (359, 64)
    x = np.asarray(train)
    assert x.min() >= 0.0 and x.max() < 1.0
    # (k + u)/17 with integer k: 17 x has fractional parts spread over [0, 1)
    frac = (17 * x) % 1.0
    assert 0.4 < frac.mean() < 0.6
    images, _ = eb.datasets.digits(key=jax.random.key(0), flatten=False)
    assert images.shape[1:] == (8, 8)


def test_digits_labels_follow_the_same_split():
    from sklearn.datasets import load_digits

    key = jax.random.key(3)
    train, test = eb.datasets.digits(key=key)
    train2, test2, y_train, y_test = eb.datasets.digits(key=key, with_labels=True)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    # each image's integer grey levels (floor of 17 x) are the bundled image of its label
    bundled = load_digits()
    lookup = {img.astype(np.int64).tobytes(): label for img, label in zip(bundled.data, bundled.target)}
    ints = np.floor(17 * np.asarray(test)).astype(np.int64)
    matched = [lookup.get(row.tobytes()) for row in ints]
    assert sum(m is not None for m in matched) > 350  # duplicates of an image across labels are rare
    assert all(m == y for m, y in zip(matched, np.asarray(y_test)) if m is not None)
    with pytest.raises(TypeError, match="with_labels"):
        eb.datasets.digits(key=key, with_labels="yes")


def test_load_npy_and_npz(tmp_path):
    a = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(eb.datasets.load(tmp_path / "a.npy"), a)
    np.savez(tmp_path / "b.npz", x=a, y=a[:5])
    np.testing.assert_array_equal(eb.datasets.load(tmp_path / "b.npz", name="y"), a[:5])
    with pytest.raises(ValueError, match="name"):
        eb.datasets.load(tmp_path / "b.npz")
    with pytest.raises(FileNotFoundError, match="path"):
        eb.datasets.load(tmp_path / "missing.npy")
    np.save(tmp_path / "bad.npy", np.array([1.0, np.nan], np.float32)[:, None])
    with pytest.raises(ValueError, match="NaN"):
        eb.datasets.load(tmp_path / "bad.npy")
