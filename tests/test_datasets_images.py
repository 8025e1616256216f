"""MNIST, Fashion-MNIST and CIFAR-10 from local files, written here by an independent writer
(struct, gzip, pickle), read back exactly; the pixel transforms and their log-determinants."""

import math
import os
import pickle
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb


@pytest.fixture
def idx_root(tmp_path, image_files):
    train, test = image_files.pixels(5, (28, 28), 0), image_files.pixels(3, (28, 28), 1)
    train[0, 0, :2] = (0, 255)  # the two ends of the range
    image_files.idx(tmp_path / "train-images-idx3-ubyte", train)
    image_files.idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 1, 4, 1, 5]))
    image_files.idx(tmp_path / "t10k-images-idx3-ubyte", test, gz=True)  # gzipped, as published
    image_files.idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([9, 2, 6]), gz=True)
    return tmp_path, train, test


@pytest.mark.parametrize("loader", [eb.datasets.mnist, eb.datasets.fashion_mnist])
def test_idx_files_read_back_exactly(idx_root, loader):
    root, train, test = idx_root
    x = loader(root, dequantise=False)
    assert x.dtype == jnp.float32 and x.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(x, (train[:, None].astype(np.float32) / np.float32(255)))
    assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 0, 0, 1]) == 1.0
    x, y = loader(root, split="test", dequantise=False, with_labels=True)
    np.testing.assert_array_equal(x, test[:, None].astype(np.float32) / np.float32(255))
    assert y.dtype == jnp.int32 and y.tolist() == [9, 2, 6]
    # dequantised: (pixel + u) / 256, so floor(256 x) gives back the pixel, the noise is in [0, 1)
    xd = np.asarray(loader(root, key=jax.random.key(0)))
    np.testing.assert_array_equal(np.floor(256 * xd.astype(np.float64)), train[:, None])
    u = 256 * xd.astype(np.float64) - train[:, None]
    assert u.min() >= 0.0 and u.max() < 1.0 and 0.45 < u.mean() < 0.55  # 3920 uniforms: mean's sd 0.005
    np.testing.assert_array_equal(xd, loader(root, key=jax.random.key(0)))  # same key, same noise
    assert not np.array_equal(xd, loader(root, key=jax.random.key(1)))


def test_idx_bad_input(idx_root, tmp_path_factory, image_files):
    root, _, _ = idx_root
    with pytest.raises(ValueError, match=r"^key: dequantise=True"):
        eb.datasets.mnist(root)
    with pytest.raises(ValueError, match="^split"):
        eb.datasets.mnist(root, split="valid", dequantise=False)
    with pytest.raises(TypeError, match="^root"):
        eb.datasets.mnist(3, dequantise=False)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*train-labels-idx1-ubyte.*lecun"):
        eb.datasets.mnist(empty, dequantise=False)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*zalandoresearch"):
        eb.datasets.fashion_mnist(empty, split="test", dequantise=False)
    # a labels file whose count differs from the images'
    image_files.idx(root / "train-labels-idx1-ubyte", np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"^root: .*3 labels.*5 images"):
        eb.datasets.mnist(root, dequantise=False)
    # a truncated file
    with open(root / "train-labels-idx1-ubyte", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + bytes([1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        eb.datasets.mnist(root, dequantise=False)
    with open(root / "train-images-idx3-ubyte", "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        eb.datasets.mnist(root, dequantise=False)


def test_cifar10_batches_read_back_exactly(tmp_path, image_files):
    folder = tmp_path / "cifar-10-batches-py"
    train, train_labels = image_files.cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], 2, protocol=2)
    test, test_labels = image_files.cifar(folder, ["test_batch"], 3, protocol=5)
    x, y = eb.datasets.cifar10(tmp_path, dequantise=False, with_labels=True)
    assert x.shape == (10, 3, 32, 32) and x.dtype == jnp.float32 and y.tolist() == train_labels
    expected = train.reshape(10, 3, 32, 32).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(x, expected)
    # the layout: row 0 of the data is the red plane, row-major
    np.testing.assert_array_equal(x[0, 0, 0, :], train[0, :32].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(x[0, 2, 31, 31], np.float32(train[0, 3071]) / np.float32(255))
    xt = np.asarray(eb.datasets.cifar10(tmp_path, split="test", key=jax.random.key(0)))
    assert xt.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(np.floor(256 * xt.astype(np.float64)), test.reshape(3, 3, 32, 32))


def test_cifar10_bad_input(tmp_path, image_files):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*cifar-10-batches-py.*cs.toronto.edu"):
        eb.datasets.cifar10(tmp_path, dequantise=False)
    folder = tmp_path / "cifar-10-batches-py"
    os.makedirs(folder)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match=r"^root: .*refusing to load"):  # nothing but arrays is unpickled
        eb.datasets.cifar10(tmp_path, split="test", dequantise=False)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, f)
    with pytest.raises(ValueError, match=r"^root: .*2 images but 1 labels"):
        eb.datasets.cifar10(tmp_path, split="test", dequantise=False)


def test_pixel_transforms_and_their_log_determinants():
    x = jax.random.uniform(jax.random.key(0), (4, 1, 3, 2))
    d = 6
    y, log_det = eb.datasets.to_symmetric_range(x)
    np.testing.assert_allclose(y, 2 * x - 1, rtol=1e-6)
    np.testing.assert_allclose(log_det, np.full(4, d * math.log(2)), rtol=1e-6)
    back, inv_det = eb.datasets.from_symmetric_range(y)
    np.testing.assert_allclose(back, x, atol=1e-6)
    np.testing.assert_allclose(inv_det, -log_det, rtol=1e-6)
    for alpha in (1e-6, 0.05):
        y, log_det = eb.datasets.logit_transform(x, alpha=alpha)
        # the log-determinant is the sum of log |dy_i/dx_i| (the map is elementwise), by autodiff
        slopes = jax.jit(jax.grad(lambda v: jnp.sum(eb.datasets.logit_transform(v, alpha=alpha)[0])))(x)
        np.testing.assert_allclose(log_det, np.log(np.asarray(slopes, np.float64)).reshape(4, -1).sum(1), rtol=1e-5)
        back, inv_det = eb.datasets.inverse_logit_transform(y, alpha=alpha)
        np.testing.assert_allclose(back, x, atol=1e-5)
        np.testing.assert_allclose(inv_det, -log_det, rtol=1e-4)
    with pytest.raises(ValueError, match=r"^x: to_symmetric_range expects images in \[0, 1\]"):
        eb.datasets.to_symmetric_range(x * 255)
    with pytest.raises(ValueError, match=r"^x: logit_transform expects images in \[0, 1\]"):
        eb.datasets.logit_transform(x - 0.5)
    with pytest.raises(ValueError, match="^alpha"):
        eb.datasets.logit_transform(x, alpha=0.5)
