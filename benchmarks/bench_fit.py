"""Framework overhead: the same PCD training through `declebm.fit` and through a minimal
hand-written JAX loop (jit + lax.scan, no framework).

Setting (issue 2): 8gaussians, MLP 2-128-128-1 (SiLU), batch 256, 256 persistent chains,
20 unadjusted Langevin steps (step 0.01) per update, Adam 1e-3. Both run chunks of
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


def handwritten(data, mlp, key, steps, chunk):
    opt = optax.adam(1e-3)
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    n = data.shape[0]

    def energy(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    def step(carry, i):
        p, o, chains = carry
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        batch = data[jax.random.randint(k1, (BATCH,), 0, n)]
        grad_x = jax.grad(lambda x, p: -jnp.sum(energy(p, x)))

        def langevin(x, k):
            return x + 0.5 * EPS * grad_x(x, p) + jnp.sqrt(EPS) * jax.random.normal(k, x.shape), None

        chains, _ = jax.lax.scan(langevin, chains, jax.random.split(k2, K))
        chains = jax.lax.stop_gradient(chains)
        loss, g = jax.value_and_grad(lambda p: jnp.mean(energy(p, batch)) - jnp.mean(energy(p, chains)))(p)
        u, o = opt.update(g, o, p)
        return (eqx.apply_updates(p, u), o, chains), loss

    @jax.jit
    def run(carry, start):
        return jax.lax.scan(step, carry, start + jnp.arange(chunk))

    chains = jnp.mean(data, 0) + jnp.std(data, 0) * jax.random.normal(key, (CHAINS, 2))
    carry = (params, opt.init(params), chains)
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
