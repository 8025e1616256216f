"""Train an EBM on a 2-D toy, plot its density and samples, report the exact test NLL.

    python examples/toy2d.py --dataset 8gaussians --strategy pcd --steps 5000 --out out/
    python examples/toy2d.py --strategy nce --steps 20 --quick      # a smoke test in seconds

Runs unchanged on CPU or GPU. The exact NLL comes from grid quadrature (200x200 cells on
``grid_nll``'s default box: the test data's range, padded); where the toy has a closed-form
density the true density's NLL on the same test set is printed beside it (no model can beat
it). Writes ``OUT/toy2d_<dataset>_<strategy>.json`` (the numbers) and ``.png`` (data,
density on [-5, 5]^2, samples and the training curves of the metrics the strategy reports).
``--quick`` is a smoke test: 100 updates (unless ``--steps`` is given) and tiny data, grid
and sampling.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import optax

import declebm as eb
from declebm.inference import MALA, STRATEGY_NAMES, strategy_from_name
from declebm.models import MLPEnergy, NoiseConditionedMLPEnergy


# Sizes of everything but training: the protocol's, and the tiny ones of --quick.
FULL = dict(steps=5000, num_train=50_000, num_test=5_000, resolution=200, num_samples=2000, sample_steps=1000)
QUICK = dict(steps=100, num_train=2_000, num_test=500, resolution=40, num_samples=200, sample_steps=20)
# The training curves worth a look, by what the strategy reports (the first group present).
CURVES = (("energy_data", "energy_samples"), ("f_data", "f_samples"), ("accuracy",), ("score_sq_norm",), ("loss",))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="8gaussians", choices=eb.datasets.TOY_NAMES)
    ap.add_argument("--strategy", default="pcd", choices=STRATEGY_NAMES)
    ap.add_argument("--steps", type=int, help="parameter updates (5000; 100 with --quick)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", default="out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny data, grid and sampling (smoke test)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.steps is None:
        args.steps = size["steps"]

    key = jax.random.key(args.seed)
    k_data, k_test, k_model, k_fit, k_sample = jax.random.split(key, 5)
    data = eb.datasets.toy(args.dataset, size["num_train"], key=k_data)
    test = eb.datasets.toy(args.dataset, size["num_test"], key=k_test)
    strategy = strategy_from_name(args.strategy)
    # Strategies that learn a ladder of noise levels (recovery) say so with `level_model`:
    # they need an energy that takes the level, and their density is the level-0 model.
    ladder = hasattr(strategy, "level_model")
    energy_cls = NoiseConditionedMLPEnergy if ladder else MLPEnergy
    model = eb.EBM(energy_cls(in_size=2, width=128, depth=2, key=k_model))
    print(f"training {type(strategy).__name__} on {args.dataset} for {args.steps} steps "
          f"(batch {args.batch_size}) on {jax.devices()[0].platform}")

    t0 = time.perf_counter()
    result = eb.fit(model, data, strategy, optimizer=optax.adam(args.lr), num_steps=args.steps,
                    batch_size=args.batch_size, key=k_fit)
    train_s = time.perf_counter() - t0

    density, density_init = (strategy.level_model(result.model), strategy.level_model(model)) if ladder else (result.model, model)
    nll = float(eb.evaluate.grid_nll(density, test, resolution=size["resolution"]))
    # The untrained energy has no base, so its density does not decay and no box holds its
    # mass: its one defined score is the density truncated to the box, asked for as such.
    nll_init = float(eb.evaluate.grid_nll(density_init, test, resolution=size["resolution"], truncated=True))
    metrics = {"dataset": args.dataset, "strategy": args.strategy, "steps": args.steps,
               "train_seconds": round(train_s, 1), "test_nll": round(nll, 4), "test_nll_at_init": round(nll_init, 4)}
    if eb.datasets.has_log_prob(args.dataset):
        metrics["true_density_nll"] = round(-float(jnp.mean(eb.datasets.toy_log_prob(args.dataset, test))), 4)
        metrics["gap_to_true"] = round(nll - metrics["true_density_nll"], 4)

    # Samples of the learned density: long MALA chains from the Gaussian start.
    start = jnp.mean(data, 0) + jnp.std(data, 0) * jax.random.normal(k_sample, (size["num_samples"], 2))
    if ladder:  # progressive sampling down the ladder
        samples = strategy.sample(result.model, size["num_samples"], key=k_sample)
        how = f"progressive samples ({strategy.num_levels} levels x {strategy.langevin_steps} steps)"
    else:
        samples = eb.sample(result.model, MALA(step_size=0.05), init=start, num_steps=size["sample_steps"], key=k_sample)
        how = f"model samples ({size['sample_steps']} MALA steps)"
    metrics["samples"] = how
    metrics.update(eb.datasets.toy_sample_metrics(args.dataset, samples, test))

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, f"toy2d_{args.dataset}_{args.strategy}.png")
    try:
        from declebm import plot

        fig, axs = plot.figure(1, 4)
        plot.samples(test, ax=axs[0, 0], title=f"data ({args.dataset})")
        plot.density(density, ax=axs[0, 1], resolution=size["resolution"], title=f"learned density, NLL {nll:.3f}")
        plot.samples(samples, ax=axs[0, 2], title=how, color="C1")
        curves = next(keys for keys in CURVES if all(k in result.history for k in keys))
        plot.curves(result.history, curves, ax=axs[0, 3], title="training")
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        metrics["figure"] = png
    except ImportError as e:
        print(f"no figure: {e}")
    with open(os.path.join(args.out, f"toy2d_{args.dataset}_{args.strategy}.json"), "w") as f:
        json.dump(metrics, f, indent=1)

    print("\n| metric | value |\n|---|---|")
    for k, v in metrics.items():
        print(f"| {k} | {v} |")
    return metrics


if __name__ == "__main__":
    main()
