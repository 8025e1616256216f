r"""NumPyro, the other way round: a trained EBM as a NumPyro distribution, so it can
serve as a prior or a likelihood inside a NumPyro model."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray
from numpyro.distributions import constraints

from ._checks import check_positive
from ._ebm import EBM
from ._sample import initial_positions
from ._sampler import AbstractSampler


class EBMDistribution(dist.Distribution):
    r"""A trained ``EBM`` as a NumPyro distribution:

    .. math:: \log p(x) = \log \tilde p(x) - \log Z

    with ``log p~`` the model's unnormalised log density and ``log Z`` given (a number,
    e.g. from ``evaluate.log_z`` with AIS, or the analytic value of a test model) or the
    model's own ``log_z`` field (which ``NCE`` learns; other strategies leave it 0).
    ``sample`` runs ``num_steps`` steps of a declebm ``sampler`` on independent chains
    started from the model's base density (a standard normal without one): the draws
    are as exact as those chains are long.

    Use it as a prior, ``x = numpyro.sample("x", EBMDistribution(model, log_z=...))``,
    and sample the posterior with ``numpyro.infer.NUTS``; or as a likelihood with
    ``obs=``. Inside NUTS ``log Z`` is a constant and does not change the posterior;
    it matters for marginal likelihoods, model comparison and when the EBM is one
    factor among normalised ones that share parameters.

    Arguments:
        model: the ``EBM`` (its ``event_shape`` must be known: fit it or declare it).
        log_z: the log normaliser; default ``model.log_z``.
        sampler: a declebm ``AbstractSampler`` for ``sample`` (e.g. ``MALA(0.1)``); without
            one ``sample`` raises.
        num_steps: sampler steps per draw.
        validate_args: NumPyro's argument validation.

    The model's extra energy inputs (a noise level) are not passed: use a model
    whose energy needs none, or wrap it.
    """

    arg_constraints: dict = {}

    def tree_flatten(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Leaves: the arrays of ``model`` and ``sampler`` and ``log_z``; the rest (the
        energy's functions, the event shape, ``num_steps``) is static. So the distribution
        passes through ``jax.jit``/``vmap`` as an argument, as NumPyro's own do (e.g.
        ``MCMC(..., jit_model_args=True)`` with the prior among the model's arguments):
        another trained EBM of the same architecture reuses the compiled program."""
        arrays, static = eqx.partition((self.model, self.sampler), eqx.is_array)
        return (arrays, self.log_z), (static, self.num_steps, self._batch_shape, self._event_shape,
                                      self._validate_args)

    @classmethod
    def tree_unflatten(cls, aux: tuple[Any, ...], leaves: tuple[Any, ...]) -> "EBMDistribution":
        static, num_steps, batch_shape, event_shape, validate_args = aux
        d = cls.__new__(cls)
        d.model, d.sampler = eqx.combine(leaves[0], static)
        d.log_z, d.num_steps = leaves[1], num_steps
        dist.Distribution.__init__(d, batch_shape, event_shape, validate_args=False)  # leaves may be placeholders
        d._validate_args = validate_args
        return d

    def __init__(
        self,
        model: EBM,
        *,
        log_z: float | ArrayLike | None = None,
        sampler: AbstractSampler | None = None,
        num_steps: int = 1000,
        validate_args: bool | None = None,
    ):
        if not isinstance(model, EBM):
            raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
        if model.event_shape is None:
            raise ValueError("model: its event_shape is unknown; declare it (EBM(..., event_shape=...)) or fit it first")
        if sampler is not None and not isinstance(sampler, AbstractSampler):
            raise TypeError(f"sampler: expected a declebm sampler such as MALA(step_size=...), got {type(sampler).__name__}")
        check_positive(num_steps, "num_steps", integer=True)
        if log_z is None:
            log_z = model.log_z
        elif not isinstance(log_z, jax.core.Tracer):
            if jnp.ndim(log_z) != 0 or not math.isfinite(float(log_z)):
                raise ValueError(f"log_z: expected a finite scalar, got {log_z!r}")
        self.model = model
        self.log_z = jnp.asarray(log_z, jnp.float32)
        self.sampler = sampler
        self.num_steps = int(num_steps)
        super().__init__(batch_shape=(), event_shape=tuple(model.event_shape), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        n = len(self.event_shape)
        return constraints.independent(constraints.real, n) if n else constraints.real

    @classmethod
    def from_estimate(
        cls, model: EBM, estimator: Any, *, key: PRNGKeyArray, sampler: AbstractSampler | None = None,
        num_steps: int = 1000,
    ) -> "EBMDistribution":
        """Normalised by an estimate: ``log_z = evaluate.log_z(model, estimator, key=key).log_z``
        (e.g. ``estimator = declebm.inference.AIS(...)``)."""
        from . import evaluate

        return cls(model, log_z=evaluate.log_z(model, estimator, key=key).log_z, sampler=sampler, num_steps=num_steps)

    def log_prob(self, value: Float[Array, "*batch *event"]) -> Float[Array, "*batch"]:
        """``log p~(value) - log Z`` over every leading batch axis."""
        return self.model.log_prob_unnorm_batch(value) - self.log_z

    def sample(self, key: PRNGKeyArray, sample_shape: tuple[int, ...] = ()) -> Float[Array, "*sample *event"]:
        """``prod(sample_shape)`` independent chains of ``sampler``, ``num_steps`` steps each."""
        if self.sampler is None:
            raise ValueError(
                "sampler: EBMDistribution(model, sampler=MALA(step_size=...), num_steps=...) is needed to sample"
            )
        sample_shape = tuple(sample_shape)
        n = math.prod(sample_shape)
        k_init, k_run = jax.random.split(key)
        x0 = initial_positions(self.model, n, k_init)
        x, _ = self.sampler.run(self.model, x0, self.num_steps, k_run)
        return x.reshape(sample_shape + self.event_shape)

