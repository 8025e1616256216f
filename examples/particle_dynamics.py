"""Particle dynamics (alpha, beta) against PCD and a replay buffer on 8gaussians: the
toy protocol of Neklyudov, Jaini & Welling (2021), exact grid log-likelihood curves.

    python examples/particle_dynamics.py --seeds 0 1 2 --steps 10000 --out out/pd

Protocol (the paper's code): energy ``MLP(x) - log N(x; mu, sigma)`` with an MLP
2-300-300-1 and a Swish with a learnable beta per unit (``LearnableSwish``), ``mu`` and
``sigma`` learnable (``GaussianBase``) and started at the first batch's mean and std;
Adam lr 1e-4, betas (0, 0.999); batch 1000; 1000 particles or chains; 10^4 iterations.
Methods (``--methods``):

- ``alpha``, ``beta``: ``ParticleDynamics``; start = base + 1000 Langevin steps (dt 1e-4
  for alpha, 1e-2 for beta); correction 10 Langevin steps, dt 1e-2, sigma 0.1.
- ``pcd``: ``PersistentCD(Langevin(1e-2), steps=20)``, 1000 chains started from a
  Gaussian fitted to the data.
- ``replay``: the paper's "anneal + replay buffer": ``ReplayBufferML`` with a buffer of
  10^4, 10% re-initialised from the fitted Gaussian, 20 steps of
  ``Langevin(step_size=0.1, noise_scale=0.1)``, which samples the *tempered* density
  p^(1/T), T = 0.1^2/0.1 = 0.1 (the paper's ``x += (dt/2)(-grad E) + sigma xi`` is our
  ``Langevin(step_size=dt, noise_scale=sigma)``).

Every ``--eval-every`` iterations (100) the mean log-likelihood of a held-out set is
computed exactly: log Z by a 200x200 grid on [-5, 5]^2 (``evaluate.grid_nll``). Writes one
JSON per run (``runs/<method>_seed<s>.json``), a PNG of the curves and a table beside the
paper's numbers (mean of seeds 0-8; true density -2.83). Runs already in ``--out`` are
reused with ``--reuse``. ``--quick`` is a smoke test: one seed, 20 iterations, tiny network,
particles and test set (an option given explicitly wins).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import declebm as eb
from declebm.inference import Langevin, ParticleDynamics, PersistentCD, ReplayBufferML
from declebm.models import LearnableSwish, MLPEnergy

METHODS = ("alpha", "beta", "pcd", "replay")
# Mean log-likelihood, mean of seeds 0-8, at 10^3 and 10^4 iterations (read off the
# paper's figure / its logs).
PAPER = {"replay": (-3.88, -3.75), "pcd": (-3.41, -3.06), "alpha": (-3.24, -2.85), "beta": (-3.24, -2.84)}
TRUE_LOGLIK = -2.83


# The paper's settings, and the tiny ones of --quick; an option given explicitly wins over both.
PROTOCOL = dict(steps=10_000, batch_size=1000, num_particles=1000, width=300, init_steps=1000,
                buffer_size=10_000, eval_every=100, num_test=10_000)
QUICK = dict(steps=20, batch_size=64, num_particles=64, width=16, init_steps=5,
             buffer_size=256, eval_every=10, num_test=256)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds to run (0 1 2; 0 with --quick)")
    ap.add_argument("--seed", type=int, default=None, help="one seed (overrides --seeds)")
    ap.add_argument("--steps", type=int, help="parameter updates per run (10000)")
    ap.add_argument("--batch-size", type=int, help="data batch (1000)")
    ap.add_argument("--num-particles", type=int, help="particles, or chains per update (1000)")
    ap.add_argument("--width", type=int, help="hidden units of the MLP, 2 hidden layers (300)")
    ap.add_argument("--init-steps", type=int, help="Langevin steps before training, particle methods (1000)")
    ap.add_argument("--buffer-size", type=int, help="replay buffer size (10000)")
    ap.add_argument("--eval-every", type=int, help="iterations between log-likelihood evaluations (100)")
    ap.add_argument("--num-test", type=int, help="held-out examples for the log-likelihood (10000)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--minutes-per-run", type=float, default=None,
                    help="stop a run at the first evaluation after this many minutes (on a busy machine)")
    ap.add_argument("--reuse", action="store_true", help="reuse runs already saved in --out")
    ap.add_argument("--quick", action="store_true", help="tiny everything (smoke test)")
    ap.add_argument("--out", default="out/particle_dynamics")
    return ap


def make_strategy(method: str, args) -> eb.AbstractStrategy:
    n = args.num_particles
    if method in ("alpha", "beta"):
        return ParticleDynamics(
            method, num_particles=n, correction_steps=10, correction_step_size=1e-2, correction_noise=0.1,
            init_steps=args.init_steps, init_step_size=1e-4 if method == "alpha" else 1e-2,
        )
    if method == "pcd":
        return PersistentCD(Langevin(1e-2), steps=20, num_chains=n)
    return ReplayBufferML(Langevin(0.1, noise_scale=0.1), steps=20, num_chains=n,
                          buffer_size=args.buffer_size, reinit_prob=0.1)


def run_one(method: str, seed: int, args) -> dict:
    key = jax.random.key(seed)
    k_data, k_test, k_model, k_fit = jax.random.split(key, 4)
    data = eb.datasets.toy("8gaussians", max(100 * args.batch_size, 10_000), key=k_data)
    test = eb.datasets.toy("8gaussians", args.num_test, key=k_test)
    energy = MLPEnergy(2, args.width, 2, activation=LearnableSwish(), key=k_model)
    model = eb.EBM(energy, base=eb.GaussianBase.from_data(data[: args.batch_size]))
    strategy = make_strategy(method, args)

    def loglik(m) -> float:
        return -float(eb.evaluate.grid_nll(m, test, bounds=(-5.0, 5.0), resolution=200))

    curve = {"step": [0], "loglik": [loglik(model)]}
    clock = {"train": 0.0, "since": None, "first": None}

    def callback(step, metrics, m):
        now = time.perf_counter()
        if clock["first"] is None:  # the first chunk includes compilation: not timed
            clock["first"] = step
        else:
            clock["train"] += now - clock["since"]
        curve["step"].append(step)
        curve["loglik"].append(loglik(m))
        clock["since"] = time.perf_counter()
        if args.minutes_per_run is not None and clock["since"] - t0 > 60 * args.minutes_per_run:
            return True  # fit stops here; the run records how far it got

    t0 = time.perf_counter()
    result = eb.fit(model, data, strategy, num_steps=args.steps, batch_size=args.batch_size, key=k_fit,
                    optimizer=optax.adam(args.lr, b1=0.0, b2=0.999), chunk_size=args.eval_every,
                    callbacks=[callback], progress=False)
    timed = result.step - (clock["first"] or 0)
    run = {
        "method": method, "seed": seed, "steps": result.step, "curve": curve,
        "final_loglik": curve["loglik"][-1],
        "ms_per_iteration": 1000 * clock["train"] / timed if timed > 0 else float("nan"),
        "wall_seconds": time.perf_counter() - t0, "stopped_early": result.step < args.steps,
        "base_loc": np.asarray(result.model.base.loc).tolist(),
        "base_scale": np.asarray(result.model.base.scale).tolist(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("methods", "seeds", "out")},
    }
    print(f"{method} seed {seed}: log-likelihood {run['final_loglik']:.3f} after {result.step} iterations, "
          f"{run['ms_per_iteration']:.1f} ms/iteration", flush=True)
    return run


def _at(run: dict, step: int) -> float:
    steps = np.asarray(run["curve"]["step"])
    i = int(np.argmin(np.abs(steps - step)))
    return run["curve"]["loglik"][i] if steps[i] == step else float("nan")


def table(runs: list[dict]) -> str:
    lines = ["| method | seed | loglik @1e3 | loglik @end | iterations | ms/iteration | paper @1e3 | paper @1e4 |",
             "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        p3, p4 = PAPER[method]
        for r in mine:
            lines.append(f"| {method} | {r['seed']} | {_at(r, 1000):.3f} | {r['final_loglik']:.3f} | {r['steps']} "
                         f"| {r['ms_per_iteration']:.1f} | {p3} | {p4} |")
        if len(mine) > 1:
            finals = np.asarray([r["final_loglik"] for r in mine])
            at3 = np.asarray([_at(r, 1000) for r in mine])
            ms = np.mean([r["ms_per_iteration"] for r in mine])
            lines.append(f"| {method} | mean +- sd | {np.mean(at3):.3f} | {finals.mean():.3f} +- {finals.std(ddof=1):.3f} "
                         f"| | {ms:.1f} | {p3} | {p4} |")
    lines.append(f"| true density | | | | | | {TRUE_LOGLIK} | {TRUE_LOGLIK} |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], path: str) -> None:
    from declebm import plot

    fig, axs = plot.figure(1, 1, size=6.0)
    ax = axs[0, 0]
    for i, method in enumerate(METHODS):
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        n = min(len(r["curve"]["step"]) for r in mine)
        steps = np.asarray(mine[0]["curve"]["step"][:n])
        ll = np.asarray([r["curve"]["loglik"][:n] for r in mine])
        ax.plot(steps, ll.mean(0), color=f"C{i}", label=f"{method} (ours, {len(mine)} seeds)")
        if len(mine) > 1:
            ax.fill_between(steps, ll.min(0), ll.max(0), color=f"C{i}", alpha=0.2)
        ax.plot([1000, 10_000], PAPER[method], "o--", color=f"C{i}", alpha=0.6, label=f"{method} (paper)")
    ax.axhline(TRUE_LOGLIK, color="k", ls=":", label="true density")
    ax.set_xscale("log")
    ax.set_ylim(-4.5, -2.7)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean log-likelihood (grid)")
    ax.set_title("8gaussians: particle dynamics vs MCMC")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = build_parser().parse_args(argv)
    seeds = [args.seed] if args.seed is not None else args.seeds or ([0] if args.quick else [0, 1, 2])
    for name, value in (QUICK if args.quick else PROTOCOL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    print(f"{', '.join(args.methods)} for seeds {seeds}, {args.steps} iterations, on {jax.devices()[0].platform}",
          flush=True)
    runs = []
    for seed in seeds:
        for method in args.methods:
            path = os.path.join(args.out, "runs", f"{method}_seed{seed}.json")
            if args.reuse and os.path.exists(path):
                with open(path) as f:
                    runs.append(json.load(f))
                print(f"{method} seed {seed}: reused {path}", flush=True)
                continue
            run = run_one(method, seed, args)
            with open(path, "w") as f:
                json.dump(run, f)
            runs.append(run)
    text = table(runs)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    png = os.path.join(args.out, "particle_dynamics_8gaussians.png")
    try:
        plot_curves(runs, png)
    except ImportError as e:
        print(f"no figure: {e}")
    print("\n" + text)
    return runs


if __name__ == "__main__":
    main()
