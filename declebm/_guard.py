"""Divergence guard: stop (or roll back) a training run whose energies blow up, before
they reach NaN, and hand back the last healthy model."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_positive
from ._sample import fit_noise


class DivergenceGuard(eqx.Module):
    r"""When ``fit`` declares a run diverged, and what it does then.

    After every chunk of steps ``fit`` measures the *energy spread*
    ``s = std_i E(p_i)`` on fixed probe points ``p_i`` (``num_probe`` training examples
    and as many draws from a Gaussian fitted to the data, so both the data and the space
    around them are watched). Energies are defined up to a constant, so the spread (not
    the level) is what a blow-up moves: it is the log-density ratio the model puts
    between probe points. With the reference ``r = max(s_0, 1 + d)`` (``s_0`` the spread
    before training, ``d`` the number of dimensions of one example, since log densities
    grow with dimension):

    - the run **diverged** when ``s > max_growth * r`` (default: two orders of
      magnitude, a density ratio of ``e^{300}`` between probe points of a 2-D model), or
      when the chunk's mean ``|loss|`` or ``|energy*|`` metrics (energies of data and of
      samples, as the strategy reports them) exceed ``max_growth`` times their value in
      the first chunk (at least ``1 + d``), or when a loss, gradient, parameter or
      strategy state goes non-finite;
    - a chunk was **healthy** when ``s <= healthy_growth * r``. The model handed back is
      the one after the last healthy chunk, from before the blow-up began, not the step
      before a NaN.

    On divergence ``fit`` raises ``TrainingDivergedError`` (its ``.model`` the last
    healthy one). With ``rollback=True`` it instead restarts from the last healthy state
    with every update scaled by ``lr_factor`` (for Adam or SGD that is the learning rate
    times ``lr_factor``), at most ``max_rollbacks`` times, then raises.

    Pass ``fit(..., divergence_guard=None)`` to keep only the non-finite check.
    """

    max_growth: float = 1e2
    healthy_growth: float = 10.0
    num_probe: int = 256
    rollback: bool = False
    lr_factor: float = 0.1
    max_rollbacks: int = 3

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

    def probe_points(self, data: Float[Array, "n *event"], key: PRNGKeyArray) -> Float[Array, "m *event"]:
        """``num_probe`` training examples and ``num_probe`` draws around the data."""
        return draw_probe(self.num_probe, data, key).points(data)

    def reference(self, spread: float, event_size: int) -> float:
        return max(spread, 1.0 + event_size)


class Probe(NamedTuple):
    """The guard's probe points, kept as what draws them: the rows ``index`` of the
    training data and the points ``around`` them. ``fit`` gathers the rows inside its
    compiled chunk, from the data it already holds, instead of in a program of its own."""

    index: Int[Array, " k"]
    around: Float[Array, "m *event"]

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
    return Probe(jax.device_put(index), jax.device_put(around.astype(np.dtype(data.dtype))))


def energy_spread(model: Any, probe: Float[Array, "m *event"]) -> Float[Array, ""]:
    """``std`` of the model's energy over the probe points (``inf`` if any is not finite).
    Traced inside ``fit``'s chunk, which returns it with the chunk's results."""
    e = model.energy_batch(probe)
    return jnp.where(jnp.all(jnp.isfinite(e)), jnp.std(e), jnp.inf)
