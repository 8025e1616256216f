"""Divergence guard: stop (or roll back) a training run whose energies blow up, before
they reach NaN, and hand back the last healthy model."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_positive
from ._sample import fit_noise


class DivergenceGuard(eqx.Module):
    r"""When ``fit`` declares a run diverged, and what it does then.

    After every chunk of steps ``fit`` measures two things on fixed probe points: ``k =
    num_probe`` training examples ``x_i`` and ``m = num_probe`` draws ``a_j`` from the Gaussian
    ``q`` fitted to the data per coordinate (``fit_noise``), so both the data and the
    space around them are watched.

    - The *energy spread* ``s = std E(p)`` over all probe points ``p``. Energies are
      defined up to a constant, so the spread (not the level) is what a blow-up of the
      energy network moves. Its reference is ``r = max(s_0, 1 + d)``, ``s_0`` the spread
      before training and ``d`` the number of dimensions of one example.
    - The *NLL excess*, how many nats per example the model is worse than ``q`` on the
      probe's examples, with ``log Z`` estimated by importance sampling from ``q``:

      .. math:: \Delta = \frac1k\sum_i \bigl(\log q(x_i) - \log\tilde p(x_i)\bigr)
                + \log \frac1m\sum_j \frac{\tilde p(a_j)}{q(a_j)}
                \;\approx\; \mathrm{NLL}_p - \mathrm{NLL}_q .

      It sees the whole density ``log p~ = beta (-E + log b)``, base included, where the
      loss may look fine while the density is absurd (a base far from the data, an energy
      that falls without bound, weights thrown about by a huge learning rate). A trained
      model is near or below 0 (8gaussians: 0.7-0.9 at initialisation, -0.9 trained). The
      estimate of ``log Z`` errs low (Jensen), so ``Delta`` rarely overstates a model; a
      nearly flat one in many dimensions reads a few nats high.

    Then, with the spread, the chunk's mean ``|loss|`` and ``|energy*|`` metrics
    (energies of data and of samples, as the strategy reports them; reference: their
    value in the first chunk, at least ``1 + d``) and ``Delta`` (reference: ``Delta_0^+ =
    max(Delta_0, 0)``, ``Delta_0`` before training; a level-0 density of recovery
    likelihood starts far above 0, since the ladder scales an untrained energy by
    ``1/s_0^2``):

    - the run **diverged** when ``s > max_growth * r`` (default: two orders of magnitude,
      a density ratio of ``e^{300}`` between probe points of a 2-D model), or the metrics
      exceed ``max_growth`` times their reference, or ``Delta > Delta_0^+ + max_excess * d``
      (default 10 nats per dimension: ``e^{-20}`` times the density in 2-D), or a loss,
      gradient, parameter or strategy state goes non-finite;
    - a chunk was **healthy** when ``s <= healthy_growth * r``, the metrics are within
      ``healthy_growth`` times their reference and ``Delta <= Delta_0^+ + max_excess * d *
      healthy_growth / max_growth``. The model handed back is the one after the last
      healthy chunk, from before the blow-up began, not the step before a NaN.

    On divergence ``fit`` raises ``TrainingDivergedError`` (its ``.model`` the last
    healthy one). With ``rollback=True`` it instead restarts from the last healthy state
    with every update scaled by ``lr_factor`` (for Adam or SGD that is the learning rate
    times ``lr_factor``), at most ``max_rollbacks`` times, then raises. Each rollback is
    issued as a ``RuntimeWarning`` (whatever ``progress``) and listed in
    ``FitResult.warnings``; so is a run that ends with ``Delta > max_excess * d`` (a
    density that misses the data, e.g. NCE's noise made the base far from the data,
    which no update diverged to), and a run that rolled back and ended with a larger
    ``Delta`` than it started with (worse than the start).

    Pass ``fit(..., divergence_guard=None)`` to keep only the non-finite check.
    """

    max_growth: float = 1e2
    healthy_growth: float = 10.0
    num_probe: int = 256
    rollback: bool = False
    lr_factor: float = 0.1
    max_rollbacks: int = 3
    max_excess: float = 10.0

    def __check_init__(self):
        check_positive(self.max_growth, "max_growth")
        check_positive(self.healthy_growth, "healthy_growth")
        if not self.healthy_growth < self.max_growth:
            raise ValueError(
                f"healthy_growth: must be below max_growth={self.max_growth}, got {self.healthy_growth}"
            )
        check_positive(self.num_probe, "num_probe", integer=True)
        if not isinstance(self.rollback, bool):
            raise TypeError(f"rollback: expected True or False, got {self.rollback!r}")
        check_positive(self.lr_factor, "lr_factor")
        if not self.lr_factor < 1:
            raise ValueError(f"lr_factor: expected a factor in (0, 1) that lowers the learning rate, got {self.lr_factor}")
        check_positive(self.max_rollbacks, "max_rollbacks", integer=True, allow_zero=True)
        check_positive(self.max_excess, "max_excess")

    def probe_points(self, data: Float[Array, "n *event"], key: PRNGKeyArray) -> Float[Array, "m *event"]:
        """``num_probe`` training examples and ``num_probe`` draws around the data."""
        return draw_probe(self.num_probe, data, key).points(data)

    def reference(self, spread: float, event_size: int) -> float:
        return max(spread, 1.0 + event_size)

    def excess_limits(self, start: float, event_size: int) -> tuple[float, float]:
        """``(diverged above, healthy up to)`` for the NLL excess, given its value before
        training (``start``)."""
        base, limit = max(start, 0.0), self.max_excess * event_size
        return base + limit, base + limit * self.healthy_growth / self.max_growth


class Probe(NamedTuple):
    """The guard's probe points, kept as what draws them: the rows ``index`` of the
    training data and the points ``around`` them. ``fit`` gathers the rows inside its
    compiled chunk, from the data it already holds, instead of in a program of its own."""

    index: Int[Array, " k"]
    around: Float[Array, "m *event"]
    loc: Float[Array, "*event"]
    scale: Float[Array, "*event"]

    def points(self, data: Float[Array, "n *event"]) -> Float[Array, "k+m *event"]:
        return jnp.concatenate([data[self.index], self.around.astype(data.dtype)])


_PROBE_TAG = 0x9E3779B9  # any fixed number: separates the probe's NumPy stream from the key's other uses


def draw_probe(num_probe: int, data: Float[Array, "n *event"], key: PRNGKeyArray) -> Probe:
    """``min(num_probe, n)`` distinct rows of ``data`` and ``num_probe`` draws from the
    per-coordinate Gaussian ``fit_noise`` fits to it.

    The random draws are NumPy's, on the host: a probe is drawn once per ``fit``, and
    drawn with ``jax.random`` its permutation and normals were a program of their own
    (threefry rounds and a sort) that took 0.3-0.6 s of CPU to compile, about a tenth of
    the start of a small model's training. ``fit_noise`` is the eager fit the MCMC
    strategies' ``init`` also makes, so for them it reuses compiled code."""
    # Seeded by the key's bits and a tag of the probe's own, so that its draws are not
    # those of any other use of the same key; key_data needs no compiled program.
    rng = np.random.default_rng([*np.asarray(jax.random.key_data(key)).ravel().tolist(), _PROBE_TAG])
    n = data.shape[0]
    index = rng.choice(n, min(num_probe, n), replace=False).astype(np.int32)
    loc, scale = (np.asarray(v, np.float64) for v in fit_noise(data, "gaussian"))
    around = loc + scale * rng.standard_normal((num_probe,) + tuple(data.shape[1:]))
    # device_put, not jnp.asarray: that compiles a small copy program for each shape
    f32 = np.float32
    return Probe(jax.device_put(index), jax.device_put(around.astype(np.dtype(data.dtype))),
                 jax.device_put(loc.astype(f32)), jax.device_put(scale.astype(f32)))


def _log_q(probe: Probe, x: Float[Array, "m *event"]) -> Float[Array, " m"]:
    """The log density of the per-coordinate Gaussian ``N(loc, scale^2)`` the probe was drawn from."""
    per = dist.Normal(probe.loc, probe.scale).log_prob(x.astype(jnp.float32))
    return jnp.sum(per.reshape(x.shape[0], -1), axis=1)


def probe_statistics(model: Any, probe: Probe, points: Float[Array, "k+m *event"]) -> Float[Array, "2"]:
    """``[energy spread, NLL excess]`` of ``model`` on the probe (``points = probe.points(data)``;
    see ``DivergenceGuard``), each ``inf`` where something is not finite. Traced inside
    ``fit``'s chunk, which returns them with the chunk's results."""
    e = model.energy_batch(points)
    spread = jnp.where(jnp.all(jnp.isfinite(e)), jnp.std(e), jnp.inf)
    k = probe.index.shape[0]
    log_p = model.log_prob_unnorm_batch(points).astype(jnp.float32)
    log_q = _log_q(probe, points)
    m = points.shape[0] - k
    log_w = log_p[k:] - log_q[k:]
    excess = jnp.mean(log_q[:k] - log_p[:k]) + jax.scipy.special.logsumexp(log_w) - jnp.log(jnp.float32(m))
    excess = jnp.where(jnp.isnan(excess), jnp.inf, excess)
    return jnp.stack([spread.astype(jnp.float32), excess])
