"""Contrastive divergence versus maximum likelihood, made visible (Gagnon & Lajoie 2022).

    python examples/cd_vs_ml.py --dataset 8gaussians --steps 2000 --out out/
    python examples/cd_vs_ml.py --strategy cd pcd --steps 20 --quick   # a smoke test

Trains the same energy network (MLPEnergy(2, 128, 2)) with the same budget (updates,
batch, Langevin sampler, k steps per update) by five MCMC variants:

    cd         ContrastiveDivergence  chains from the data batch (true CD-k)
    shortrun   ShortRunML             fresh noise every update (biased-sampler ML, not CD)
    pcd        PersistentCD           persistent chains (stochastic-approximation ML)
    replay     ReplayBufferML         replay buffer, 5% noise re-init (biased-sampler ML)
    replay-kl  ReplayBufferML + the Du et al. (2020) KL and entropy terms

and reports for each: the exact test NLL (grid quadrature: the *density*), the squared
MMD to held-out data of the training sampler's own k-step samples (what the training
"sees"), and of long-run chains from noise at 10x and 100x the training chain length
(what the density really is), plus the long-run diagnosis verdict
(``evaluate.long_run``). Writes a markdown table and one figure (rows: variants;
columns: density, short-run samples, long-run 10x, long-run 100x) to ``--out``, and the
numbers as JSON. ``--quick`` is a smoke test: 50 updates per variant (unless ``--steps`` is
given) and tiny data, grid and evaluation chains (long runs of 2x and 4x the training length);
the model and ``--k`` stay.

The seed paper's claim to check: short-run noise-initialised training gives good
short-run samples but a wrong density, while persistent chains approach ML.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import declebm as eb
from declebm.inference import ContrastiveDivergence, Langevin, PersistentCD, ReplayBufferML, ShortRunML
from declebm.models import MLPEnergy

VARIANTS = ("cd", "shortrun", "pcd", "replay", "replay-kl")
_STARTS = {
    "cd": "data batch",
    "shortrun": "noise, every update",
    "pcd": "persistent chains",
    "replay": "replay buffer (5% noise)",
    "replay-kl": "replay buffer (5% noise)",
}


def make_strategy(name: str, sampler: Langevin, k: int):
    """The five variants, identical except for where chains start (and the Du et al. terms)."""
    if name == "cd":
        return ContrastiveDivergence(sampler, steps=k)
    if name == "shortrun":
        return ShortRunML(sampler, steps=k)
    if name == "pcd":
        return PersistentCD(sampler, steps=k)
    if name == "replay":
        return ReplayBufferML(sampler, steps=k)
    if name == "replay-kl":
        # KL(q_theta || p_sg): frozen-energy of the end points through the last step, minus
        # their nearest-neighbour entropy, equal weights (Du et al. 2020).
        return ReplayBufferML(sampler, steps=k, kl_weight=1.0, entropy_weight=1.0, kl_steps=1)
    raise ValueError(f"--strategy: unknown variant {name!r}; choose from {', '.join(VARIANTS)} or all")
# Sizes of everything but training: the protocol's, and the tiny ones of --quick. The
# long runs are `long_run_factors` times the training chain length k.
FULL = dict(steps=2000, num_train=50_000, num_test=5_000, resolution=200, long_run_factors=(10, 100))
QUICK = dict(steps=50, num_train=2_000, num_test=500, resolution=40, long_run_factors=(2, 4), num_chains=100)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="8gaussians", choices=eb.datasets.TOY_NAMES)
    ap.add_argument("--strategy", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT",
                    help="variants to train, among " + ", ".join(VARIANTS) + " (default: all)")
    ap.add_argument("--steps", type=int, help="parameter updates per variant (2000; 50 with --quick)")
    ap.add_argument("--k", type=int, default=20, help="sampler steps per update (the training chain length)")
    ap.add_argument("--step-size", type=float, default=0.05, help="Langevin step size for every variant")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num-chains", type=int, default=None, help="chains for the evaluation (1000; 100 with --quick)")
    ap.add_argument("--out", default="out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny data, grid and evaluation (smoke test)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.num_chains is None:
        args.num_chains = size.get("num_chains", 1000)
    if args.steps is None:
        args.steps = size["steps"]
    variants = list(dict.fromkeys(args.strategy))
    k = args.k
    f10, f100 = size["long_run_factors"]
    lengths = (k, f10 * k, f100 * k)

    key = jax.random.key(args.seed)
    k_data, k_test, k_model, k_fit, k_eval = jax.random.split(key, 5)
    data = eb.datasets.toy(args.dataset, size["num_train"], key=k_data)
    test = eb.datasets.toy(args.dataset, size["num_test"], key=k_test)
    model0 = eb.EBM(MLPEnergy(in_size=2, width=128, depth=2, key=k_model))
    sampler = Langevin(step_size=args.step_size)
    # One MMD kernel for every number here: a mixture over the median distance and finer
    # scales, so that mode shapes count as well as the placement of the modes.
    h_med = float(eb.evaluate.median_bandwidth(test))
    h = [h_med / 8, h_med / 4, h_med / 2, h_med]
    print(f"{args.dataset}: {len(variants)} variants x {args.steps} updates, batch {args.batch_size}, "
          f"Langevin(step_size={args.step_size}) x {k} steps per update, on {jax.devices()[0].platform}")

    rows, panels = [], []
    for name in variants:
        strategy = make_strategy(name, sampler, k)
        t0 = time.perf_counter()
        result = eb.fit(model0, data, strategy, optimizer=optax.adam(args.lr), num_steps=args.steps,
                        batch_size=args.batch_size, key=k_fit, progress=False)
        train_s = time.perf_counter() - t0
        model = result.model
        t1 = time.perf_counter()
        nll = float(eb.evaluate.grid_nll(model, test, resolution=size["resolution"]))

        # The training sampler's own short-run samples: one more draw of negatives from the
        # final state (CD: k steps from held-out data; short-run: k steps from noise; PCD: the
        # persistent chains moved k more steps; replay: k steps from buffer draws).
        batch = test[: args.num_chains]
        x_short, _, _ = eqx.filter_jit(strategy.negatives)(model, batch, result.state, k_eval)
        x_short = jax.lax.stop_gradient(x_short)
        mmd_short = float(eb.evaluate.mmd(x_short, test, bandwidth=h))

        report = eb.evaluate.long_run(model, sampler, data=data, reference=test, key=k_eval,
                                      chain_lengths=lengths, num_chains=args.num_chains, bandwidth=h)
        eval_s = time.perf_counter() - t1
        print(f"\n== {name}: NLL {nll:.3f}, trained in {train_s:.0f}s, evaluated in {eval_s:.0f}s\n{report}")
        rows.append(dict(
            variant=name, start=_STARTS[name], nll=nll, mmd_short=mmd_short, n_short=int(x_short.shape[0]),
            mmd_10=float(report.mmd_from_noise[1]), mmd_100=float(report.mmd_from_noise[2]),
            mmd_100_data=float(report.mmd_from_data[2]), drifts=report.drifts, score=report.drift_score,
            null=report.mmd_null_level, train_s=train_s,
        ))
        panels.append((name, model, nll, np.asarray(x_short), report))

    # ---- the table ----------------------------------------------------------------------
    true_nll = (-float(jnp.mean(eb.datasets.toy_log_prob(args.dataset, test)))
                if eb.datasets.has_log_prob(args.dataset) else float("nan"))
    lines = [
        f"Dataset {args.dataset}; MLPEnergy(2, 128, 2); {args.steps} updates of batch {args.batch_size}; "
        f"Langevin(step_size={args.step_size}), k = {k} steps per update; Adam({args.lr}); seed {args.seed}.",
        f"Squared MMD to {len(test)} held-out points, mixture of Gaussian kernels, bandwidths "
        f"{', '.join(f'{b:.2f}' for b in h)} (median distance {h_med:.2f} and fractions); "
        f"long-run chains: {args.num_chains} from a Gaussian fitted to the data.",
        "",
        f"| variant | chains start | test NLL (nats) | MMD² short-run ({k} steps) | MMD² long-run {f10 * k} "
        f"| MMD² long-run {f100 * k} | MMD² {f100 * k} from data | long-run verdict (score) | train s |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        verdict = "drifts" if r["drifts"] else "stable"
        lines.append(
            f"| {r['variant']} | {r['start']} | {r['nll']:.3f} | {r['mmd_short']:.4f} (n={r['n_short']}) | "
            f"{r['mmd_10']:.4f} | {r['mmd_100']:.4f} | {r['mmd_100_data']:.4f} | {verdict} ({r['score']:.1f}) | "
            f"{r['train_s']:.0f} |"
        )
    if np.isfinite(true_nll):
        lines.append(f"| true density | | {true_nll:.3f} | | | | | | |")
    if rows:
        lines.append("")
        lines.append(f"Data-vs-data MMD² noise level at {args.num_chains} samples (mean + 3 sd): "
                     f"{rows[0]['null']:.4f}.")
    table = "\n".join(lines)
    print("\n" + table)

    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, f"cd_vs_ml_{args.dataset}.md")
    with open(md, "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, f"cd_vs_ml_{args.dataset}.json"), "w") as f:
        json.dump({"settings": {k_: v for k_, v in vars(args).items()}, "true_nll": true_nll,
                   "rows": rows}, f, indent=1, default=float)

    # ---- the figure -----------------------------------------------------------------------
    png = os.path.join(args.out, f"cd_vs_ml_{args.dataset}.png")
    try:
        from declebm import plot

        fig, axs = plot.figure(len(panels), 4, size=2.6)
        for i, (name, model, nll, x_short, report) in enumerate(panels):
            plot.density(model, ax=axs[i, 0], resolution=size["resolution"], title=f"{name}: density, NLL {nll:.2f}")
            plot.samples(x_short, ax=axs[i, 1], title=f"training sampler ({k} steps)", color="C1")
            plot.samples(report.samples_from_noise[1], ax=axs[i, 2], title=f"long run {f10 * k} steps", color="C2")
            plot.samples(report.samples_from_noise[2], ax=axs[i, 3], title=f"long run {f100 * k} steps", color="C3")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        print(f"\nwrote {md} and {png}")
    except ImportError as e:
        print(f"no figure: {e}")
    return rows


if __name__ == "__main__":
    main()
