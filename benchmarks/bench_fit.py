"""Framework overhead: the same PCD training through `declebm.fit` and through a minimal
hand-written JAX loop (jit + lax.scan, no framework).

Setting (issue 2): 8gaussians, MLP 2-128-128-1 (SiLU), batch 256, 256 persistent chains,
20 unadjusted Langevin steps (step 0.01 in declebm's convention, x + 0.005 score + 0.1 z:
half the drift of the peers' ``x - 0.01 grad E + sqrt(0.02) z``, which is our step 0.02)
per update, Adam 1e-3. Both run chunks of
`--chunk` steps per jitted call; compilation and the first chunk are excluded.

    python benchmarks/bench_fit.py --steps 2000
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import declebm as eb
from declebm.inference import Langevin, PersistentCD
from declebm.models import MLPEnergy

EPS, K, BATCH, CHAINS = 0.01, 20, 256, 256


def handwritten_loop(data, mlp, key, chunk, *, eps=EPS, steps_per_update=K, batch=BATCH, chains=CHAINS,
                     energy_reg=0.0):
    """The minimal jit+scan PCD loop: ``run(carry, start) -> (carry, losses)`` runs ``chunk``
    updates; returns ``(run, carry0, static)`` (``eqx.combine(carry[0], static)`` is the MLP).
    Langevin in declebm's convention, ``x + eps/2 grad log p + sqrt(eps) z``; ``energy_reg``
    adds ``alpha * (mean E(x+)^2 + mean E(x-)^2)`` (0: left out)."""
    opt = optax.adam(1e-3)
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    n = data.shape[0]

    def energy(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    def step(carry, i):
        p, o, chains_ = carry
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        xb = data[jax.random.randint(k1, (batch,), 0, n)]
        grad_x = jax.grad(lambda x, p: -jnp.sum(energy(p, x)))

        def langevin(x, k):
            return x + 0.5 * eps * grad_x(x, p) + jnp.sqrt(eps) * jax.random.normal(k, x.shape), None

        chains_, _ = jax.lax.scan(langevin, chains_, jax.random.split(k2, steps_per_update))
        chains_ = jax.lax.stop_gradient(chains_)

        def loss_fn(p):
            e_pos, e_neg = energy(p, xb), energy(p, chains_)
            loss = jnp.mean(e_pos) - jnp.mean(e_neg)
            if energy_reg:
                loss = loss + energy_reg * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
            return loss

        loss, g = jax.value_and_grad(loss_fn)(p)
        u, o = opt.update(g, o, p)
        return (eqx.apply_updates(p, u), o, chains_), loss

    @jax.jit
    def run(carry, start):
        return jax.lax.scan(step, carry, start + jnp.arange(chunk))

    chains0 = jnp.mean(data, 0) + jnp.std(data, 0) * jax.random.normal(key, (chains, 2))
    return run, (params, opt.init(params), chains0), static


def handwritten(data, mlp, key, steps, chunk):
    run, carry, _ = handwritten_loop(data, mlp, key, chunk)
    carry, _ = run(carry, 0)  # compile + warm up
    jax.block_until_ready(carry)
    t = time.perf_counter()
    for c in range(1, steps // chunk):
        carry, losses = run(carry, c * chunk)
    jax.block_until_ready(carry)
    return (time.perf_counter() - t) / (steps - chunk) * 1e3


def with_fit(data, mlp_energy, key, steps, chunk):
    result = eb.fit(
        eb.EBM(mlp_energy), data, PersistentCD(Langevin(step_size=EPS), steps=K, num_chains=CHAINS),
        optimizer=optax.adam(1e-3), num_steps=steps, batch_size=BATCH, chunk_size=chunk, key=key, progress=False,
    )
    h = result.history
    return (h["time"][-1] - h["time"][0]) / (h["step"][-1] - h["step"][0]) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    key = jax.random.key(0)
    data = eb.datasets.toy("8gaussians", 50_000, key=key)
    energy = MLPEnergy(2, 128, 2, key=key)
    rows = []
    for r in range(args.repeats):  # interleave to share machine noise
        rows.append((with_fit(data, energy, key, args.steps, args.chunk), handwritten(data, energy.mlp, key, args.steps, args.chunk)))
    fit_ms = min(a for a, _ in rows)
    hand_ms = min(b for _, b in rows)
    print(f"device: {jax.devices()[0].platform}  steps: {args.steps}  chunk: {args.chunk}  (best of {args.repeats})")
    print(f"| loop | ms/step |\n|---|---|\n| declebm.fit | {fit_ms:.3f} |\n| hand-written jit+scan | {hand_ms:.3f} |")
    print(f"ratio fit / hand-written: {fit_ms / hand_ms:.3f}")


if __name__ == "__main__":
    main()
