"""Noise-level-conditioned energies, for multi-level denoising score matching and
diffusion recovery likelihood."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from declebm._checks import check_number

from ._mlp import check_mlp_sizes, mlp_activation


class NoiseConditionedMLPEnergy(eqx.Module):
    r"""An energy that takes the noise level as input, NCSN style:

    .. math:: E(x, \sigma) = \mathrm{MLP}([x, \log\sigma]) / \sigma

    The log level is appended to the input; dividing by ``sigma`` makes the score
    ``-grad_x E`` scale as ``1/sigma``, as the score of data smoothed at level ``sigma``
    does (Song & Ermon 2020, technique 3), so one network serves every level.

    Called as ``energy(x, sigma=s)`` with a scalar ``s > 0`` for one example (the
    framework maps a per-example array of levels over the batch). Without ``sigma`` it
    uses ``default_sigma``: that is the density that ``fit``'s checks, grid evaluation
    and samplers see when no level is passed, so set it to the smallest level trained on.

    Arguments:
        in_size: dimension of one example; declares ``event_shape = (in_size,)``.
        width, depth: hidden units per layer and number of hidden layers.
        activation: the nonlinearity (smooth, so scores and their Jacobians exist).
        default_sigma: the level used when none is given.
        key: a ``jax.random.key`` for the initial weights.
    """

    mlp: eqx.nn.MLP
    in_size: int = eqx.field(static=True)
    default_sigma: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        width: int = 128,
        depth: int = 2,
        activation: Callable[[Array], Array] = jax.nn.silu,
        *,
        default_sigma: float = 0.1,
        key: PRNGKeyArray,
    ):
        check_mlp_sizes("NoiseConditionedMLPEnergy", in_size, width, depth, activation, key)
        self.in_size = in_size
        self.default_sigma = check_number(default_sigma, "default_sigma", low=0.0, low_open=True)
        self.mlp = eqx.nn.MLP(in_size + 1, "scalar", width, depth, activation=activation, key=key)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.in_size,)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(in_size=self.in_size, width=self.mlp.width_size, depth=self.mlp.depth,
                    activation=mlp_activation(self.mlp), default_sigma=self.default_sigma)

    def __call__(self, x: Float[Array, " in_size"], sigma: ArrayLike | None = None) -> Float[Array, ""]:
        if sigma is None:
            sigma = self.default_sigma
        sigma = jnp.asarray(sigma, x.dtype)
        if sigma.size != 1:
            raise ValueError(
                f"sigma: expected one noise level per example (a scalar), got shape {sigma.shape}"
            )
        sigma = sigma.reshape(())
        return self.mlp(jnp.concatenate([x, jnp.log(sigma)[None]])) / sigma
