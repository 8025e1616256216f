"""Sliced score matching needs no Hessian: its memory grows linearly with the dimension.

    python benchmarks/bench_sliced_memory.py                    # dims 10 50 100 200 400
    python benchmarks/bench_sliced_memory.py --dims 100 1000 --no-time --train-steps 0

For data from a D-dimensional Gaussian, compile one training step (loss and gradient with
respect to the parameters, batch of ``--batch-size``) of ``SlicedScoreMatching`` (one
projection, and ``--projections``), ``ExactScoreMatching`` with the Hutchinson trace, and
``ExactScoreMatching`` with the full trace, for ``MLPEnergy(D, 128, 2)``, and read XLA's own
memory analysis of the compiled program: the temporary buffers it allocates.

The exact trace pushes all D basis vectors through the linearised score (the full D x D
Jacobian, i.e. the Hessian of log p~): its temporaries grow as batch * D * (width + D).
The sliced and Hutchinson estimators push ``M`` random directions: batch * M * (width + D),
so with M fixed they barely move with D. Each step is also timed, and finally a 100-D
full-covariance ``GaussianEnergy`` is trained with sliced SM (one projection) and exact SM on
the same budget, to show that sliced SM learns as well as it runs.
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import declebm as eb
from declebm.inference import ExactScoreMatching, SlicedScoreMatching
from declebm.models import GaussianEnergy, MLPEnergy


def make_model(kind: str, dim: int, key):
    if kind == "gaussian":
        return eb.EBM(GaussianEnergy(jnp.zeros(dim)))
    return eb.EBM(MLPEnergy(dim, 128, 2, key=key))


def compiled_step(strategy, model, batch, key):
    """One jitted loss-and-gradient evaluation (with respect to the model's inexact arrays),
    lowered and compiled (not run). Returns the compiled program and its array arguments."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(params, batch, key):
        loss = lambda p: strategy.loss(eqx.combine(p, static), batch, None, key)[0]  # noqa: E731
        return jax.value_and_grad(loss)(params)

    return jax.jit(step).lower(params, batch, key).compile(), (params, batch, key)


def mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[10, 50, 100, 200, 400])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--projections", type=int, default=4)
    p.add_argument("--model", choices=["mlp", "gaussian"], default="mlp",
                   help="energy compiled for the memory table: MLPEnergy(D, 128, 2) or GaussianEnergy (whose "
                   "Hessian is constant in x, so XLA hoists the exact trace out of the batch)")
    p.add_argument("--no-time", dest="time", action="store_false", help="only compile, do not time steps")
    p.add_argument("--train-steps", type=int, default=2000, help="sliced vs exact SM on a 100-D Gaussian (0: skip)")
    args = p.parse_args(argv)

    strategies = {
        "sliced M=1": SlicedScoreMatching(num_projections=1),
        f"sliced M={args.projections}": SlicedScoreMatching(num_projections=args.projections),
        "hutchinson": ExactScoreMatching(hutchinson=True),
        "exact trace": ExactScoreMatching(),
    }
    key = jax.random.key(0)
    header = "| D | " + " | ".join(f"{n} temp MiB" for n in strategies)
    if args.time:
        header += " | " + " | ".join(f"{n} ms/step" for n in strategies)
    print(f"model: {args.model}, batch {args.batch_size}, device {jax.devices()[0].device_kind}; "
          "temp = XLA temporary buffers of the compiled loss+gradient step")
    print(header + " |")
    print("|" + "---:|" * (1 + len(strategies) * (2 if args.time else 1)))
    for dim in args.dims:
        model = make_model(args.model, dim, key)
        batch = jax.random.normal(jax.random.key(1), (args.batch_size, dim))
        temps, times = [], []
        for strategy in strategies.values():
            compiled, call_args = compiled_step(strategy, model, batch, key)
            mem = compiled.memory_analysis()
            temps.append(mib(mem.temp_size_in_bytes) if mem is not None else "n/a")
            if args.time:
                out = compiled(*call_args)
                jax.block_until_ready(out)
                reps, t0 = 5, time.perf_counter()
                for _ in range(reps):
                    out = compiled(*call_args)
                jax.block_until_ready(out)
                times.append(f"{1e3 * (time.perf_counter() - t0) / reps:.1f}")
        print(f"| {dim} | " + " | ".join(temps) + (" | " + " | ".join(times) if args.time else "") + " |", flush=True)

    if args.train_steps:
        # Learning, not only running: a 100-D full-covariance GaussianEnergy (5150 parameters)
        # trained by sliced SM with one projection and by exact SM, same budget.
        dim, steps = 100, args.train_steps
        rng = np.random.default_rng(0)
        mu = rng.uniform(-1, 1, dim)
        scales = np.linspace(0.5, 2.0, dim)
        k_data, k_fit = jax.random.split(jax.random.key(2))
        data = jnp.asarray(mu, jnp.float32) + jax.random.normal(k_data, (20_000, dim)) * jnp.asarray(scales, jnp.float32)
        x = np.asarray(data, np.float64)
        cov = np.cov(x.T, bias=True)
        print(f"\nA {dim}-D Gaussian (std 0.5..2), GaussianEnergy from N(0, I), {steps} steps of batch "
              f"{args.batch_size}, Adam 3e-2 decayed to 6e-4; errors against the data's moments")
        print("| strategy | max abs mean error | median / max rel. variance error | max abs off-diagonal cov error | s (incl. compile) |")
        print("|---|---:|---:|---:|---:|")
        for name, strategy in (
            ("sliced M=1 gaussian", SlicedScoreMatching(num_projections=1)),
            ("sliced M=1 rademacher", SlicedScoreMatching(num_projections=1, projection="rademacher")),
            ("exact trace", ExactScoreMatching()),
        ):
            t0 = time.perf_counter()
            result = eb.fit(eb.EBM(GaussianEnergy(jnp.zeros(dim))), data, strategy,
                            optimizer=optax.adam(optax.exponential_decay(3e-2, steps, 0.02)), num_steps=steps,
                            batch_size=args.batch_size, key=k_fit, progress=False)
            seconds = time.perf_counter() - t0
            e = result.model.energy_module
            c = np.asarray(e.covariance, np.float64)
            rel = np.abs(np.diag(c) / np.diag(cov) - 1)
            off = np.abs(c - cov)[~np.eye(dim, dtype=bool)].max()
            print(f"| {name} | {np.abs(np.asarray(e.mean) - x.mean(0)).max():.3f} | {np.median(rel):.3f} / "
                  f"{rel.max():.3f} | {off:.3f} | {seconds:.1f} |", flush=True)

if __name__ == "__main__":
    main()
