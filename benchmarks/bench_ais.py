"""How the cost of log Z grows with accuracy: AIS (with reverse AIS, BDMC) and adaptive
tempered SMC on correlated Gaussians in 2-D and 20-D, whose log Z is known.

Target: `GaussianEnergy` with covariance eigenvalues in [0.5, 2] and mean in [-1, 1]^d
(the test problem); start: the standard normal (no data, no base). Kernel: MALA (step
0.3) in 2-D, HMC (step 0.2, 5 leapfrog steps) in 20-D, for AIS and SMC alike (SMC: 5
moves per tempering step, 4 independent runs). For each setting, `--seeds` estimates
with different keys after one compiling run: wall time per estimate (median), RMS error
of log Z over the seeds, the mean reported stderr, and the gradient evaluations per
estimate (machine-independent cost). AIS rows also give the reverse (upper) estimate's
RMS error and the mean BDMC gap; their time covers both directions.

    python benchmarks/bench_ais.py            # full grid, writes a markdown table
    python benchmarks/bench_ais.py --quick    # a small grid for a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

import declebm as eb
from declebm.inference import AIS, HMC, MALA, SMC
from declebm.models import GaussianEnergy


def gaussian(dim: int) -> GaussianEnergy:
    rng = np.random.default_rng(dim)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.linspace(0.5, 2.0, dim)) @ q.T
    return GaussianEnergy(rng.uniform(-1.0, 1.0, size=dim), covariance=cov)


def kernel_for(dim: int):
    """The transition and its gradient evaluations per move."""
    if dim <= 2:
        return MALA(step_size=0.3), 1
    return HMC(step_size=0.2, num_integration_steps=5), 5


def measure(model, estimator, truth, seeds):
    eb.evaluate.log_z(model, estimator, key=jax.random.key(10_000)).log_z.block_until_ready()  # compile
    times, err, err_up, gaps, stderr, extra = [], [], [], [], [], []
    for s in range(seeds):
        t = time.perf_counter()
        est = eb.evaluate.log_z(model, estimator, key=jax.random.key(s))
        est.log_z.block_until_ready()
        times.append(time.perf_counter() - t)
        err.append(float(est.log_z) - truth)
        stderr.append(float(est.stderr))
        if est.log_z_upper is not None:
            err_up.append(float(est.log_z_upper) - truth)
            gaps.append(float(est.gap))
        if "num_steps" in est.diagnostics:
            extra.append(float(np.mean(np.asarray(est.diagnostics["num_steps"]))))
    rms = lambda v: float(np.sqrt(np.mean(np.square(v)))) if v else float("nan")  # noqa: E731
    return {
        "time": statistics.median(times),
        "rms": rms(err),
        "rms_upper": rms(err_up),
        "gap": float(np.mean(gaps)) if gaps else float("nan"),
        "stderr": float(np.mean(stderr)),
        "smc_steps": float(np.mean(extra)) if extra else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small grid (2 AIS lengths, 1 chain count, 2 SMC targets)")
    ap.add_argument("--seeds", type=int, default=None, help="estimates per setting (default 5, quick 3)")
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 20])
    args = ap.parse_args()
    seeds = args.seeds or (3 if args.quick else 5)
    ais_steps = [10, 100] if args.quick else [10, 30, 100, 300, 1000]
    ais_chains = [1000] if args.quick else [100, 1000]
    smc_targets = [0.5, 0.9] if args.quick else [0.5, 0.9, 0.97]
    smc_particles = [1000] if args.quick else [250, 1000]

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {seeds} seeds per row; times exclude compilation\n")
    print("| dim | estimator | setting | grad evals | time / estimate (s) | RMS error (nats) | mean stderr | reverse RMS error | mean BDMC gap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dim in args.dims:
        energy = gaussian(dim)
        model, truth = eb.EBM(energy), float(energy.log_z)
        kernel, grads_per_move = kernel_for(dim)
        for chains in ais_chains:
            for steps in ais_steps:
                ais = AIS(num_chains=chains, num_steps=steps, kernel=kernel, reverse="exact")
                r = measure(model, ais, truth, seeds)
                grads = 2 * chains * (steps - 1) * (1 + grads_per_move)  # both directions; init + move
                print(
                    f"| {dim} | AIS+reverse | {chains} chains x {steps} temps | {grads:.2e} | {r['time']:.3f} | "
                    f"{r['rms']:.3f} | {r['stderr']:.3f} | {r['rms_upper']:.3f} | {r['gap']:.3f} |",
                    flush=True,
                )
        for particles in smc_particles:
            for target in smc_targets:
                smc = SMC(num_particles=particles, target_ess=target, kernel=kernel, num_mcmc_steps=5, num_runs=4)
                r = measure(model, smc, truth, seeds)
                grads = 4 * particles * r["smc_steps"] * (1 + 5 * grads_per_move)
                print(
                    f"| {dim} | SMC | 4 runs x {particles} particles, ESS {target} ({r['smc_steps']:.0f} steps) | "
                    f"{grads:.2e} | {r['time']:.3f} | {r['rms']:.3f} | {r['stderr']:.3f} | | |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
