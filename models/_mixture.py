"""A Gaussian-mixture energy with a known normaliser, and exact draws."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


class MixtureEnergy(eqx.Module):
    r"""The energy of a Gaussian mixture ``p(x) = sum_k pi_k N(x; mu_k, Sigma_k)``:

    .. math:: E(x) = -\log \sum_k \pi_k\,|P_k|^{1/2} \exp\bigl(-\tfrac12 (x-\mu_k)^T P_k (x-\mu_k)\bigr)
                     + \tfrac12 \textstyle\sum_k \pi_k \log|P_k|,

    with precisions ``P_k = Sigma_k^{-1}``, so that ``exp(-E) / Z = p`` with the known

    .. math:: \log Z = \tfrac d2 \log 2\pi - \tfrac12 \textstyle\sum_k \pi_k \log|P_k|,

    exposed as ``log_z``. The constant is chosen so that one component gives exactly
    ``GaussianEnergy``'s energy and ``log_z``. ``sample(key, n)`` draws exactly from
    ``p`` (for reverse AIS and tests).

    Arguments:
        means: component means, shape ``(K, d)``.
        stds: component standard deviations: a scalar (all components, all axes), shape
            ``(K,)`` (isotropic per component) or ``(K, d)`` (diagonal). Default 1.
        covariances: alternatively full covariances, shape ``(K, d, d)``.
        weights: mixture proportions ``pi_k`` (positive; normalised here), default equal.
    """

    means: Float[Array, "K d"]
    precision_cholesky: Float[Array, "K d d"]
    log_weights: Float[Array, " K"]

    def __init__(
        self,
        means: ArrayLike,
        stds: ArrayLike | None = None,
        *,
        covariances: ArrayLike | None = None,
        weights: ArrayLike | None = None,
    ):
        mu = np.asarray(means, dtype=np.float64)
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means: expected shape (num_components, d), got {mu.shape}")
        k, d = mu.shape
        if stds is not None and covariances is not None:
            raise ValueError("stds: give stds or covariances, not both")
        if covariances is not None:
            cov = np.asarray(covariances, dtype=np.float64)
            if cov.shape != (k, d, d):
                raise ValueError(f"covariances: expected shape ({k}, {d}, {d}), got {cov.shape}")
        else:
            s = np.asarray(1.0 if stds is None else stds, dtype=np.float64)
            if s.ndim == 0 or s.shape == (k,):
                s = np.broadcast_to(s.reshape(-1, 1) if s.ndim else s, (k, d))
            if s.shape != (k, d) or not np.all(np.isfinite(s)) or not np.all(s > 0):
                raise ValueError(f"stds: expected positive values of shape (), ({k},) or ({k}, {d}), got {np.shape(stds)}")
            cov = np.stack([np.diag(si**2) for si in s])
        try:
            chol = np.stack([np.linalg.cholesky(np.linalg.inv(0.5 * (c + c.T))) for c in cov])
        except np.linalg.LinAlgError as e:
            raise ValueError("covariances: each must be symmetric positive definite") from e
        w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (k,) or not np.all(np.isfinite(w)) or not np.all(w > 0):
            raise ValueError(f"weights: expected {k} positive numbers, got {weights!r}")
        self.means = jnp.asarray(mu, jnp.float32)
        self.precision_cholesky = jnp.asarray(chol, jnp.float32)
        self.log_weights = jnp.asarray(np.log(w / w.sum()), jnp.float32)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``):
        the means' shape (``K`` components in ``d`` dimensions); every value, precisions
        and weights included, comes from the file."""
        return dict(means=jax.ShapeDtypeStruct(self.means.shape, self.means.dtype))

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.means.shape[1],)

    @property
    def _half_log_det_precisions(self) -> Float[Array, " K"]:
        return jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.precision_cholesky, axis1=-2, axis2=-1))), -1)

    @property
    def _constant(self) -> Float[Array, ""]:
        return jnp.sum(jnp.exp(self.log_weights) * self._half_log_det_precisions)

    @property
    def log_z(self) -> Float[Array, ""]:
        d = self.means.shape[1]
        return 0.5 * d * math.log(2 * math.pi) - self._constant

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        # L_k^T (x - mu_k). (Not as the broadcast sum over L * (x - mu)[:, :, None]: under
        # jit(vmap) over >= 10^4 points jax 0.10.2's CPU backend miscompiled that form.)
        z = jnp.einsum("kij,ki->kj", self.precision_cholesky, x - self.means)
        log_terms = self.log_weights + self._half_log_det_precisions - 0.5 * jnp.sum(z**2, -1)
        return -jax.nn.logsumexp(log_terms) + self._constant

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """The normalised mixture log density ``log p(x) = -E(x) - log Z``."""
        return -self(x) - self.log_z

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Float[Array, "n d"]:
        """``num_samples`` exact draws: a component ``k ~ pi``, then ``mu_k + L_k^{-T} z``."""
        k_comp, k_z = jax.random.split(key)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=(num_samples,))
        z = jax.random.normal(k_z, (num_samples, self.means.shape[1]))
        chol = self.precision_cholesky[comp]
        offset = jax.vmap(lambda c, zi: jax.scipy.linalg.solve_triangular(c.T, zi, lower=False))(chol, z)
        return self.means[comp] + offset
