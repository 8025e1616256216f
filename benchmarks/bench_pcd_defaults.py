"""Which persistent-chain sampler keeps PCD from degrading with long training (issue 12).

Protocol: 8 Gaussians on a circle of radius 2 (compass and diagonal centres), std 0.15;
MLP 2-128-128-1 (SiLU), Adam 1e-3, batch 256, 256 persistent chains, 20 sampler gradient
evaluations per chain and update. The exact grid NLL (300x300 on [-4, 4]^2) of a held-out
set is recorded every ``--eval-every`` updates; the true density's NLL on the same set is
the floor. Configurations (``--configs``):

- ``mala``: the former ``"pcd"`` default, ``PersistentCD(MALA(step_size=0.2), steps=20)``;
- ``ula``: the peers' protocol, unadjusted ``Langevin(step_size=0.02)``, 20 steps,
  ``energy_reg=0.001``; its ``mh_acceptance`` says how biased the ULA step is;
- ``mala-adapt``: ``MALA`` from 0.2 with ``adapt_step_size=True``, target 0.57;
- ``hmc-adapt``: ``HMC(num_integration_steps=5)`` from 0.1, 4 steps (the same 20
  gradients per update), ``adapt_step_size=True``, HMC's target 0.651: the ``"pcd"`` default now;
- ``default``: whatever ``strategy_from_name("pcd")`` is now.

Measured (seeds 0, 1, 2; grid NLL at 2k -> 10k updates; true density 1.11, 1.11, 1.14):
``mala`` 2.04 -> 1.33, 2.07 -> diverged at 5200, 2.05 -> 1.41 (its acceptance falls from
0.2 to 0.06; worst after 2k 2.66, 104, 6.38); ``ula`` 2.11 -> 2.21, 2.14 -> 2.20, 2.14 ->
1.55 (``mh_acceptance`` 0.85-0.88); ``mala-adapt`` 2.04 -> 2.59, 2.05 -> 2.64, 2.08 ->
1.98; ``hmc-adapt`` 2.05 -> 2.29, 2.05 -> 1.65, 2.02 -> 1.73 (mean over 9k-10k 1.83,
1.46, 1.56; worst after 2k 2.33, 2.29, 2.65). Single evaluations are noisy (the mode
weights of a PCD model wander while chains cannot cross between modes), hence the window
means and the worst value in the table.

    python benchmarks/bench_pcd_defaults.py --out out/pcd_defaults      # about a minute per config on 2 CPU cores
    python benchmarks/bench_pcd_defaults.py --quick                     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import jax
import numpy as np
import optax
from scipy.special import logsumexp

import declebm as eb
from declebm.inference import HMC, MALA, Langevin, PersistentCD, strategy_from_name
from declebm.models import MLPEnergy

RADIUS, STD, BATCH, CHAINS = 2.0, 0.15, 256, 256
BOUNDS = ((-4.0, 4.0), (-4.0, 4.0))


def _centres() -> np.ndarray:
    angles = np.arange(8) * np.pi / 4  # compass and diagonal directions on the unit circle
    return RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    c = _centres()[rng.integers(0, 8, n)]
    return (c + STD * rng.standard_normal((n, 2))).astype(np.float32)


def true_nll(x: np.ndarray) -> float:
    """Mean negative log density of the equal-weight mixture at ``x`` (nats)."""
    d2 = np.sum((x[:, None, :].astype(np.float64) - _centres()[None]) ** 2, axis=-1)
    log_p = logsumexp(-d2 / (2 * STD**2), axis=1) - np.log(8) - np.log(2 * np.pi * STD**2)
    return float(-np.mean(log_p))


CONFIGS = {
    "mala": lambda: PersistentCD(MALA(step_size=0.2), steps=20, num_chains=CHAINS),
    "ula": lambda: PersistentCD(Langevin(step_size=0.02), steps=20, num_chains=CHAINS, energy_reg=0.001),
    "mala-adapt": lambda: PersistentCD(MALA(step_size=0.2), steps=20, num_chains=CHAINS, adapt_step_size=True,
                                       target_acceptance=0.57),
    "hmc-adapt": lambda: PersistentCD(HMC(step_size=0.1, num_integration_steps=5), steps=4, num_chains=CHAINS,
                                      adapt_step_size=True),
    "default": lambda: strategy_from_name("pcd"),
}


def run_config(name, data, test, *, steps, eval_every, resolution, seed):
    """Train one configuration; returns its NLL curve and the last chunk's metrics."""
    key = jax.random.key(seed)
    model = eb.EBM(MLPEnergy(2, 128, 2, key=jax.random.fold_in(key, 1)))
    curve, metrics_at = [], []

    def record(step, metrics, model):
        if step % eval_every == 0 or step == steps:
            nll = float(eb.evaluate.grid_nll(model, test, bounds=BOUNDS, resolution=resolution))
            curve.append((int(step), nll))
            metrics_at.append({"step": int(step), **{k: float(v) for k, v in metrics.items()}})
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in ("acceptance_rate", "step_size",
                                                                                     "mh_acceptance"))
            print(f"  {name} step {step}: grid NLL {nll:.4f} {shown}", flush=True)

    # Early models have mass at the box's edge; grid_nll's warning says so at every evaluation.
    warnings.filterwarnings("ignore", message="bounds: the cells on the edge")
    t = time.perf_counter()
    diverged = None
    try:
        eb.fit(model, data, CONFIGS[name](), optimizer=optax.adam(1e-3), num_steps=steps, batch_size=BATCH,
               chunk_size=min(eval_every, 100), key=jax.random.fold_in(key, 2), callbacks=[record], progress=False)
    except eb.TrainingDivergedError as e:  # a result of the comparison, not a failure of the script
        diverged = str(e).split(":")[0]
        print(f"  {name}: {diverged}", flush=True)
    return {"curve": curve, "metrics": metrics_at, "seconds": time.perf_counter() - t, "diverged": diverged}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["mala", "ula", "mala-adapt", "hmc-adapt"])
    ap.add_argument("--steps", type=int, default=None, help="parameter updates (default 10000; --quick 20)")
    ap.add_argument("--eval-every", type=int, default=None, help="grid NLL every N updates (default 250)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for pcd_defaults.json")
    ap.add_argument("--quick", action="store_true", help="20 updates, a 60x60 grid, small data: a smoke run")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    steps = args.steps or (20 if args.quick else 10_000)
    eval_every = args.eval_every or (2 if args.quick else 250)
    resolution = 60 if args.quick else 300
    rng = np.random.default_rng(args.seed)
    data = eight_gaussians(2_000 if args.quick else 50_000, rng)
    test = eight_gaussians(500 if args.quick else 5_000, rng)
    floor = true_nll(test)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; 8 Gaussians r={RADIUS} std={STD}; seed {args.seed}; "
          f"true density's test NLL {floor:.4f}", flush=True)
    results = {"true_nll": floor, "steps": steps, "seed": args.seed, "resolution": resolution, "configs": {}}
    for name in args.configs:
        results["configs"][name] = run_config(name, data, test, steps=steps, eval_every=eval_every,
                                              resolution=resolution, seed=args.seed)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "pcd_defaults.json"), "w") as f:
                json.dump(results, f, indent=1)
    early = steps // 5
    print("\n" + summary(results, early, steps))


def summary(results: dict, early: int, late: int) -> str:
    """A markdown table: the NLL at ``early`` and ``late`` updates, its mean over the
    evaluations in the last tenth of the run before each (single evaluations are noisy:
    mode weights of a PCD model wander), the worst NLL after ``early``, and the last
    acceptance, step size and ``mh_acceptance`` where reported. A run that diverged shows
    where, in place of its last NLL."""
    window = max(late // 10, 1)
    rows = [f"| config | NLL @{early} | NLL @{late} | mean NLL ({early - window}, {early}] | "
            f"mean NLL ({late - window}, {late}] | worst NLL after {early} | acceptance | step size | "
            f"mh_acceptance | s |", "|---|" + "---|" * 9]
    for name, r in results["configs"].items():
        at = dict(r["curve"])
        mean = lambda lo, hi: np.mean([v for s, v in r["curve"] if lo < s <= hi])  # noqa: E731
        worst = max([v for s, v in r["curve"] if s > early], default=float("nan"))
        last = r["metrics"][-1]
        fmt = lambda k: f"{last[k]:.3g}" if k in last else ""  # noqa: E731
        late_text = f"{at[late]:.3f}" if late in at else (r["diverged"] or "")
        rows.append(f"| {name} | {at.get(early, float('nan')):.3f} | {late_text} | "
                    f"{mean(early - window, early):.3f} | {mean(late - window, late):.3f} | {worst:.3f} | "
                    f"{fmt('acceptance_rate')} | {fmt('step_size')} | {fmt('mh_acceptance')} | {r['seconds']:.0f} |")
    f = results["true_nll"]
    rows.append(f"| true density | {f:.3f} | {f:.3f} | {f:.3f} | {f:.3f} | | | | | |")
    return "\n".join(rows)

if __name__ == "__main__":
    main()
