"""Divergence guard: stop (or roll back) a training run whose energies blow up, before
they reach NaN, and hand back the last healthy model."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_positive
from ._sample import draw_noise, fit_noise


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
        return _probe_points(self.num_probe, data, key)

    def reference(self, spread: float, event_size: int) -> float:
        return max(spread, 1.0 + event_size)


@eqx.filter_jit
def _probe_points(num_probe: int, data: Float[Array, "n *event"], key: PRNGKeyArray) -> Float[Array, "m *event"]:
    # One compiled program instead of a dozen eager ones (each compiled on first use).
    k_pick, k_noise = jax.random.split(key)
    n = min(num_probe, data.shape[0])
    picked = data[jax.random.choice(k_pick, data.shape[0], (n,), replace=False)]
    loc, scale = fit_noise(data, "gaussian")
    around = draw_noise(loc, scale, "gaussian", num_probe, k_noise).astype(data.dtype)
    return jnp.concatenate([picked, around])


@eqx.filter_jit
def energy_spread(model: Any, probe: Array) -> Float[Array, ""]:
    """``std`` of the model's energy over the probe points (``inf`` if any is not finite)."""
    e = model.energy_batch(probe)
    return jnp.where(jnp.all(jnp.isfinite(e)), jnp.std(e), jnp.inf)
