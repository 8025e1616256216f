r"""Particle dynamics for learning EBMs (Neklyudov, Jaini & Welling 2021).

Maximum likelihood needs samples of the current model ``p_theta``. MCMC strategies
re-mix chains after every parameter update; particle dynamics instead *transport* a
fixed set of particles along a vector field that follows the change of the density
from ``p_{theta_old}`` to ``p_{theta_new}``, then corrects with a few Langevin steps.
Writing ``U_theta(x) = -log p~_theta(x)`` (the energy plus the base density's
``-log b``), the two variants of the paper move each particle by

.. math::
    \alpha:\quad x \leftarrow x + \nabla_x\bigl[U_{\theta_{old}}(x) - U_{\theta_{new}}(x)\bigr]

    \beta:\quad x \leftarrow x - \nabla_x\bigl[\nabla_\theta U_{\theta_{new}}(x)\cdot(\theta_{new}-\theta_{old})\bigr]

(beta is alpha's first-order expansion in ``theta``: the gradient in ``x`` of the
directional derivative of ``U`` along the parameter step). Why it works: the
Wasserstein gradient flow of ``KL(q || p_new)`` moves samples of ``q`` with velocity
``grad log p_new - grad log q``; at ``q = p_old`` that is ``grad_x[log p_new - log p_old]``,
alpha's move. So alpha is one unit-time Euler step of that flow from ``p_old``: exact
for a shift of the density, first order otherwise (for a Gaussian whose scale changes
by ``s`` it moves the samples' scale by about twice the change); the Langevin correction
removes what is left.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractStrategy
from declebm._checks import check_positive
from declebm._ebm import stop_gradient, trainable_filter
from declebm._sample import draw_noise, fit_noise

from ._samplers import Langevin

_VARIANTS = ("alpha", "beta")


class ParticleState(NamedTuple):
    """Training state of ``ParticleDynamics``.

    particles: the particles, shape ``(num_particles, *event_shape)``.
    transport_displacement, correction_displacement: mean Euclidean length of the last
        transport move and of the last Langevin correction (how far particles moved).
    """

    particles: Float[Array, "n *event"]
    transport_displacement: Float[Array, ""]
    correction_displacement: Float[Array, ""]


def _mean_norm(dx: Array) -> Array:
    return jnp.mean(jnp.sqrt(jnp.sum(dx.reshape(dx.shape[0], -1) ** 2, -1)))


class ParticleDynamics(AbstractStrategy):
    r"""Maximum likelihood with particles transported along the change of the density
    (Neklyudov, Jaini & Welling 2021, "Particle dynamics for learning EBMs").

    - Loss: ``mean U(data) - mean U(particles)`` with ``U = -log p~ = E - log b`` (the
      paper's energy includes its base; particles carry no gradient), whose gradient is
      the ML gradient when the particles are samples of the model.
    - After each parameter update (``after_update``, called by ``fit``), the particles
      are transported by the ``variant``'s vector field (module docstring):
      ``"alpha"`` ``x += grad_x[U_old(x) - U_new(x)]``; ``"beta"``
      ``x -= grad_x[grad_theta U_new(x) . (theta_new - theta_old)]``, a forward-mode
      Jacobian-vector product (``jax.jvp``) differentiated in ``x``, so no Jacobian is
      materialised. ``U = -log p~`` includes a learnable base (``GaussianBase``), whose
      change moves particles too.
    - Then ``correction_steps`` steps of unadjusted Langevin (``Langevin``) on the new model.
    - Start: ``num_particles`` draws from the model's base density (a Gaussian fitted to
      the data when the base cannot sample or there is none), then ``init_steps``
      Langevin steps of size ``init_step_size`` on the initial model.

    **Step convention.** The paper's move ``x += (dt/2)(-grad E) + sigma xi`` is our
    ``Langevin(step_size=dt, noise_scale=sigma)``, i.e. ``x + (eps/2) grad log p~ + sigma z``
    with ``eps = dt``. It samples ``p`` itself when ``sigma = sqrt(dt)`` (the default,
    ``correction_noise=None``) and the tempered ``p^{1/T}``, ``T = sigma^2/dt``, otherwise.
    The paper's correction (dt 1e-2, sigma 0.1) is untempered.

    Arguments:
        variant: ``"alpha"`` (difference of energies) or ``"beta"`` (linearised in theta).
        num_particles: particles (the paper: 1000, as many as the batch).
        correction_steps: Langevin steps after each transport (at least 1; paper 10).
        correction_step_size: the Langevin ``dt`` of the correction (paper 1e-2).
        correction_noise: the Langevin noise ``sigma``; ``None`` = ``sqrt(dt)``.
        init_steps: Langevin steps from the base before training (paper 1000; 0 = none).
        init_step_size: their ``dt`` (paper 1e-2; 1e-4 in its alpha script).

    Metrics: ``energy_data``, ``energy_samples`` (mean ``U = -log p~`` of the data and of
    the particles, named as for the MCMC strategies), ``transport_displacement`` and
    ``correction_displacement`` (mean length of the previous update's particle moves).
    """

    variant: str = "beta"
    num_particles: int = 1000
    correction_steps: int = 10
    correction_step_size: float = 1e-2
    correction_noise: float | None = None
    init_steps: int = 1000
    init_step_size: float = 1e-2

    def __check_init__(self):
        if self.variant not in _VARIANTS:
            raise ValueError(f"variant: expected 'alpha' or 'beta', got {self.variant!r}")
        check_positive(self.num_particles, "num_particles", integer=True)
        check_positive(self.correction_steps, "correction_steps", integer=True)
        check_positive(self.correction_step_size, "correction_step_size")
        if self.correction_noise is not None:
            check_positive(self.correction_noise, "correction_noise", allow_zero=True)
        check_positive(self.init_steps, "init_steps", integer=True, allow_zero=True)
        check_positive(self.init_step_size, "init_step_size")

    @property
    def correction_sampler(self) -> Langevin:
        return Langevin(self.correction_step_size, self.correction_noise)

    def init(self, model, data, key, *, batch_size=None) -> ParticleState:
        k_start, k_run = jax.random.split(key)
        base = model.base
        if base is not None and hasattr(base, "sample"):
            x = base.sample(k_start, (self.num_particles,)).reshape((self.num_particles,) + data.shape[1:])
        else:
            loc, scale = fit_noise(data, "gaussian")
            x = draw_noise(loc, scale, "gaussian", self.num_particles, k_start)
        x = jnp.asarray(x, data.dtype)
        if self.init_steps:
            x, _ = Langevin(self.init_step_size).run(stop_gradient(model), x, self.init_steps, k_run)
        zero = jnp.zeros((), data.dtype)
        return ParticleState(x, zero, zero)

    def loss(self, model, batch, state: ParticleState, key):
        particles = jax.lax.stop_gradient(state.particles)
        e_data = -model.log_prob_unnorm_batch(batch)  # U = E - log b: a learnable base is trained too
        e_particles = -model.log_prob_unnorm_batch(particles)
        loss = jnp.mean(e_data) - jnp.mean(e_particles)
        metrics = {
            "energy_data": jnp.mean(e_data),
            "energy_samples": jnp.mean(e_particles),
            "transport_displacement": state.transport_displacement,
            "correction_displacement": state.correction_displacement,
        }
        return loss, (state, metrics)

    def transport(self, old_model, new_model, x: Float[Array, "n *event"]) -> Float[Array, "n *event"]:
        """The ``variant``'s transport move of particles ``x`` from ``old_model`` to
        ``new_model`` (no Langevin correction)."""
        old_model, new_model = stop_gradient(old_model), stop_gradient(new_model)
        if self.variant == "alpha":

            def change(xi):  # log p~_new - log p~_old = U_old - U_new
                return new_model.log_prob_unnorm(xi) - old_model.log_prob_unnorm(xi)

        else:
            spec = trainable_filter(new_model)
            p_new, static = eqx.partition(new_model, spec)
            p_old, _ = eqx.partition(old_model, spec)
            d_theta = jax.tree.map(lambda a, b: a - b, p_new, p_old)

            def change(xi):  # -grad_theta U_new(x) . d_theta = d/de log p~_{theta_new + e d_theta}(x) at e=0
                def log_p(p):
                    return eqx.combine(p, static).log_prob_unnorm(xi)

                return jax.jvp(log_p, (p_new,), (d_theta,))[1]

        return x + jax.vmap(jax.grad(change))(x)

    def after_update(self, old_model, new_model, state: ParticleState, key: PRNGKeyArray) -> ParticleState:
        x0 = state.particles
        x1 = self.transport(old_model, new_model, x0)
        x2, _ = self.correction_sampler.run(stop_gradient(new_model), x1, self.correction_steps, key)
        return ParticleState(x2, _mean_norm(x1 - x0), _mean_norm(x2 - x1))
