"""Image metrics: the Fréchet distance against its closed form, the kernel distance's
unbiasedness, and the classifier trained on the digits for its features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import declebm as eb


def _closed_form_fd(mu1, s1, mu2, s2):
    # the textbook formula with scipy's general matrix square root of S1 S2 (an independent route)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)


def test_frechet_distance_matches_the_closed_form_on_gaussians():
    rng = np.random.default_rng(0)
    d, n = 3, 20_000
    a1, a2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a1 @ a1.T / d + 0.5 * np.eye(d), a2 @ a2.T / d + 0.5 * np.eye(d)
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.0, -0.5])
    x = rng.multivariate_normal(mu1, s1, size=n).astype(np.float32)
    y = rng.multivariate_normal(mu2, s2, size=n).astype(np.float32)
    truth = _closed_form_fd(mu1, s1, mu2, s2)
    estimate = eb.evaluate.frechet_distance(x, y)
    # Sampling error of the fitted statistics: the mean term's error 2 dmu . (e1 - e2) has sd
    # 2 |dmu| sqrt(lambda_max(S1 + S2) / n) <= 2 * 1.12 * sqrt(4 / 2e4) = 0.03 for these
    # covariances (eigenvalues < 2); the traces' errors sd sqrt(2 tr(S^2) / n) < 0.03 each.
    # 0.15 is about 3 sd of their sum.
    assert abs(estimate - truth) < 0.15, (estimate, truth)
    assert truth > 1.0  # the tolerance is small against the value
    # identical sets: 0 (up to rounding), also with more dimensions than examples (singular covariances)
    assert eb.evaluate.frechet_distance(x, x) < 1e-6
    wide = rng.normal(size=(10, 1, 8, 8)).astype(np.float32)
    assert 0.0 <= eb.evaluate.frechet_distance(wide, wide) < 1e-6
    other = rng.normal(size=(10, 1, 8, 8)).astype(np.float32)
    value = eb.evaluate.frechet_distance(wide, other)
    assert np.isfinite(value) and value > 1.0
    # features= maps a batch to vectors: the FD of the first coordinate is the 1-D formula
    first = lambda b: b[:, :1]  # noqa: E731
    v1 = np.var(x[:, 0], ddof=1, dtype=np.float64), np.var(y[:, 0], ddof=1, dtype=np.float64)
    one_d = (x[:, 0].mean(dtype=np.float64) - y[:, 0].mean(dtype=np.float64)) ** 2 + (np.sqrt(v1[0]) - np.sqrt(v1[1])) ** 2
    np.testing.assert_allclose(eb.evaluate.frechet_distance(x, y, features=first), one_d, rtol=1e-6)


def test_image_metrics_bad_input():
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="^reference"):
        eb.evaluate.frechet_distance(x, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="^samples"):
        eb.evaluate.frechet_distance(x[:1], x)
    with pytest.raises(TypeError, match="^features"):
        eb.evaluate.frechet_distance(x, x, features="inception")
    with pytest.raises(ValueError, match="^features"):
        eb.evaluate.frechet_distance(x, x, features=lambda b: b.sum())
    with pytest.raises(TypeError, match="^key"):
        eb.evaluate.kernel_distance(x, x, key=0)
    with pytest.raises(ValueError, match="^num_subsets"):
        eb.evaluate.kernel_distance(x, x, num_subsets=0, key=jax.random.key(0))


def _cubic(a, b):
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def test_kernel_distance_is_unbiased_and_sees_a_shift():
    rng = np.random.default_rng(1)
    d, n, reps = 8, 100, 30
    key = jax.random.key(0)
    unbiased, biased = [], []
    for r in range(reps):
        x = rng.normal(size=(n, d)).astype(np.float32)
        y = rng.normal(size=(n, d)).astype(np.float32)
        res = eb.evaluate.kernel_distance(x, y, num_subsets=1, subset_size=n, key=jax.random.fold_in(key, r))
        assert res.subset_size == n and res.num_subsets == 1
        unbiased.append(res.mean)
        xx, yy = x.astype(np.float64), y.astype(np.float64)
        # a subset of all n examples is the whole set: the value is the full unbiased MMD^2
        kxx, kyy, kxy = _cubic(xx, xx), _cubic(yy, yy), _cubic(xx, yy)
        full = (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
        np.testing.assert_allclose(res.mean, full, rtol=1e-3, atol=1e-5)
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())  # the V-statistic, diagonals included
    unbiased, biased = np.array(unbiased), np.array(biased)
    # 30 independent estimates: their mean has standard error sd / sqrt(30); unbiased means within 3 of 0 ...
    se = unbiased.std(ddof=1) / np.sqrt(reps)
    assert abs(unbiased.mean()) < 3 * se, (unbiased.mean(), se)
    # ... which the biased estimator (E = (E k(x,x) - E k(x,y')) 2/n > 0) fails: the test can tell them apart
    assert biased.mean() > 3 * biased.std(ddof=1) / np.sqrt(reps)
    # a shifted distribution: clearly positive, the subsets' spread reported
    x = rng.normal(size=(300, d)).astype(np.float32)
    shifted = eb.evaluate.kernel_distance(x, rng.normal(size=(300, d)).astype(np.float32) + 0.5, num_subsets=20,
                                          subset_size=100, key=key)
    assert shifted.mean > 5 * shifted.std / np.sqrt(20) and shifted.std > 0


@pytest.mark.slow
def test_classifier_features_on_digits():
    # a narrower, shallower classifier than the default, 100 steps at a larger learning rate:
    # 0.92 held-out accuracy, 0.95 on the test split (the suite compiles at XLA's level 0, where
    # 300 steps of channels (8, 16, 16) at 3e-3 took 27 s)
    train, test, y_train, y_test = eb.datasets.digits(key=jax.random.key(0), flatten=False, with_labels=True)
    classifier = eb.evaluate.classifier_features(train, y_train, key=jax.random.key(1), channels=(8, 16),
                                                 feature_size=32, num_steps=100, learning_rate=1e-2)
    assert classifier.accuracy > 0.9  # held-out part of train
    probabilities = classifier.probabilities(test)
    assert float(jnp.mean(jnp.argmax(probabilities, -1) == y_test)) > 0.9  # the test split
    features = classifier(test[:, None])
    assert features.shape == (test.shape[0], 32)
    # FD with the classifier's features: held-out digits are far closer to the training digits than noise is
    held_out = eb.evaluate.frechet_distance(test, train, features=classifier)
    noise = eb.evaluate.frechet_distance(jax.random.uniform(jax.random.key(2), test.shape), train, features=classifier)
    assert held_out < 0.2 * noise
    with pytest.raises(ValueError, match="^labels"):
        eb.evaluate.classifier_features(train, y_train[:5], key=jax.random.key(1))
    with pytest.raises(ValueError, match="^x"):
        classifier(jnp.zeros((2, 3, 8, 8)))
