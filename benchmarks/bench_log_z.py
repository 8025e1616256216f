"""Accuracy and honesty of the default log Z estimators, `AIS()` and `SMC()`, on targets
whose log Z is known: correlated Gaussians of dimension 10 to 50 whose covariance
eigenvalues span `--low` to `--high` (log-spaced, in a random basis; condition number up
to 5000), with a shifted mean (N(0, 4) per coordinate) and an energy offset (+3), and
well-separated two-Gaussian mixtures with weights 0.3 / 0.7 (means at +2 and -2 in every
coordinate, unit covariances). No data and no base: the estimators start from a standard
normal (their pilot run fits the start). For each target and estimator, `--seeds` keys:
the error of log Z, the reported stderr, whether `log_z +- 1.96 stderr` holds the truth,
the reliability flag, and the wall time of each estimate (the first includes compiling).

    python benchmarks/bench_log_z.py --out benchmarks/RESULTS_log_z.md
    python benchmarks/bench_log_z.py --quick                 # a smoke test
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import declebm as eb
from declebm.inference import AIS, SMC
from declebm.models import GaussianEnergy, MixtureEnergy


class OffsetEnergy(eqx.Module):
    """``E(x) + offset``: log Z shifts by ``-offset``."""

    inner: eqx.Module
    offset: float = eqx.field(static=True)

    def __call__(self, x):
        return self.inner(x) + jnp.asarray(self.offset, x.dtype)


def gaussian(dim: int, low: float, high: float, seed: int = 0, offset: float = 3.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = (q * np.geomspace(low, high, dim)) @ q.T
    energy = GaussianEnergy(2.0 * rng.normal(size=dim), covariance=0.5 * (cov + cov.T))
    model = eb.EBM(OffsetEnergy(energy, offset), event_shape=(dim,))
    return model, float(energy.log_z) - offset, float(high / low)


def mixture(dim: int):
    energy = MixtureEnergy(np.stack([np.full(dim, 2.0), np.full(dim, -2.0)]), np.ones(2), weights=np.array([0.3, 0.7]))
    return eb.EBM(energy, event_shape=(dim,)), float(energy.log_z), 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[10, 20, 30, 50], help="dimensions of the Gaussians")
    p.add_argument("--mixture-dims", type=int, nargs="*", default=[10, 20], help="dimensions of the mixtures (none: no mixture)")
    p.add_argument("--low", type=float, default=0.1, help="smallest covariance eigenvalue")
    p.add_argument("--high", type=float, default=500.0, help="largest covariance eigenvalue")
    p.add_argument("--seeds", type=int, default=3, help="keys per target and estimator")
    p.add_argument("--quick", action="store_true", help="tiny estimators (64 chains, 50 temperatures): a smoke test")
    p.add_argument("--out", default=None, help="write the markdown table (and a .jsonl of the runs) there")
    args = p.parse_args()

    if args.quick:
        estimators = {"AIS": AIS(num_chains=64, num_steps=50), "SMC": SMC(num_particles=64, num_runs=4)}
    else:
        estimators = {"AIS()": AIS(), "SMC()": SMC()}
    targets = [(f"Gaussian {d}-D", d, *gaussian(d, args.low, args.high)) for d in args.dims]
    targets += [(f"mixture 0.3/0.7 {d}-D", d, *mixture(d)) for d in args.mixture_dims]
    rows, records = [], []
    for name, dim, model, truth, cond in targets:
        for est_name, est in estimators.items():
            errs, ses, secs, rel, cover = [], [], [], [], []
            for seed in range(args.seeds):
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    r = eb.evaluate.log_z(model, est, key=jax.random.key(seed))
                jax.block_until_ready(r.log_z)
                secs.append(time.perf_counter() - t)
                errs.append(float(r.log_z) - truth)
                ses.append(float(r.stderr))
                rel.append(bool(r.reliable))
                cover.append(abs(errs[-1]) <= 1.96 * ses[-1])
                records.append({"target": name, "dim": dim, "condition": cond, "estimator": est_name, "seed": seed,
                                "error": errs[-1], "stderr": ses[-1], "reliable": rel[-1], "seconds": secs[-1]})
                print(json.dumps(records[-1]), flush=True)
            rows.append(
                f"| {name} | {dim} | {cond:.0f} | {est_name} | {', '.join(f'{e:+.3f}' for e in errs)} | "
                f"{', '.join(f'{s:.3f}' for s in ses)} | {sum(cover)}/{len(cover)} | {sum(rel)}/{len(rel)} | "
                f"{secs[0]:.1f} / {np.median(secs[1:]) if len(secs) > 1 else float('nan'):.1f} |"
            )
    table = "\n".join([
        "| target | dim | condition number | estimator | error per key (nats) | stderr per key | truth in +-1.96 se "
        "| reliable | seconds (first, with compile / median of the rest) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# log Z of the default estimators on known targets\n\n"
                    f"    python benchmarks/bench_log_z.py{' --quick' if args.quick else ''} --out {args.out}\n\n"
                    f"{__doc__.split(chr(10) + chr(10))[0]}\n\n{table}\n")
        with open(args.out.rsplit(".", 1)[0] + ".jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
