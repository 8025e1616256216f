r"""Score matching: learn ``s_theta(x) = grad_x log p~_theta(x)`` without sampling the model.

All three objectives are free of the normaliser ``Z_theta`` because the score is
(Song & Kingma 2021, section 3). Write ``s = grad_x log p~`` (``EBM.score``) and
``J = grad_x s`` (the Hessian of ``log p~``: minus the Hessian of the energy when there is
no base density).

- ``ExactScoreMatching`` (Hyvarinen 2005): ``1/2 ||s(x)||^2 + tr J(x)``; ``D`` Jacobian-vector
  products per example. With ``hutchinson=True`` the trace is ``mean_k v_k^T J v_k`` over
  Rademacher probes: ``num_probes`` products.
- ``SlicedScoreMatching`` (Song et al. 2019): ``mean_k [v_k^T J v_k + 1/2 (v_k^T s)^2]``, the last
  term replaced by ``1/2 ||s||^2`` with variance reduction; ``num_projections`` products.
- ``DenoisingScoreMatching`` (Vincent 2011; several levels: Song & Ermon 2019):
  ``1/2 ||sigma s(x + sigma z) + z||^2`` with ``z ~ N(0, I)``; one gradient, no second order.

Every ``v^T J v`` is a forward-over-reverse product: one ``jax.linearize`` of the score
and one JVP per direction, so memory is linear in the dimension ``D``; only the exact
trace (``D`` directions, the ``D x D`` Jacobian) is quadratic. Exact and sliced SM are
consistent for ``p_data`` itself; DSM is consistent for the *smoothed* density
``p_data * N(0, sigma^2 I)`` (for Gaussian data and a Gaussian model it learns the
covariance ``Sigma + sigma^2 I``).
"""

from __future__ import annotations

import math
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractStrategy
from declebm._checks import _describe, check_choice, check_flag, check_positive
from declebm._ebm import EBM, check_energy

_PROJECTIONS = ("gaussian", "rademacher")
_Loss = tuple[Float[Array, ""], tuple[None, dict[str, Float[Array, ""]]]]


def _directions(key: PRNGKeyArray, kind: str, shape: tuple[int, ...], dtype) -> Array:
    """Random directions with ``E[v v^T] = I``: standard normal or Rademacher (+-1)."""
    if kind == "gaussian":
        return jax.random.normal(key, shape, dtype)
    return jax.random.rademacher(key, shape, dtype=dtype)


def _score_and_quadratic_forms(
    model, x: Float[Array, "*event"], directions: Float[Array, "k *event"]
) -> tuple[Float[Array, "*event"], Float[Array, " k"]]:
    r"""The score ``s(x)`` and ``v_k^T J(x) v_k`` for each direction ``v_k``, with
    ``J = grad_x s``: one linearisation of the score and one JVP per direction (never
    the Hessian itself unless the directions are the whole basis)."""
    s, jvp = jax.linearize(model.score, x)
    jv = jax.vmap(jvp)(directions)
    axes = tuple(range(1, directions.ndim))
    return s, jnp.sum(directions * jv, axis=axes)


def _sq_norm(x: Array) -> Array:
    """Squared norm of each example (over every axis but the first)."""
    return jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)


class ExactScoreMatching(AbstractStrategy):
    r"""Score matching (Hyvarinen 2005) with the exact Hessian trace:

    .. math:: L(\theta) = E_{x\sim p_d}\Bigl[\tfrac12\|\nabla_x \log\tilde p_\theta(x)\|^2
              + \mathrm{tr}\,\nabla_x^2 \log\tilde p_\theta(x)\Bigr]

    (Song & Kingma 2021, eq. 17). The trace is the sum of ``e_i^T J e_i`` over the ``D``
    basis vectors: ``D`` Jacobian-vector products of the score per example (the full
    ``D x D`` Jacobian), ``D`` times the time and memory of one — fine up to tens of
    dimensions (``benchmarks/bench_sliced_memory.py``).

    With ``hutchinson=True`` the trace is replaced by Hutchinson's unbiased estimator
    ``mean_k v_k^T J v_k`` over ``num_probes`` Rademacher probes (the minimum-variance
    choice), linear in ``D``; this is sliced score matching with variance reduction.

    Arguments:
        hutchinson: estimate the trace with random probes instead of computing it.
        num_probes: probes per example when ``hutchinson=True``.

    Metrics: ``score_sq_norm`` (mean ``||s||^2``) and ``hessian_trace`` (mean ``tr J``,
    the Laplacian of ``log p~``; at the optimum ``E[tr J] = -E[||s||^2]``).
    """

    hutchinson: bool = False
    num_probes: int = 1

    def __check_init__(self):
        check_flag(self.hutchinson, "hutchinson")
        check_positive(self.num_probes, "num_probes", integer=True)

    def loss(
        self, model: EBM, batch: Float[Array, "batch *event"], state: None, key: PRNGKeyArray
    ) -> _Loss:
        event = batch.shape[1:]
        n = batch.shape[0]
        if self.hutchinson:
            v, v_axis = _directions(key, "rademacher", (n, self.num_probes) + event, batch.dtype), 0
        else:  # the whole basis, shared by every example
            dim = math.prod(event)
            v, v_axis = jnp.eye(dim, dtype=batch.dtype).reshape((dim,) + event), None
        s, quad = jax.vmap(lambda x, d: _score_and_quadratic_forms(model, x, d), in_axes=(0, v_axis))(batch, v)
        trace = jnp.mean(quad, -1) if self.hutchinson else jnp.sum(quad, -1)
        sq = _sq_norm(s)
        loss = jnp.mean(0.5 * sq + trace)
        return loss, (state, {"score_sq_norm": jnp.mean(sq), "hessian_trace": jnp.mean(trace)})


class SlicedScoreMatching(AbstractStrategy):
    r"""Sliced score matching (Song, Garg, Shi & Ermon 2019): score matching along
    random projections ``v`` with ``E[v v^T] = I``,

    .. math:: L(\theta) = E_{x\sim p_d} E_v\Bigl[v^T \nabla_x\bigl(v^T s_\theta(x)\bigr)
              + \tfrac12 \bigl(v^T s_\theta(x)\bigr)^2\Bigr]

    and, with ``variance_reduction=True`` (SSM-VR), the second term replaced by its
    expectation over ``v``, ``1/2 ||s_theta(x)||^2``. Each ``v^T J v`` is one
    forward-over-reverse Jacobian-vector product, so memory and time are linear in the
    dimension: no Hessian is formed.

    Arguments:
        num_projections: projections per example (``M`` in the paper).
        variance_reduction: use the closed form of ``E_v (v^T s)^2 / 2``.
        projection: ``"gaussian"`` (``N(0, I)``) or ``"rademacher"`` (uniform on
            ``{-1, 1}^D``, lower variance of the trace term).

    Metrics: ``score_sq_norm`` (mean ``||s||^2``) and ``hessian_trace`` (the sliced
    estimate of the mean ``tr J``).
    """

    num_projections: int = 1
    variance_reduction: bool = True
    projection: str = "gaussian"

    def __check_init__(self):
        check_positive(self.num_projections, "num_projections", integer=True)
        check_flag(self.variance_reduction, "variance_reduction")
        check_choice(self.projection, "projection", _PROJECTIONS)

    def loss(
        self, model: EBM, batch: Float[Array, "batch *event"], state: None, key: PRNGKeyArray
    ) -> _Loss:
        n, event = batch.shape[0], batch.shape[1:]
        v = _directions(key, self.projection, (n, self.num_projections) + event, batch.dtype)
        s, quad = jax.vmap(lambda x, d: _score_and_quadratic_forms(model, x, d))(batch, v)
        trace = jnp.mean(quad, -1)
        sq = _sq_norm(s)
        if self.variance_reduction:
            second = 0.5 * sq
        else:
            axes = tuple(range(2, v.ndim))
            proj = jnp.sum(v * s[:, None], axis=axes)  # (n, M): v_k^T s
            second = 0.5 * jnp.mean(proj**2, -1)
        loss = jnp.mean(trace + second)
        return loss, (state, {"score_sq_norm": jnp.mean(sq), "hessian_trace": jnp.mean(trace)})


class DenoisingScoreMatching(AbstractStrategy):
    r"""Denoising score matching (Vincent 2011): match the score of the data smoothed
    by Gaussian noise. With ``x~ = x + sigma z``, ``z ~ N(0, I)``,

    .. math:: L(\theta) = E_{\sigma} E_{x, z}\Bigl[\tfrac{\lambda(\sigma)}{2}
              \bigl\| s_\theta(\tilde x, \sigma) + (\tilde x - x)/\sigma^2 \bigr\|^2\Bigr]
              = E\Bigl[\tfrac12 \|\sigma\, s_\theta(\tilde x, \sigma) + z\|^2\Bigr]

    with the NCSN weight ``lambda(sigma) = sigma^2`` (Song & Ermon 2019), which makes
    every level contribute ``O(1)``. The optimum is the score of
    ``p_d * N(0, sigma^2 I)``, not of ``p_d``: a known bias, small when ``sigma`` is.

    - ``DenoisingScoreMatching(sigma=0.1)``: one noise level; the energy is called as
      ``E(x)``.
    - ``DenoisingScoreMatching(sigmas=[1.0, 0.3, 0.1])``: several levels, one drawn
      uniformly per example (NCSN); the energy must take the level as a keyword,
      ``E(x, sigma=...)`` (e.g. ``models.NoiseConditionedMLPEnergy``). After training,
      evaluate the model at the smallest level.

    Arguments:
        sigma: the single noise standard deviation.
        sigmas: several noise standard deviations (for a noise-conditioned energy); one
            number is one level given to such an energy.
        noise_arg: the keyword under which the energy receives the level (``"sigma"``).

    Metric: ``score_sq_norm``, mean ``||sigma s(x~)||^2`` (at the optimum, for data with
    standard deviation ``tau`` per coordinate, ``D sigma^2 / (tau^2 + sigma^2)``).
    """

    sigmas: Float[Array, " levels"]
    conditional: bool = eqx.field(static=True)
    noise_arg: str = eqx.field(static=True)

    def __init__(
        self, sigma: float | None = None, *, sigmas: Sequence[float] | None = None, noise_arg: str = "sigma"
    ):
        if (sigma is None) == (sigmas is None):
            raise ValueError(
                "sigma, sigmas: give exactly one: sigma=0.1 for one noise level, or "
                "sigmas=[...] for several with an energy that takes the level as input"
            )
        if sigma is not None:
            levels = [check_positive(sigma, "sigma")]
        else:
            if isinstance(sigmas, (str, bytes, dict, set)) or not (hasattr(sigmas, "__len__") or np.ndim(sigmas) == 0):
                raise TypeError(f"sigmas: expected a non-empty sequence of positive numbers, got {_describe(sigmas)}")
            if np.ndim(sigmas) == 0:  # one level, for an energy that takes it: sigmas=0.05
                levels = [check_positive(sigmas, "sigmas")]
            elif np.ndim(sigmas) != 1 or len(sigmas) == 0:
                raise ValueError(
                    f"sigmas: expected a number or a non-empty 1-D sequence of positive numbers, got {_describe(sigmas)}"
                )
            else:
                levels = [check_positive(s, f"sigmas[{i}]") for i, s in enumerate(sigmas)]
        if not isinstance(noise_arg, str) or not noise_arg.isidentifier():
            raise ValueError(f"noise_arg: expected a keyword name such as 'sigma', got {noise_arg!r}")
        # An array, not a tuple of floats: the levels are traced values, so a sweep over
        # them reuses one compiled program.
        self.sigmas = jnp.asarray(levels, dtype=jnp.result_type(float))
        self.conditional = sigmas is not None
        self.noise_arg = noise_arg

    @property
    def sigma(self) -> Float[Array, ""] | None:
        """The single noise level, or ``None`` when several are used."""
        return None if self.conditional else self.sigmas[0]

    def init(
        self, model: EBM, data: Float[Array, "n *event"], key: PRNGKeyArray, *, batch_size: int | None = None
    ) -> None:
        if self.conditional:
            try:
                check_energy(model, data.shape[1:], **{self.noise_arg: jnp.ones((), data.dtype)})
            except TypeError as e:
                raise TypeError(
                    f"sigmas: with several noise levels the energy must take the level as a keyword, "
                    f"E(x, {self.noise_arg}=...) (e.g. declebm.models.NoiseConditionedMLPEnergy); "
                    f"calling it that way failed: {e}"
                ) from e
        return None

    def loss(
        self, model: EBM, batch: Float[Array, "batch *event"], state: None, key: PRNGKeyArray
    ) -> _Loss:
        n, event = batch.shape[0], batch.shape[1:]
        k_level, k_noise = jax.random.split(key)
        z = jax.random.normal(k_noise, batch.shape, batch.dtype)
        levels = self.sigmas.astype(batch.dtype)
        if self.conditional:
            sigma = levels[jax.random.randint(k_level, (n,), 0, levels.shape[0])]
            kwargs = {self.noise_arg: sigma}
        else:
            sigma = jnp.broadcast_to(levels[0], (n,))
            kwargs = {}
        sigma_b = sigma.reshape((n,) + (1,) * len(event))
        s = model.score_batch(batch + sigma_b * z, **kwargs)
        scaled = sigma_b * s
        loss = 0.5 * jnp.mean(_sq_norm(scaled + z))
        return loss, (state, {"score_sq_norm": jnp.mean(_sq_norm(scaled))})
