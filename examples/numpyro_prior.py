"""An EBM learned on 2-D data as the prior of a NumPyro model, sampled with NumPyro's NUTS.

    python examples/numpyro_prior.py                          # DSM prior on 8gaussians
    python examples/numpyro_prior.py --strategy pcd --obs 0 2.5 --noise 0.5

1. Train ``EBM(MLPEnergy(2, 128, 2))`` on 8gaussians with ``--strategy``.
2. Make it a NumPyro distribution, ``declebm.EBMDistribution(model, log_z=...)``, with
   ``log Z`` exact from a grid (``evaluate.grid_log_z``; in more dimensions use
   ``EBMDistribution.from_estimate(model, AIS(...), key=...)``).
3. Condition on one noisy observation ``y = x + N(0, noise^2 I)`` in a NumPyro model::

       def model(prior, y):  # prior = EBMDistribution(ebm, log_z=log_z)
           x = numpyro.sample("x", prior)
           numpyro.sample("y", dist.Normal(x, noise).to_event(1), obs=y)

   and sample ``p(x | y)`` with ``numpyro.infer.NUTS`` (several chains, vectorised).
   The prior is an argument of the model, not a constant inside it, and
   ``MCMC(..., jit_model_args=True)`` compiles NUTS as a function of it: another
   trained EBM of the same architecture reuses the compiled sampler.
4. Check NUTS against the exact posterior on a grid (prior density times likelihood,
   normalised) and plot the prior, the observation and the posterior draws
   (``OUT/numpyro_prior_<strategy>.png``); the numbers go to ``OUT/numpyro_prior_<strategy>.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS

import declebm as eb
from declebm.inference import STRATEGY_NAMES, strategy_from_name
from declebm.models import MLPEnergy

# Strategies whose default configuration trains this 2-D prior (the toy defaults).
NAMES = tuple(n for n in STRATEGY_NAMES if n in ("cd", "pcd", "shortrun", "replay", "esm", "dsm", "ssm", "nce"))
DEFAULTS = dict(steps=2000, num_samples=1000, num_chains=4, width=128)
QUICK = dict(steps=5, num_samples=50, num_chains=2, width=16)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategy", default="dsm", choices=NAMES)
    ap.add_argument("--steps", type=int, help=f"parameter updates ({DEFAULTS['steps']})")
    ap.add_argument("--width", type=int, help=f"hidden units of the MLP ({DEFAULTS['width']})")
    ap.add_argument("--obs", type=float, nargs=2, default=(1.5, 1.5), metavar=("Y1", "Y2"),
                    help="the noisy observation y")
    ap.add_argument("--noise", type=float, default=1.0, help="observation noise standard deviation")
    ap.add_argument("--num-samples", type=int, help=f"NUTS draws per chain ({DEFAULTS['num_samples']})")
    ap.add_argument("--num-chains", type=int, help=f"NUTS chains ({DEFAULTS['num_chains']})")
    ap.add_argument("--quick", action="store_true", help="tiny everything (smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/numpyro_prior")
    return ap


def settings(args) -> dict:
    preset = QUICK if args.quick else DEFAULTS
    return {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in preset.items()}


def posterior_model(noise: float):
    def model(prior: eb.EBMDistribution, y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, noise).to_event(1), obs=y)

    return model


def grid_posterior(model: eb.EBM, y, noise: float, resolution: int = 300):
    """The exact posterior on a grid over [-5, 5]^2 (prior density times likelihood,
    normalised): its mean and the grid of probabilities, ``[i, j]`` at ``(x_i, y_j)``."""
    (gx, gy), log_prior = eb.evaluate.grid_log_prob(model, bounds=(-5.0, 5.0), resolution=resolution)
    xx, yy = jnp.meshgrid(gx, gy, indexing="ij")
    log_post = log_prior + dist.Normal(jnp.stack([xx, yy], -1), noise).log_prob(jnp.asarray(y)).sum(-1)
    w = jax.nn.softmax(log_post.reshape(-1)).reshape(log_post.shape)
    return np.array([float(jnp.sum(w * xx)), float(jnp.sum(w * yy))]), np.asarray(w)


def run(args) -> dict:
    s = settings(args)
    key = jax.random.key(args.seed)
    k_data, k_model, k_fit, k_nuts = jax.random.split(key, 4)
    data = eb.datasets.toy("8gaussians", 20_000, key=k_data)
    model = eb.EBM(MLPEnergy(2, s["width"], 2, key=k_model))
    result = eb.fit(model, data, strategy_from_name(args.strategy), optimizer=optax.adam(2e-3),
                    num_steps=s["steps"], batch_size=256, key=k_fit)
    model = result.model

    log_z = eb.evaluate.grid_log_z(model)
    prior = eb.EBMDistribution(model, log_z=log_z)
    y = jnp.asarray(args.obs, jnp.float32)
    mcmc = MCMC(NUTS(posterior_model(args.noise)), num_warmup=s["num_samples"], num_samples=s["num_samples"],
                num_chains=s["num_chains"], chain_method="vectorized", progress_bar=False, jit_model_args=True)
    mcmc.run(k_nuts, prior, y)
    x = np.asarray(mcmc.get_samples()["x"])
    grid_mean, grid = grid_posterior(model, y, args.noise)
    return dict(model=model, data=data, y=np.asarray(y), samples=x, nuts_mean=x.mean(0),
                grid_mean=grid_mean, grid=grid, log_z=float(log_z), settings=s)


def figure(r: dict, args, path: str) -> None:
    import declebm.plot as ebplot

    fig, axs = ebplot.figure(1, 2, size=4.0)
    ebplot.density(r["model"], ax=axs[0, 0], title=f"EBM prior ({args.strategy})")
    ax = axs[0, 1]
    ax.imshow(r["grid"].T, origin="lower", extent=(-5, 5, -5, 5), cmap="viridis")
    ax.set_title(f"posterior given y (noise {args.noise:g}): exact, and NUTS draws", fontsize=9)
    ebplot.samples(r["samples"], ax=ax, color="C1", s=1.0)
    ax.scatter(*r["y"], marker="x", color="red", s=60, label="y")
    ax.scatter(*r["grid_mean"], marker="+", color="white", s=80, label="exact posterior mean")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    r = run(args)
    print(f"log Z (grid) {r['log_z']:.3f}; observation y = {r['y']}, noise {args.noise:g}")
    print(f"posterior mean: NUTS {np.round(r['nuts_mean'], 3)}, exact (grid) {np.round(r['grid_mean'], 3)}")
    numbers = dict(strategy=args.strategy, log_z=r["log_z"], observation=r["y"].tolist(), noise=args.noise,
                   nuts_mean=r["nuts_mean"].tolist(), grid_mean=r["grid_mean"].tolist(),
                   mean_error=float(np.linalg.norm(r["nuts_mean"] - r["grid_mean"])), settings=r["settings"])
    with open(os.path.join(args.out, f"numpyro_prior_{args.strategy}.json"), "w") as f:
        json.dump(numbers, f, indent=1)
    path = os.path.join(args.out, f"numpyro_prior_{args.strategy}.png")
    figure(r, args, path)
    print(f"wrote {path}")
    return r


if __name__ == "__main__":
    main()
