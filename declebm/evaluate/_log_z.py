r"""log Z and test log-likelihood in any dimension, through an estimator object.

``log_z(model, AIS(...), key=key)`` and ``log_likelihood(model, data, AIS(...), key=key)``
are configured by an estimator (``declebm.inference.AIS`` or ``SMC``) as ``fit`` is by a
strategy. The estimators report stochastic bounds; ``log_likelihood`` turns them into
bounds on the log-likelihood (a lower bound on ``log Z`` is an upper bound on the
log-likelihood, and vice versa).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_examples, check_key
from .._devices import make_mesh, replicate_model, split
from .._ebm import EBM
from .._estimator import AbstractLogZEstimator, LogZEstimate
from ._grid import _log_prob_unnorm


class LogLikelihoodEstimate(NamedTuple):
    r"""Test log-likelihood in nats (higher is better), ``log p(x) = log p~(x) - log Z``.

    Attributes:
        log_likelihood: mean over the data of ``log p~(x_i) - log_z`` with the
            estimator's point estimate of ``log Z`` (for AIS the forward one, so it is
            a stochastic *upper* bound on the true value).
        stderr: standard error of ``log_likelihood``: the spread over the examples
            (``std / sqrt(n)``) and the estimator's ``stderr`` of ``log Z``, in quadrature.
        log_likelihood_lower: ``mean log p~ - log_z_upper``, a stochastic lower bound
            (``None`` when the estimator made no reverse run).
        log_likelihood_upper: ``mean log p~ - log_z_lower``, a stochastic upper bound.
        gap: ``log_likelihood_upper - log_likelihood_lower`` (``None`` without reverse run).
        per_example: ``log p~(x_i) - log_z`` for each example, shape ``(n,)``.
        log_z: the full ``LogZEstimate`` the numbers came from; ``reliable`` and
            ``warnings`` are its own.
    """

    log_likelihood: Float[Array, ""]
    stderr: Float[Array, ""]
    log_likelihood_lower: Float[Array, ""] | None
    log_likelihood_upper: Float[Array, ""]
    gap: Float[Array, ""] | None
    per_example: Float[Array, " n"]
    log_z: LogZEstimate

    @property
    def reliable(self) -> bool | None:
        """The log Z estimate's verdict (``LogZEstimate.reliable``)."""
        return self.log_z.reliable

    @property
    def warnings(self) -> tuple[str, ...]:
        """The log Z estimate's warnings (``LogZEstimate.warnings``)."""
        return self.log_z.warnings

    def __repr__(self) -> str:
        def num(v):
            return "None" if v is None else f"{float(v):.4g}"

        return (f"LogLikelihoodEstimate(log_likelihood={num(self.log_likelihood)}, stderr={num(self.stderr)}, "
                f"lower={num(self.log_likelihood_lower)}, upper={num(self.log_likelihood_upper)}, "
                f"n={self.per_example.shape[0]}, reliable={self.reliable})")


def _check_model_and_data(model: Any, estimator: Any, data: Any) -> tuple[EBM, Array | None]:
    if not isinstance(model, EBM):
        raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
    if not isinstance(estimator, AbstractLogZEstimator):
        raise TypeError(
            f"estimator: expected a log Z estimator such as declebm.inference.AIS(...), got {type(estimator).__name__}"
        )
    if data is None:
        return model, None
    x = check_examples(data, "data", model.event_shape)
    if model.event_shape is None:
        model = model.with_event_shape(x.shape[1:])
    return model, x


def _on_devices(model: EBM, devices: Any, kwargs: dict) -> EBM:
    """With ``devices``: the model on every device, and the estimator told to split its
    chains over them (``chains_sharding``)."""
    mesh = make_mesh(devices)
    if mesh is None:
        return model
    kwargs["chains_sharding"] = split(mesh)
    return replicate_model(model, mesh)


def log_z(
    model: EBM, estimator: AbstractLogZEstimator, *, key: PRNGKeyArray, data: Any = None, devices: Any = None,
    **kwargs
) -> LogZEstimate:
    r"""Estimate ``log Z = log \int p~(x) dx`` of ``model`` with ``estimator``.

    Arguments:
        model: the ``EBM``.
        estimator: e.g. ``declebm.inference.AIS(num_chains=1000, num_steps=1000)`` or
            ``declebm.inference.SMC(num_particles=1000)``.
        key: a ``jax.random.key``.
        data: optional examples ``(n, *event_shape)``; the estimator may fit its starting
            density to them (when the model has no base) or start reverse chains there.
        devices: a list of devices or a one-axis ``Mesh`` named ``"data"``, as for ``fit``
            and ``sample``: the chains (AIS's per replicate, SMC's particles per run, a
            multiple of the device count) are split over them, also over several processes
            (``jax.distributed``; every process calls it with the same arguments and gets
            the whole estimate). The same key gives the same draws on any number of devices.
        **kwargs: passed to ``estimator.estimate`` (e.g. ``exact_samples=`` for AIS).

    Returns a ``LogZEstimate`` (``log_z``, ``stderr``, ``ess``, bounds).
    """
    model, x = _check_model_and_data(model, estimator, data)
    check_key(key)
    model = _on_devices(model, devices, kwargs)
    return estimator.estimate(model, key, data=x, **kwargs)


def log_likelihood(
    model: EBM, data: Any, estimator: AbstractLogZEstimator, *, key: PRNGKeyArray, devices: Any = None, **kwargs
) -> LogLikelihoodEstimate:
    r"""Mean log-likelihood of ``data`` (nats per example, higher is better) with
    ``log Z`` from ``estimator``, and both stochastic bounds when the estimator runs in
    both directions (``AIS(reverse=...)``: bidirectional Monte Carlo, Grosse et al. 2015):

    .. math:: \overline{\log\tilde p} - \log\hat Z_{\rm upper} \;\lesssim\;
              \overline{\log p} \;\lesssim\; \overline{\log\tilde p} - \log\hat Z_{\rm lower}

    A wide gap says the estimate cannot be trusted yet (more temperatures or chains).
    ``data`` is also handed to the estimator (to fit its start, or to start reverse
    chains: then the lower bound is the usual approximation, not a guarantee).
    """
    if data is None:
        raise ValueError("data: expected an array of examples (num_examples, *event_shape), got None")
    model, x = _check_model_and_data(model, estimator, data)
    check_key(key)
    est = estimator.estimate(_on_devices(model, devices, kwargs), key, data=x, **kwargs)
    log_p = _log_prob_unnorm(model, x)
    mean_log_p = jnp.mean(log_p)
    n = log_p.shape[0]
    data_se = jnp.std(log_p, ddof=1) / jnp.sqrt(n) if n > 1 else jnp.zeros(())
    lower = None if est.log_z_upper is None else mean_log_p - est.log_z_upper
    upper = mean_log_p - (est.log_z if est.log_z_lower is None else est.log_z_lower)
    return LogLikelihoodEstimate(
        log_likelihood=mean_log_p - est.log_z,
        stderr=jnp.sqrt(data_se**2 + est.stderr**2),
        log_likelihood_lower=lower,
        log_likelihood_upper=upper,
        gap=None if lower is None else upper - lower,
        per_example=log_p - est.log_z,
        log_z=est,
    )
