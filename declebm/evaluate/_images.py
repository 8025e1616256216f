r"""Image sample metrics: the Fréchet distance and the kernel distance between feature
statistics of samples and of reference images, and a small classifier trained on the data
whose penultimate layer gives the features.

With Inception-v3 pool features these are FID (Heusel et al. 2017) and KID (Bińkowski et
al. 2018); declebm ships no Inception weights, so name the numbers after the features
used: "FD with a classifier trained on the data", "FD on pixels". Users with Inception
weights pass their own ``features=``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._checks import _describe, check_array, check_callable, check_key, check_number
from .._conv2d import conv2d
from ._mmd import unbiased_mmd2

FeatureMap = Callable[[Array], Array]


def _features(x, name: str, features: FeatureMap | None, min_n: int) -> np.ndarray:
    arr = check_array(x, name)
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected a batch of examples (n, ...), got shape {tuple(arr.shape)}")
    if arr.shape[0] < min_n:
        raise ValueError(f"{name}: expected at least {min_n} examples, got {arr.shape[0]}")
    if features is None:
        out = arr.reshape(arr.shape[0], -1)
    else:
        out = jnp.asarray(features(arr))
        if out.ndim != 2 or out.shape[0] != arr.shape[0]:
            raise ValueError(
                f"features: expected a function mapping a batch (n, ...) to feature vectors (n, d), got shape "
                f"{tuple(out.shape)} for {name} of shape {tuple(arr.shape)}"
            )
    out = np.asarray(out, np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: its features contain {int((~np.isfinite(out)).sum())} NaN or infinite values")
    return out


def _pair(samples, reference, features, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    if features is not None:
        check_callable(features, "features", "a function mapping a batch of images to feature vectors (n, d)")
    a = _features(samples, "samples", features, min_n)
    b = _features(reference, "reference", features, min_n)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"reference: its feature vectors have {b.shape[1]} numbers, the samples' {a.shape[1]}; "
            f"give images of the same shape"
        )
    return a, b


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix, by ``eigh``
    (eigenvalues below 0, rounding errors, set to 0)."""
    values, vectors = np.linalg.eigh(s)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
    samples: Float[ArrayLike, "n ..."],
    reference: Float[ArrayLike, "m ..."],
    *,
    features: FeatureMap | None = None,
) -> float:
    r"""The Fréchet (2-Wasserstein) distance between Gaussians fitted to the features of
    ``samples`` and of ``reference`` (Dowson & Landau 1982; FID, Heusel et al. 2017, with
    Inception features):

    .. math:: \mathrm{FD} = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr} \Sigma_1
              + \operatorname{tr} \Sigma_2
              - 2 \operatorname{tr}\bigl(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}\bigr)^{1/2}

    (``tr (S1 S2)^{1/2}`` as FID code writes it equals the last trace). Computed in float64
    with symmetric square roots by ``eigh`` (``S1^{1/2}``, then the eigenvalues of the
    symmetric PSD ``S1^{1/2} S2 S1^{1/2}``), which stays real and finite for singular
    covariances (more dimensions than examples, constant pixels), where ``scipy.linalg.sqrtm``
    of the non-symmetric ``S1 S2`` returns complex parts. Covariances are the unbiased
    ones (``n - 1``).

    The estimate is biased upwards by the sampling error of the fitted statistics (of
    order ``d / n``): compare figures computed with the same numbers of examples.

    Arguments:
        samples: ``(n, ...)``, at least 2.
        reference: ``(m, ...)``, at least 2, of the samples' example shape.
        features: ``None`` (the flattened pixels: "FD on pixels"), or a function mapping a
            batch to feature vectors ``(n, d)``, e.g. ``classifier_features(...)``.

    Returns:
        The distance, a float (in squared feature units).
    """
    a, b = _pair(samples, reference, features, 2)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2.0
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)))
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)
    return max(value, 0.0)


class KernelDistance(NamedTuple):
    """``kernel_distance``'s result: the mean and standard deviation of the unbiased MMD^2
    over ``num_subsets`` subsets of ``subset_size`` examples of each set."""

    mean: float
    std: float
    num_subsets: int
    subset_size: int


def _cubic_kernel(a: Array, b: Array) -> Array:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


@eqx.filter_jit
def _subset_mmds(a: Array, b: Array, subset_size: int, num_subsets: int, key: PRNGKeyArray) -> Array:
    def one(k):
        ka, kb = jax.random.split(k)
        x = a[jax.random.choice(ka, a.shape[0], (subset_size,), replace=False)]
        y = b[jax.random.choice(kb, b.shape[0], (subset_size,), replace=False)]
        return unbiased_mmd2(_cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y))

    return jax.lax.map(one, jax.random.split(key, num_subsets))


def kernel_distance(
    samples: Float[ArrayLike, "n ..."],
    reference: Float[ArrayLike, "m ..."],
    *,
    features: FeatureMap | None = None,
    num_subsets: int = 100,
    subset_size: int = 1000,
    key: PRNGKeyArray,
) -> KernelDistance:
    r"""The kernel distance of Bińkowski et al. (2018, "Demystifying MMD GANs"; KID with
    Inception features): the unbiased MMD^2 with the cubic polynomial kernel

    .. math:: k(x, y) = \bigl(x \cdot y / d + 1\bigr)^3

    (``d`` the feature dimension) between features of ``samples`` and ``reference``,
    averaged over ``num_subsets`` random subsets of ``min(subset_size, n, m)`` examples of
    each (drawn without replacement within a subset, from ``key``), as their code does.
    Unlike the Fréchet distance it is unbiased: its expectation is 0 when both sets come
    from one distribution, so a mean within a few ``std / sqrt(num_subsets)`` of 0 (it may
    be negative) says the features cannot tell them apart; ``std`` is the spread of one
    subset's estimate. The kernel matrices are computed in float32 on the device.

    Arguments:
        samples, reference: ``(n, ...)`` and ``(m, ...)``, at least 2 each.
        features: as ``frechet_distance``.
        num_subsets: the number of subsets.
        subset_size: examples per subset (at most ``min(n, m)`` are used).
        key: a ``jax.random.key`` for the subsets.
    """
    check_key(key)
    num_subsets = check_number(num_subsets, "num_subsets", integer=True, low=1)
    subset_size = check_number(subset_size, "subset_size", integer=True, low=2)
    a, b = _pair(samples, reference, features, 2)
    size = int(min(subset_size, a.shape[0], b.shape[0]))
    values = np.asarray(_subset_mmds(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), size, num_subsets, key),
                        np.float64)
    return KernelDistance(float(values.mean()), float(values.std(ddof=1)) if num_subsets > 1 else 0.0, num_subsets, size)


# ---- a classifier trained on the data, for its features ----------------------------------


class ClassifierFeatures(eqx.Module):
    r"""A small convolutional classifier, trained by ``classifier_features``; called on a
    batch ``(n, C, H, W)`` it returns the penultimate layer's features ``(n, feature_size)``.

    Network: 3x3 convolutions to ``channels`` (the first stride 1, the others stride 2,
    padding 1) with ReLUs, the flattened map, a dense layer to ``feature_size`` with a ReLU
    (the features), and a dense layer to the class logits. ``accuracy`` is its accuracy on
    the held-out part of the training data, measured by ``classifier_features``.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    hidden: eqx.nn.Linear
    output: eqx.nn.Linear
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    accuracy: float = eqx.field(static=True)

    def _one(self, x: Float[Array, "c h w"]) -> tuple[Array, Array]:
        # conv2d (declebm.models.conv2d): on CPU patches times a matrix, as XLA:CPU runs lax
        # convolutions slowly inside loops such as the training scan (CIFAR-10's 32x32x3, 20
        # training steps: 16 s with lax.conv, 7 s with conv2d; 125 s and 5 s at LLVM level 0)
        h = jnp.transpose(x, (1, 2, 0))
        for conv in self.convs:
            kernel = jnp.transpose(conv.weight, (2, 3, 1, 0))  # OIHW -> HWIO, channel-last inside
            h = jax.nn.relu(conv2d(h, kernel, stride=conv.stride, padding=conv.padding) + conv.bias.reshape(-1))
        feats = jax.nn.relu(self.hidden(jnp.transpose(h, (2, 0, 1)).reshape(-1)))
        return feats, self.output(feats)

    def _check(self, x) -> Array:
        x = jnp.asarray(x)
        if x.ndim == 3 and self.image_shape[0] == 1 and tuple(x.shape[1:]) == self.image_shape[1:]:
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x: expected a batch of images (n, {', '.join(map(str, self.image_shape))}), got shape "
                             f"{tuple(x.shape)}")
        return x

    def __call__(self, x: Float[Array, "n c h w"]) -> Float[Array, "n f"]:
        """The penultimate-layer features of a batch of images."""
        return jax.vmap(lambda v: self._one(v)[0])(self._check(x))

    def logits(self, x: Float[Array, "n c h w"]) -> Float[Array, "n k"]:
        """The class logits of a batch of images."""
        return jax.vmap(lambda v: self._one(v)[1])(self._check(x))

    def probabilities(self, x: Float[Array, "n c h w"]) -> Float[Array, "n k"]:
        """The class probabilities (softmax of the logits) of a batch of images."""
        return jax.nn.softmax(self.logits(x), axis=-1)


@eqx.filter_jit
def _train(net, opt_state, optimizer, images, labels, key, num_steps: int, batch_size: int):
    def loss(net, x, y):
        logits = jax.vmap(lambda v: net._one(v)[1])(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(carry, k):
        net, opt_state = carry
        idx = jax.random.randint(k, (batch_size,), 0, images.shape[0])
        grads = eqx.filter_grad(loss)(net, images[idx], labels[idx])
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(net, eqx.is_array))
        return (eqx.apply_updates(net, updates), opt_state), None

    (net, opt_state), _ = jax.lax.scan(step, (net, opt_state), jax.random.split(key, num_steps))
    return net


def classifier_features(
    train: Float[ArrayLike, "n c h w"],
    labels: Int[ArrayLike, " n"],
    *,
    key: PRNGKeyArray,
    channels: tuple[int, ...] = (16, 32, 32),
    feature_size: int = 64,
    num_steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    held_out_fraction: float = 0.1,
) -> ClassifierFeatures:
    """Train a small convolutional classifier on labelled images and return it as a feature
    map: ``classifier_features(train, labels, key=key)(images)`` gives the penultimate-layer
    features ``(n, feature_size)`` to pass as ``features=`` to ``frechet_distance`` and
    ``kernel_distance``. Report those numbers as "FD (KD) with a classifier trained on the
    data", not FID: the features are not Inception's.

    ``num_steps`` Adam steps (``learning_rate``) on batches of ``batch_size`` drawn with
    replacement from all but a random ``held_out_fraction`` of the images, minimising the
    cross-entropy; the accuracy on the held-out part is recorded as ``.accuracy`` (about 0.95
    on the 8x8 digits with the defaults). The classifier also gives ``.logits`` and
    ``.probabilities`` (how sure it is of a sample's class).

    Arguments:
        train: images ``(n, C, H, W)`` (``(n, H, W)`` grey images get a channel axis).
        labels: integer classes ``(n,)``, 0..K-1.
        key: a ``jax.random.key`` (split, initial weights, batches).
        channels: output channels of the convolutions (the first stride 1, then stride 2).
        feature_size: the width of the penultimate layer.
        num_steps, batch_size, learning_rate: the training run.
        held_out_fraction: the part of the images kept out of training to measure the accuracy.
    """
    check_key(key)
    images = check_array(train, "train")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"train: expected images (n, C, H, W) or grey images (n, H, W), got shape {tuple(images.shape)}")
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels: expected integer classes of shape (n,), got {_describe(labels)}")
    if y.shape[0] != images.shape[0]:
        raise ValueError(f"labels: {y.shape[0]} labels for {images.shape[0]} images; give one label per image")
    if y.min() < 0:
        raise ValueError(f"labels: expected classes 0..K-1, got a label {int(y.min())}")
    num_classes = int(y.max()) + 1
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels: expected a non-empty sequence of positive integers, got {channels!r}")
    feature_size = check_number(feature_size, "feature_size", integer=True, low=1)
    num_steps = check_number(num_steps, "num_steps", integer=True, low=1)
    batch_size = check_number(batch_size, "batch_size", integer=True, low=1)
    learning_rate = check_number(learning_rate, "learning_rate", low=0.0, low_open=True)
    held_out_fraction = check_number(held_out_fraction, "held_out_fraction", low=0.0, high=1.0, high_open=True)
    n_held = int(round(images.shape[0] * held_out_fraction))
    if images.shape[0] - n_held < 1:
        raise ValueError(f"held_out_fraction: {held_out_fraction} of {images.shape[0]} images leaves none to train on")

    k_split, k_init, k_train = jax.random.split(key, 3)
    order = jax.random.permutation(k_split, images.shape[0])
    held, fit_idx = order[:n_held], order[n_held:]
    c, h, w = images.shape[1:]
    keys = jax.random.split(k_init, len(channels) + 2)
    convs, c_in = [], c
    for i, (c_out, k) in enumerate(zip(channels, keys)):
        stride = 1 if i == 0 else 2
        convs.append(eqx.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, key=k))
        h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
        c_in = c_out
    net = ClassifierFeatures(
        convs=tuple(convs),
        hidden=eqx.nn.Linear(c_in * h * w, feature_size, key=keys[-2]),
        output=eqx.nn.Linear(feature_size, num_classes, key=keys[-1]),
        image_shape=tuple(int(s) for s in images.shape[1:]),
        accuracy=math.nan,
    )
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(eqx.filter(net, eqx.is_array))
    y = jnp.asarray(y, jnp.int32)
    net = _train(net, opt_state, optimizer, images[fit_idx], y[fit_idx], k_train, num_steps, batch_size)
    accuracy = math.nan
    if n_held:
        predicted = jnp.argmax(net.logits(images[held]), axis=-1)
        accuracy = float(jnp.mean(predicted == y[held]))
    return dataclasses.replace(net, accuracy=accuracy)
