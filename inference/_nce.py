r"""Noise-contrastive estimation (Gutmann & Hyvarinen 2010, 2012).

Train the model as a classifier of data against samples of a known noise density
``q``. With ``nu`` noise samples per data point and the learned normaliser ``c``
(``EBM.log_z``), the log-odds that ``x`` is data are

.. math:: G_\theta(x) = \log\tilde p_\theta(x) - c - \log q(x) - \log\nu,

and the loss is the logistic one,

.. math:: L(\theta, c) = -E_{x\sim p_d}\bigl[\log\sigma(G(x))\bigr]
          - \nu\,E_{y\sim q}\bigl[\log\sigma(-G(y))\bigr].

Its minimiser over an unconstrained ``c`` is the data density, *normalised*: ``c``
converges to ``log Z_theta`` (Song & Kingma 2021, section 5). It works when ``q`` is
cheap to sample and evaluate and not too far from the data.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import EBM, AbstractStrategy
from declebm._checks import check_flag, check_positive


class NCEState(NamedTuple):
    """Training state of ``NCE``: the noise distribution ``q`` (a NumPyro distribution,
    itself a pytree), fitted to the data at ``init`` unless one was given."""

    noise: Any


def _fitted_gaussian(data: Float[Array, "n *event"], scale: float = 1.0) -> dist.Distribution:
    """A Gaussian fitted to ``data`` (``(n, *event)``): full covariance for vector
    examples, diagonal (independent per coordinate) for examples of higher rank; its
    standard deviations multiplied by ``scale``. Built without NumPyro's argument
    validation: its arguments are valid by construction, and validating them (positive
    definiteness, a lower Cholesky factor) ran 35-45 small eager programs, each compiled
    anew for every data shape (and about 10 more in each ``log_prob`` of a new shape)."""
    event = data.shape[1:]
    mean = jnp.mean(data, 0)
    if len(event) == 1:
        centred = data - mean
        cov = centred.T @ centred / max(data.shape[0] - 1, 1)
        cov = cov + 1e-6 * jnp.mean(jnp.diag(cov)) * jnp.eye(event[0], dtype=data.dtype) + 1e-12
        cov = 0.5 * (cov + cov.T) * scale**2
        return dist.MultivariateNormal(mean, covariance_matrix=cov, validate_args=False)
    std = (jnp.std(data, 0) + 1e-6) * scale
    return dist.Independent(dist.Normal(mean, std, validate_args=False), len(event), validate_args=False)


def _check_fit_data(data: Float[Array, "n *event"]) -> None:
    """The default noise is a Gaussian fitted to the data: it needs at least 2 examples
    that are not all equal."""
    if isinstance(data, jax.core.Tracer):
        return
    if data.shape[0] < 2:
        raise ValueError(
            f"data: NCE's default noise is a Gaussian fitted to the data, which needs at least 2 examples, "
            f"got {data.shape[0]}; pass noise= (a numpyro distribution)"
        )
    if not bool(jnp.any(jnp.std(data, axis=0) > 0)):
        raise ValueError(
            "data: NCE's default noise is a Gaussian fitted to the data, but every example is the same "
            "(zero variance); pass noise= (a numpyro distribution)"
        )


class NCE(AbstractStrategy):
    r"""Noise-contrastive estimation (Gutmann & Hyvarinen 2010): logistic classification
    of data against ``ratio`` times as many noise samples, learning ``model.log_z``.

    The model's log-density in the classifier is ``model.log_prob(x) =
    log p~(x) - log_z``; ``fit`` trains ``log_z`` with the other parameters, and at the
    optimum it is the model's log normaliser. See the module docstring for the loss.

    Arguments:
        noise: the noise distribution ``q``: any NumPyro distribution (anything with
            ``sample(key, shape)`` and ``log_prob``) whose ``event_shape`` is the shape of
            one example. Default: a Gaussian fitted to the data's mean and covariance
            at ``init`` (diagonal for examples that are not vectors), its standard
            deviations widened by ``noise_scale``.
        ratio: noise samples per data sample (``nu``); ``round(ratio * batch_size)``
            noise points are drawn per step.

    Metrics: ``accuracy`` (fraction of data and noise points classified correctly,
    ``G > 0`` for data) and ``log_z`` (the current estimate of ``log Z``).

        init_log_z: at the start of ``fit``, set ``model.log_z`` to the importance-sampling
            estimate ``log mean_i p~(y_i)/q(y_i)``, ``y_i ~ q`` (``num_is_samples`` draws).
            A ``log_z`` far from the truth makes the classifier saturate: the first
            updates then lower the density where the noise is, which near the data is
            where the data is, and training recovers slowly (a 5-D Gaussian from
            ``log_z = 0``, 4.6 nats off, had not recovered after 600 steps). ``False``
            keeps the model's own ``log_z``.
        num_is_samples: noise draws for that estimate.
        noise_scale: the default noise's standard deviations are the data's times this
            (1.25). At 1 the noise matches the data's first two moments, so a network that
            starts nearly linear-quadratic in ``x`` sees the same expectations under data and
            noise: the classifier starts at a saddle where the gradient comes from third-order
            statistics only (64-D digits, ``MLPEnergy(64, 128, 2)``, Adam 1e-3: accuracy 0.50
            for 900 steps, 0.91 at 2000). A slightly wider noise breaks the tie (1.25: 0.70 at
            250 steps, 0.84 at 1500) at the price of a start that is 2.7 nats per image worse
            than the matched Gaussian; 1.5 separates faster (0.78 at 100 steps) but the
            density after 1500 steps was 6 nats worse. Ignored when ``noise`` is given.
        noise_as_base: when the model has no base density, make the noise its base at
            the start of ``fit`` (``log p~ = -E + log q``; ``fit`` never trains a base), so
            the network learns the log-ratio of data to noise, which is what the classifier
            sees: ``G = -E - log_z - log nu``. The model starts as the noise (normalised:
            the importance-sampling ``log_z`` is then exact, 0 for a constant energy) and is
            integrable. Without it the network has to learn ``log q`` itself before it can
            classify: on the 64-D digits, ``-log q`` of the fitted Gaussian spreads the
            log-odds over +-15 nats, the importance-sampling start of ``log_z`` (weights
            ``1/q`` when ``E`` is flat, of infinite variance) lands ~20 nats above its
            balance point, and accuracy stayed below chance (0.44) for 700 steps.
            ``False`` keeps the model as given.
    """

    noise: Any = None
    ratio: float = 1.0
    init_log_z: bool = True
    num_is_samples: int = 4096
    noise_as_base: bool = True
    noise_scale: float = 1.25

    def __check_init__(self):
        check_positive(self.ratio, "ratio")
        check_flag(self.init_log_z, "init_log_z")
        check_positive(self.num_is_samples, "num_is_samples", integer=True)
        check_positive(self.noise_scale, "noise_scale")
        if not isinstance(self.noise_as_base, bool):
            raise TypeError(f"noise_as_base: expected True or False, got {self.noise_as_base!r}")
        if self.noise is not None:
            for method in ("log_prob", "sample"):
                if not callable(getattr(self.noise, method, None)):
                    raise TypeError(
                        f"noise: expected a distribution with `sample` and `log_prob` methods "
                        f"(e.g. a numpyro distribution), got {type(self.noise).__name__} without `{method}`"
                    )
            batch_shape = tuple(getattr(self.noise, "batch_shape", ()))
            if batch_shape:
                raise ValueError(
                    f"noise: expected a single distribution over one example (batch_shape ()), got "
                    f"batch_shape {batch_shape}; make the example's axes part of the event, e.g. `.to_event()`"
                )

    def init(
        self, model: EBM, data: Float[Array, "n *event"], key: PRNGKeyArray, *, batch_size: int | None = None
    ) -> NCEState:
        return NCEState(self._noise_for(data))

    def _noise_for(self, data: Float[Array, "n *event"]) -> Any:
        """The noise distribution for ``data``: the given one, checked, or a fitted Gaussian."""
        event = tuple(data.shape[1:])
        if self.noise is None:
            _check_fit_data(data)
            return _fitted_gaussian(data, self.noise_scale)
        noise_event = tuple(getattr(self.noise, "event_shape", ()))
        if noise_event != event:
            raise ValueError(
                f"noise: its event_shape {noise_event} does not match the shape of one example {event}"
                + ("; for vector data use e.g. dist.Normal(loc, scale).to_event(1)" if not noise_event else "")
            )
        try:
            out = jax.eval_shape(self.noise.log_prob, jax.ShapeDtypeStruct((2,) + event, data.dtype))
        except Exception as e:  # noqa: BLE001 -- re-raised with context
            raise TypeError(f"noise: log_prob failed on a batch of examples ({type(e).__name__}: {e})") from e
        if tuple(out.shape) != (2,):
            raise ValueError(
                f"noise: log_prob of a batch of 2 examples should have shape (2,), got {tuple(out.shape)}"
            )
        return jax.tree.map(jnp.asarray, self.noise)

    def init_model(self, model: EBM, data: Float[Array, "n *event"], key: PRNGKeyArray) -> EBM:
        noise = self._noise_for(data)
        if self.noise_as_base and model.base is None:
            model = eqx.tree_at(lambda m: m.base, model, noise, is_leaf=lambda x: x is None)
        if not self.init_log_z:
            return model
        y = noise.sample(key, (self.num_is_samples,)).astype(data.dtype)
        log_w = model.log_prob_unnorm_batch(y) - noise.log_prob(y)
        log_z = jax.nn.logsumexp(log_w) - math.log(self.num_is_samples)
        return eqx.tree_at(lambda m: m.log_z, model, log_z.astype(model.log_z.dtype))

    def per_chain(self, state: NCEState) -> NCEState:
        """The noise distribution's parameters are replicated on every device, not split."""
        return jax.tree.map(lambda _: False, state)

    def num_noise(self, batch_size: int) -> int:
        """Noise samples drawn per step for a batch of ``batch_size`` data points."""
        return max(1, int(round(float(self.ratio) * batch_size)))

    def loss(
        self, model: EBM, batch: Float[Array, "batch *event"], state: NCEState, key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], tuple[NCEState, dict[str, Float[Array, ""]]]]:
        n = batch.shape[0]
        m = self.num_noise(n)
        noise = state.noise
        y = jax.lax.stop_gradient(noise.sample(key, (m,))).astype(batch.dtype)
        log_nu = math.log(m / n)

        def log_odds(x):
            return model.log_prob_unnorm_batch(x) - model.log_z - noise.log_prob(x) - log_nu

        g_data, g_noise = log_odds(batch), log_odds(y)
        # -(1/n) [sum_data log s(G) + sum_noise log s(-G)] = -mean_d log s(G) - nu mean_q log s(-G)
        loss = -(jnp.sum(jax.nn.log_sigmoid(g_data)) + jnp.sum(jax.nn.log_sigmoid(-g_noise))) / n
        accuracy = (jnp.sum(g_data > 0) + jnp.sum(g_noise < 0)) / (n + m)
        return loss, (state, {"accuracy": accuracy.astype(jnp.float32), "log_z": model.log_z})
