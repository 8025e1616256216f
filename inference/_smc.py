r"""Adaptive tempered sequential Monte Carlo (Del Moral, Doucet & Jasra 2006) for log Z,
through ``blackjax.adaptive_tempered_smc``.

Particles start at exact draws of a normalised ``q`` and follow the same bridge as AIS,
``log f_b = log q + b (log p~ - log q)``; each step picks the next ``b`` so that the
effective sample size of the incremental weights is ``target_ess`` of the particles,
resamples, moves every particle by ``num_mcmc_steps`` transitions of the kernel, and
reweights. BlackJAX reports each step's ``log_likelihood_increment``,
``log mean_i exp((b_new - b_old)(log p~ - log q)(x_i))``, and their sum over the steps
is the SMC estimate of ``log Z`` (``exp`` of it is unbiased for ``Z`` for a fixed
schedule; the adaptive schedule adds a small bias).
"""

from __future__ import annotations

from typing import Any

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from declebm import AbstractLogZEstimator, AbstractSampler, LogZEstimate
from declebm._hosts import host_copy
from declebm._checks import check_positive, check_probability
from declebm._estimator import (
    dead_replicates_check,
    reliability,
    replicate_spread,
    replicate_stderr,
    summarise_log_weights,
)

from ._ais import pilot_start, preconditioner_kind
from ._annealing import AnnealedTarget, check_chains_sharding, check_kernel, draw_start, integrability_checks, prepare
from ._samplers import MALA


def _one_run(target, kernel, num_particles, event_shape, target_ess, num_mcmc_steps, max_num_steps, key,
             chains_sharding=None):
    """One adaptive tempered SMC run in a ``lax.while_loop`` until ``b`` reaches 1.
    Returns ``(log Z, final log weights, steps taken, final b, b per step, acceptance per step,
    NaN seen, start particles, final particles)``."""
    def log_ratio(x):
        # +inf energy (a hard constraint) is zero density: a finite floor keeps BlackJAX's
        # tempering solver and weights free of 0 * (-inf); NaN passes through (and is
        # reported).
        r = target.log_ratio(x)
        return jnp.where(r == -jnp.inf, jnp.finfo(r.dtype).min / 4, r)

    smc = blackjax.adaptive_tempered_smc(
        logprior_fn=lambda x: jnp.sum(target.base.log_prob(x)),
        loglikelihood_fn=log_ratio,
        mcmc_step_fn=lambda k, s, logdensity_fn: kernel.step_chain(k, s, logdensity_fn),
        mcmc_init_fn=lambda x, logdensity_fn: kernel.init_chain(logdensity_fn, x),
        mcmc_parameters={},
        resampling_fn=blackjax.smc.resampling.systematic,
        target_ess=target_ess,
        num_mcmc_steps=num_mcmc_steps,
    )
    k_start, k_run = jax.random.split(key)
    start = draw_start(target.base, num_particles, event_shape, k_start, chains_sharding)
    dtype = jnp.result_type(float)
    # Particles where p~ = 0 (an energy of +inf: outside a hard constraint) have zero weight
    # at every b > 0, whatever the step, so no step from b = 0 keeps the ESS at target_ess:
    # the solver crept up from b = 0 by steps of ~1e-38 for hundreds of steps, or never left
    # it (and BlackJAX moves the particles at the old b, so at b = 0 they wander back out).
    # With such particles the first step is taken here, to b = 1e-6: log Z gains the step's
    # log mean weight (the fraction alive, to 1e-6), the dead particles are resampled away,
    # and from b > 0 on the kernel never moves a particle outside. Without them nothing
    # changes (b starts at 0; no key is drawn from k_run for it).
    first = jnp.asarray(1e-6, dtype)
    ratios = jax.vmap(target.log_ratio)(start)
    dead, nan_at_start = ratios == -jnp.inf, jnp.any(jnp.isnan(ratios))  # NaN: reported, as in a step
    log_w = jnp.where(dead | jnp.isnan(ratios), -jnp.inf, first * ratios)
    any_dead = jnp.any(dead) & ~jnp.all(dead)
    picks = blackjax.smc.resampling.systematic(jax.random.fold_in(k_start, 1), jax.nn.softmax(log_w), num_particles)
    moved = jnp.where(any_dead, start[picks], start)
    if chains_sharding is not None:
        moved = jax.lax.with_sharding_constraint(moved, chains_sharding)
    log_z_first = jnp.where(any_dead, jax.nn.logsumexp(log_w) - jnp.log(num_particles), 0.0).astype(dtype)
    state = smc.init(moved)
    state = state._replace(tempering_param=jnp.where(any_dead, first, 0.0).astype(dtype))
    buffers = (jnp.full(max_num_steps, jnp.nan, dtype), jnp.full(max_num_steps, jnp.nan, jnp.float32))
    log_w_final = jnp.zeros(num_particles, dtype)

    def cond(carry):
        state, _, i, _, _, _, nan = carry
        return (state.tempering_param < 1.0) & (i < max_num_steps) & ~nan

    def body(carry):
        state, log_z, i, k, (betas, acceptance), _, _ = carry
        k, k_step = jax.random.split(k)
        state, info = smc.step(k_step, state)
        log_z = log_z + info.log_likelihood_increment.astype(dtype)
        betas = betas.at[i].set(state.tempering_param)
        acceptance = acceptance.at[i].set(jnp.mean(info.update_info.acceptance_rate))
        # A NaN energy reaches the weights (and the increment) of the step that met it: no
        # second evaluation of the energy is needed to notice it.
        nan = jnp.isnan(info.log_likelihood_increment) | jnp.any(jnp.isnan(state.weights))
        return state, log_z, i + 1, k, (betas, acceptance), jnp.log(state.weights), nan

    init = (state, log_z_first, jnp.zeros((), jnp.int32), k_run, buffers, log_w_final, nan_at_start)
    state, log_z, num_steps, _, (betas, acceptance), log_w_final, nan = jax.lax.while_loop(cond, body, init)
    return log_z, log_w_final, num_steps, state.tempering_param, betas, acceptance, nan, start, state.particles


@eqx.filter_jit
def _run_smc(target, kernel, num_particles, event_shape, target_ess, num_mcmc_steps, max_num_steps, num_runs, key,
             chains_sharding=None):
    keys = jax.random.split(key, num_runs)
    return jax.vmap(
        lambda k: _one_run(target, kernel, num_particles, event_shape, target_ess, num_mcmc_steps, max_num_steps, k,
                           chains_sharding)
    )(keys)


class SMC(AbstractLogZEstimator):
    r"""Adaptive tempered SMC estimate of ``log Z`` (``blackjax.adaptive_tempered_smc``;
    see the module docstring), ``num_runs`` independent runs vmapped.

    The start ``q`` is chosen as for ``AIS``: ``base`` if given, else the model's base
    density, else a Gaussian fitted to ``data``, else a standard normal.

    Arguments:
        num_particles: particles per run.
        target_ess: the fraction of ``num_particles`` the effective sample size of each
            step's incremental weights is held at (BlackJAX's ESS solver picks the next
            inverse temperature); closer to 1 means more, smaller steps.
        kernel: the MCMC move, ``MALA(step_size=...)`` (default 0.1) or ``HMC(...)``.
        num_mcmc_steps: kernel transitions per particle per tempering step.
        num_runs: independent SMC runs; ``log_z`` is ``log mean_r Z_r`` over them and
            ``stderr`` comes from their spread (a rough one for few runs).
        base: the start density (any NumPyro distribution over one example), or None.
        max_num_steps: a cap on tempering steps; if the inverse temperature has not
            reached 1 by then, ``estimate`` raises (raise the cap or lower ``target_ess``).

    An energy of ``+inf`` is zero density (a hard constraint): start particles there are
    dropped by a first step to ``b = 1e-6`` (``log Z`` gains its mean weight, the fraction
    alive), after which the kernel never moves a particle outside.

    ``estimate`` returns a ``LogZEstimate`` whose ``log_weights`` are the runs' ``log Z``,
    ``ess`` the mean over runs of the final particle ESS, ``log_z_lower = log_z`` (a
    stochastic lower bound), and ``diagnostics`` with ``num_steps`` (tempering steps per
    run), ``schedule`` and ``acceptance_rate`` (per step, NaN-padded to ``max_num_steps``).
    """

    num_particles: int = 1000
    target_ess: float = 0.9
    kernel: AbstractSampler = MALA(step_size=0.1)
    num_mcmc_steps: int = 10
    num_runs: int = 8
    base: Any = None
    max_num_steps: int = 1000
    pilot: bool = True

    def __check_init__(self):
        check_positive(self.num_particles, "num_particles", integer=True)
        check_positive(self.num_mcmc_steps, "num_mcmc_steps", integer=True)
        check_positive(self.num_runs, "num_runs", integer=True)
        check_positive(self.max_num_steps, "max_num_steps", integer=True)
        check_probability(self.target_ess, "target_ess")
        if not 0.0 < float(self.target_ess) < 1.0:
            raise ValueError(f"target_ess: expected a fraction strictly between 0 and 1, got {self.target_ess!r}")
        check_kernel(self.kernel)
        if not isinstance(self.pilot, bool):
            raise TypeError(f"pilot: expected True or False, got {self.pilot!r}")

    def estimate(
        self, model: Any, key: PRNGKeyArray, *, data: Float[Array, "n *event"] | None = None,
        chains_sharding: Any = None, **kwargs
    ) -> LogZEstimate:
        """Run ``num_runs`` SMC runs on ``model``; see the class docstring. ``chains_sharding``
        (``evaluate.log_z(devices=...)``) splits each run's particles over its devices; the
        per-particle results come back whole to every process."""
        model, data, event_shape, base = prepare("SMC", model, data, self.base, kwargs)
        check_chains_sharding(chains_sharding, self.num_particles, "num_particles")
        start = "given" if self.base is not None else "model.base" if model.base is not None else (
            "data" if data is not None else "standard normal")
        if self.pilot and start == "standard normal":
            size, chains = int(np.prod(event_shape)), self.num_particles * self.num_runs
            base = pilot_start(model, base, self.kernel, "sigmoid", 250, chains, event_shape,
                               preconditioner_kind("auto", chains, size), 1, True, jax.random.fold_in(key, 7),
                               chains_sharding)
            start = "pilot"
        log_zs, log_w, num_steps, final_beta, betas, acceptance, nan, start_x, particles = _run_smc(
            AnnealedTarget(model, base), self.kernel, self.num_particles, event_shape, float(self.target_ess),
            self.num_mcmc_steps, self.max_num_steps, self.num_runs, key, chains_sharding,
        )
        log_zs, log_w, num_steps, final_beta, betas, acceptance, nan, start_x, particles = host_copy(
            (log_zs, log_w, num_steps, final_beta, betas, acceptance, nan, start_x, particles))
        if bool(jnp.any(nan)):
            raise ValueError(
                "model: its energy is NaN at positions the SMC particles reached, so it is not a density there; "
                "an energy of +inf is allowed (zero density), NaN is not"
            )
        if not bool(jnp.all(final_beta >= 1.0)):
            raise RuntimeError(
                f"SMC: tempering stopped at inverse temperature {float(jnp.min(final_beta)):.4g} < 1 after "
                f"max_num_steps={self.max_num_steps} steps; raise max_num_steps or lower target_ess"
            )
        log_z = summarise_log_weights(log_zs)[0]
        stderr = replicate_stderr(log_zs)
        ess = jnp.mean(jnp.exp(2 * jax.nn.logsumexp(log_w, -1) - jax.nn.logsumexp(2 * log_w, -1)))
        diagnostics = {"num_steps": num_steps, "schedule": betas, "acceptance_rate": acceptance, "start": start}
        acc = np.asarray(acceptance)
        low_acc = float(np.nanmin(acc)) if np.isfinite(acc).any() else 1.0
        spread, dead = replicate_spread(log_zs)
        checks = [
            (not np.isfinite(float(log_z)), f"log_z is {float(log_z)}"),
            (low_acc < 0.05,
             f"the acceptance rate fell to {low_acc:.3g} at some tempering step: the particles stopped moving; lower "
             "the kernel's step size"),
            dead_replicates_check(dead, self.num_runs, "runs"),
            (self.num_runs > 1 and spread > 1.0,
             f"the {self.num_runs} runs disagree (log Z sd {spread:.3g} nats): the estimate is not settled"),
            *integrability_checks(model, start_x.reshape((-1,) + event_shape), particles.reshape((-1,) + event_shape)),
        ]
        reliable, said = reliability(checks, "SMC")
        return LogZEstimate(
            log_z=log_z, stderr=stderr, ess=ess, log_weights=log_zs, diagnostics=diagnostics, log_z_lower=log_z,
            reliable=reliable, warnings=said,
        )
