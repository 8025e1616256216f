"""A learnable diagonal Gaussian base density for ``EBM(energy, base=...)``."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import check_examples


class GaussianBase(eqx.Module):
    r"""A diagonal Gaussian base density with learnable mean and log-scale,

    .. math:: \log b(x) = \sum_i \log N(x_i;\ \mu_i, \sigma_i^2),\qquad \sigma = \exp(\text{log\_scale}),

    so that ``EBM(energy, base=GaussianBase(...))`` is ``log p~(x) = -E(x) + log b(x)``,
    i.e. the energy ``E(x) - log N(x; mu, sigma)`` of Neklyudov et al. (2021, "Particle
    dynamics for learning EBMs"; their code follows Grathwohl et al.'s LSD code), where
    ``mu`` and ``sigma`` are trained with the network. Being an Equinox module, its
    arrays are parameters: ``fit`` trains them with every strategy (any other base,
    e.g. a NumPyro distribution, is held fixed).

    Arguments:
        loc: the mean ``mu``, shape ``event_shape``.
        scale: the standard deviation ``sigma`` (positive), broadcast to ``loc``'s shape.
            Stored as its logarithm so every parameter value is a valid density.

    ``GaussianBase.from_data(data)`` starts it at the data's per-coordinate mean and
    standard deviation (the paper uses the first training batch).
    """

    loc: Float[Array, "*event"]
    log_scale: Float[Array, "*event"]

    def __init__(self, loc: ArrayLike, scale: ArrayLike = 1.0):
        loc = jnp.asarray(loc, jnp.float32)
        scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), loc.shape)
        if not isinstance(scale, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(scale) & (scale > 0))):
            raise ValueError(f"scale: expected finite positive standard deviations, got {scale}")
        self.loc = loc
        self.log_scale = jnp.log(scale)

    @classmethod
    def from_data(cls, data: Any) -> "GaussianBase":
        """Start at the per-coordinate mean and standard deviation of ``data``
        (shape ``(num_examples, *event_shape)``)."""
        x = check_examples(data, "data", None)
        return cls(jnp.mean(x, 0), jnp.std(x, 0) + 1e-6)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``):
        the mean's shape and dtype; the values come from the file."""
        return dict(loc=jax.ShapeDtypeStruct(self.loc.shape, self.loc.dtype))

    @property
    def scale(self) -> Float[Array, "*event"]:
        return jnp.exp(self.log_scale)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.loc.shape)

    def log_prob(self, x: Float[Array, "*event"]) -> Float[Array, "*event"]:
        """Per-coordinate log density (the EBM sums it), as a NumPyro ``Normal`` returns."""
        z = (x - self.loc) / self.scale
        return -0.5 * z**2 - self.log_scale - 0.5 * math.log(2 * math.pi)

    def sample(self, key: PRNGKeyArray, sample_shape: tuple[int, ...] = ()) -> Float[Array, "..."]:
        """Draws of shape ``sample_shape + event_shape``."""
        z = jax.random.normal(key, tuple(sample_shape) + self.loc.shape)
        return self.loc + self.scale * z
