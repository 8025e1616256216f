"""Image EBMs end to end with the papers' recipes: train, sample, and judge the samples by the
Fréchet and kernel distances in a classifier's features, with an AIS bits/dim figure.

    python examples/images.py --strategy shortrun replay dsm recovery particles --out out/images   # digits, CPU
    python examples/images.py --dataset mnist --data-dir ~/data/mnist --strategy recovery --out out/mnist
    python examples/images.py --dataset cifar10 --data-dir ~/data --strategy replay --energy resnet   # a GPU

Datasets: ``digits`` (scikit-learn's bundled 8x8 digits, ``(n, 1, 8, 8)``, 17 pixel levels;
the CPU default), ``mnist`` and ``fashion_mnist`` (the IDX files in ``--data-dir``,
``(n, 1, 28, 28)``), ``cifar10`` (``--data-dir/cifar-10-batches-py``, ``(n, 3, 32, 32)``):
nothing is downloaded. Pixels are dequantised into ``[0, 1)``.

Recipes (``--strategy``), each following its paper's constants in declebm's Langevin
convention ``x' = x + (eps/2) grad log p~ + noise_scale z`` (``Langevin(eps, noise_scale)``):

- ``shortrun``: short-run ML from fresh uniform noise (Nijkamp et al. 2019) with JEM's SGLD
  (Grathwohl et al. 2019): step 1 on the gradient (``eps = 2``), noise 0.01, 20 steps; Adam
  1e-4.
- ``replay``: replay-buffer ML as IGEBM (Du & Mordatch 2019): step 10 on the gradient
  (``eps = 20``), noise 0.005, 60 steps, a buffer of 10^4 with 5% re-initialised from
  uniform noise, the energy-magnitude regulariser (alpha 1), spectral norm; Adam 1e-4.
- ``dsm``: multi-level denoising score matching and annealed Langevin sampling (NCSN, Song &
  Ermon 2019): 10 levels from 1 to 0.01, weight sigma^2; sampling 100 steps per level at
  ``eps sigma_i^2 / sigma_L^2``, ``eps = 2e-5``; Adam 1e-3.
- ``recovery``: diffusion recovery likelihood with the code's image constants (Gao et al.
  2021): T = 6, K = 30, b^2 = 2e-4, images in [-1, 1], EMA 0.999, Adam 1e-4 after 1000
  warm-up steps; samples from the EMA model, progressive from N(0, I).
- ``particles``: particle dynamics with the MNIST protocol of its code (Neklyudov et al.
  2021): variant beta, transport then 30 ULA steps at dt 1 (noise sqrt(dt) = 1), 128
  particles, Adam 1e-4 with betas (0, 0.999), batch 128, a conv net without spectral norm
  (its ``MNISTSmallConvNet``); its samples are the particles, each continued by 30
  correction steps.

On the digits, for 2000 CPU steps, recovery likelihood and particle dynamics depart from
these constants where a measurement said so (``DIGITS`` says which and why). ``--energy conv`` (the default: ``ConvEnergy`` and
``NoiseConditionedConvEnergy``), ``resnet`` (``ResNetEnergy``, IGEBM's; and
``NoiseConditionedResNetEnergy``, the recovery code's) or ``mlp`` (``MLPEnergy`` on the
flattened image, the baseline).

Judging the samples: a small conv classifier is trained on the training images and labels
(``evaluate.classifier_features``); the Fréchet distance and the kernel distance (KID's
cubic kernel) between the features of ``--num-samples`` samples and of the held-out images
("FD/KD with a classifier trained on the data", not FID: no Inception weights), beside two
references: held-out images against training images, and a Gaussian fitted to the training
images. How often the classifier is sure (p > 0.9) of a sample tells whether it looks like a
digit. The test log-likelihood comes from AIS (``--ais-steps`` temperatures, 0 to skip) as
bits per dimension (``evaluate.bits_per_dim``, with the [-1, 1] correction for recovery),
with AIS's reliability verdict. Writes ``OUT/images_<dataset>_<strategy>_<energy>.png``
(samples beside held-out images) and ``.json`` for each run, and
``OUT/images_<dataset>_table.md``; checkpoints go to ``OUT/checkpoints/`` (``--resume``
continues them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import declebm as eb
from declebm.inference import (
    AIS,
    AnnealedLangevin,
    DenoisingScoreMatching,
    DiffusionRecoveryLikelihood,
    Langevin,
    ParticleDynamics,
    ReplayBufferML,
    ShortRunML,
)
from declebm.models import (
    ConvEnergy,
    MLPEnergy,
    NoiseConditionedConvEnergy,
    NoiseConditionedMLPEnergy,
    NoiseConditionedResNetEnergy,
    ResNetEnergy,
)

NAMES = ("shortrun", "replay", "dsm", "recovery", "particles")
ENERGIES = ("conv", "mlp", "resnet")
DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10")
NCSN_SIGMAS = tuple(float(s) for s in np.geomspace(1.0, 0.01, 10))


class Recipe(NamedTuple):
    """One paper's recipe: the strategy, its optimizer, EMA, the pixel range the model sees,
    whether the energy takes a noise level, and how samples are drawn."""

    strategy: Any
    learning_rate: float
    adam_b1: float = 0.9
    warmup: int = 0
    ema: float | None = None
    symmetric: bool = False  # images in [-1, 1] (recovery) instead of [0, 1)
    noise_conditioned: bool = False
    spectral_norm: bool = False


def recipes(dataset: str) -> dict[str, Recipe]:
    """The papers' constants (module docstring), with the digits' measured departures."""
    digits = dataset == "digits"
    return {
        "shortrun": Recipe(ShortRunML(Langevin(2.0, noise_scale=0.01), steps=20, noise="uniform"),
                           learning_rate=1e-4),
        "replay": Recipe(ReplayBufferML(Langevin(20.0, noise_scale=0.005), steps=60, noise="uniform",
                                        buffer_size=10_000, reinit_prob=0.05, energy_reg=1.0),
                         learning_rate=1e-4, spectral_norm=True),
        "dsm": Recipe(DenoisingScoreMatching(sigmas=NCSN_SIGMAS), learning_rate=1e-3, noise_conditioned=True),
        "recovery": Recipe(DiffusionRecoveryLikelihood(step_size_constant=DIGITS["recovery_b2"] if digits else 2e-4),
                           learning_rate=DIGITS["recovery_lr"] if digits else 1e-4, warmup=0 if digits else 1000,
                           ema=0.999, symmetric=True, noise_conditioned=True),
        "particles": Recipe(ParticleDynamics("beta", num_particles=128, correction_steps=30, init_steps=0,
                                             correction_step_size=DIGITS["particles_dt"] if digits else 1.0),
                            learning_rate=1e-4, adam_b1=0.0),
    }


# The digits' departures from the papers, for a CPU budget of 2000 steps (measured with this
# script, seed 0; README "Images"): recovery likelihood with b^2 = 5e-3 and Adam 1e-3 without
# warm-up, as examples/recovery_digits.py (in so few steps the code's b^2 = 2e-4 barely moves the
# level-0 chains); particle dynamics' correction at dt 1e-2 (noise 0.1, the code's toy setting):
# at dt 1 with noise 1 the particles, random-walking by 1 per pixel per step, stay off the images
# (after 300 updates each 30-step correction still moved them by 18-26, about 3 per pixel of a
# [0, 1) image), and with Adam 1e-3 their energies grew to 2.6e8 by update 100 (the guard stopped it).
DIGITS = dict(recovery_b2=5e-3, recovery_lr=1e-3, particles_dt=1e-2)


class DatasetConfig(NamedTuple):
    """A dataset's image shape, pixel levels, CPU/GPU-sized defaults and network sizes."""

    shape: tuple[int, int, int]
    levels: int
    steps: int
    batch_size: int
    num_samples: int
    conv: tuple[int, ...]
    resnet: dict
    nc_resnet: dict
    classifier_steps: int


DATASETS = {
    "digits": DatasetConfig((1, 8, 8), 17, 2000, 128, 500, (32, 64, 64),
                            dict(channels=(32, 64), downsample=(True, False)),
                            dict(width=32, channel_multipliers=(1, 2), blocks_per_level=1), 1000),
    "mnist": DatasetConfig((1, 28, 28), 256, 20_000, 128, 2000, (64, 128, 256),
                           dict(channels=(64, 64, 128, 128), downsample=(True, False, True, False)),
                           dict(width=64, channel_multipliers=(1, 2, 2)), 3000),
    "cifar10": DatasetConfig((3, 32, 32), 256, 50_000, 128, 2000, (64, 128, 256), dict(), dict(width=128), 5000),
}
DATASETS["fashion_mnist"] = DATASETS["mnist"]

# --quick: a smoke run of every part at tiny sizes, AIS left out unless --ais-steps is given; an
# option given explicitly wins.
QUICK = dict(steps=5, batch_size=16, num_samples=16, ais_chains=16, ais_steps=0, classifier_steps=20)
DEFAULTS = dict(ais_chains=256, ais_steps=1000)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="digits", choices=DATASET_NAMES, help="the images (digits: embedded)")
    ap.add_argument("--data-dir", help="the folder with the dataset's standard files (not for digits)")
    ap.add_argument("--strategy", default=["recovery"], nargs="+", choices=NAMES, metavar="NAME",
                    help=f"one or more of {', '.join(NAMES)} (recovery)")
    ap.add_argument("--energy", default="conv", choices=ENERGIES,
                    help="conv (ConvEnergy), resnet (ResNetEnergy / NoiseConditionedResNetEnergy) or mlp (baseline)")
    ap.add_argument("--steps", type=int, help="parameter updates (digits 2000, MNIST 20000, CIFAR-10 50000; --quick 5)")
    ap.add_argument("--batch-size", type=int, help="examples per update (128; --quick 16)")
    ap.add_argument("--num-samples", type=int, help="samples judged (digits 500, else 2000; --quick 16)")
    ap.add_argument("--ais-chains", type=int, help="AIS chains (256; --quick 16)")
    ap.add_argument("--ais-steps", type=int, help="AIS temperatures, 0 to skip the log-likelihood (1000; --quick 0)")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoints in OUT/checkpoints")
    ap.add_argument("--out", default="out/images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny everything (a smoke run)")
    return ap


def settings(args) -> dict:
    cfg = DATASETS[args.dataset]
    preset = dict(steps=cfg.steps, batch_size=cfg.batch_size, num_samples=cfg.num_samples,
                  classifier_steps=cfg.classifier_steps, **DEFAULTS)
    if args.quick:
        preset.update(QUICK)
    return {k: (getattr(args, k) if getattr(args, k, None) is not None else v) for k, v in preset.items()}


def load_images(args, key) -> dict:
    """Training and held-out images ``(n, C, H, W)`` in [0, 1) with their labels."""
    if args.dataset == "digits":
        if args.data_dir is not None:
            raise SystemExit("--data-dir: the digits are embedded; the option is for mnist, fashion_mnist, cifar10")
        x_train, x_test, y_train, y_test = eb.datasets.digits(key=key, with_labels=True)
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    else:
        if args.data_dir is None:
            raise SystemExit(f"--data-dir: {args.dataset} is read from its standard files in a folder you name")
        loader = getattr(eb.datasets, args.dataset)
        k_train, k_test = jax.random.split(key)
        x_train, y_train = loader(args.data_dir, split="train", key=k_train, with_labels=True)
        x_test, y_test = loader(args.data_dir, split="test", key=k_test, with_labels=True)
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:256], y_train[:256], x_test[:64], y_test[:64]
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def build_energy(kind: str, cfg: DatasetConfig, recipe: Recipe, key, quick: bool):
    """The network: on the image ``(C, H, W)`` for conv/resnet, on its flattening for mlp."""
    shape, dim = cfg.shape, math.prod(cfg.shape)
    if kind == "mlp":
        width = 16 if quick else 256
        if recipe.noise_conditioned:
            return NoiseConditionedMLPEnergy(dim, width=width, depth=2, default_sigma=_smallest_sigma(recipe), key=key)
        return MLPEnergy(dim, width=width, depth=2, key=key)
    if kind == "conv":
        channels = (4, 8) if quick else cfg.conv
        if recipe.noise_conditioned:
            return NoiseConditionedConvEnergy(shape, channels=channels, spectral_norm=recipe.spectral_norm,
                                              default_sigma=_smallest_sigma(recipe), key=key)
        return ConvEnergy(shape, channels=channels, spectral_norm=recipe.spectral_norm, key=key)
    if recipe.noise_conditioned:
        sizes = dict(cfg.nc_resnet, width=4) if quick else cfg.nc_resnet
        return NoiseConditionedResNetEnergy(shape, spectral_norm=recipe.spectral_norm,
                                            default_sigma=_smallest_sigma(recipe),
                                            divide_by_sigma=isinstance(recipe.strategy, DenoisingScoreMatching),
                                            **sizes, key=key)
    sizes = cfg.resnet
    if quick:  # the first two blocks of the dataset's residual net, 4 channels each
        down = tuple(cfg.resnet.get("downsample", (True, False, True, False, True, False)))[:2]
        sizes = dict(channels=(4,) * len(down), downsample=down)
    return ResNetEnergy(shape, spectral_norm=recipe.spectral_norm, **sizes, key=key)


def _smallest_sigma(recipe: Recipe) -> float:
    s = recipe.strategy
    if isinstance(s, DenoisingScoreMatching):
        return float(jnp.min(s.sigmas))
    return float(s.schedule.sigma[1])  # recovery: the level-0 conditional's sigma_1


def draw_samples(name: str, recipe: Recipe, result, model, n: int, key, x_like, quick: bool) -> jax.Array:
    """``n`` samples in the model's space, drawn as each paper draws them."""
    st = recipe.strategy
    k_init, k_run = jax.random.split(key)
    uniform = jax.random.uniform(k_init, (n,) + x_like.shape[1:], x_like.dtype)
    if name == "shortrun":  # the k-step chains from fresh noise the model was trained with
        return eb.sample(model, st.sampler, num_steps=st.steps, init=uniform, key=k_run)
    if name == "replay":  # IGEBM: chains from the buffer, continued for one more run of steps
        buffer = result.state.chains
        idx = jax.random.randint(k_init, (n,), 0, buffer.shape[0])
        return eb.sample(model, st.sampler, num_steps=st.steps, init=buffer[idx], key=k_run)
    if name == "dsm":
        sampler = AnnealedLangevin(NCSN_SIGMAS, step_size=2e-5, steps_per_level=100)
        return eb.sample(model, sampler, num_steps=sampler.num_steps, init=uniform, key=k_run)
    if name == "recovery":
        return st.sample(model, n, key=k_run, num_steps=3 if quick else None)  # K = 30 per level, as trained
    particles = result.state.particles  # particle dynamics: the particles, each continued
    idx = jnp.arange(n) % particles.shape[0]
    return eb.sample(model, st.correction_sampler, num_steps=st.correction_steps, init=particles[idx], key=k_run)


def gaussian_images(x_train, n: int, key) -> jax.Array:
    """Draws of a full-covariance Gaussian fitted to the training images (a reference row)."""
    flat = np.asarray(x_train, np.float64).reshape(x_train.shape[0], -1)
    cov = np.cov(flat.T) + 1e-6 * np.eye(flat.shape[1])
    z = np.asarray(jax.random.normal(key, (n, flat.shape[1])), np.float64)
    draws = flat.mean(0) + z @ np.linalg.cholesky(cov).T
    return jnp.asarray(draws.reshape((n,) + x_train.shape[1:]), jnp.float32)


def sample_metrics(samples, x_test, features, key) -> dict:
    """FD and KD in the classifier's features against the held-out images, how sure the
    classifier is of the samples, and the classes it sees."""
    if samples is None or not bool(jnp.all(jnp.isfinite(jnp.asarray(samples)))):  # none drawn, or non-finite
        return dict(fd=math.nan, kd=math.nan, kd_std=math.nan, sure=math.nan, classes=[], finite=False)
    samples = jnp.clip(jnp.asarray(samples, jnp.float32), 0.0, 1.0)  # the pixel range, as saving them as images would
    subset = min(int(samples.shape[0]), int(x_test.shape[0]), 1000)
    kd = eb.evaluate.kernel_distance(samples, x_test, features=features, subset_size=subset, num_subsets=50, key=key)
    p = np.asarray(features.probabilities(samples))
    return dict(fd=float(eb.evaluate.frechet_distance(samples, x_test, features=features)),
                kd=float(kd.mean), kd_std=float(kd.std), sure=float(np.mean(p.max(1) > 0.9)),
                classes=np.bincount(p.argmax(1), minlength=p.shape[1]).tolist(), finite=True)


def run(args, name: str, data: dict, features, s: dict) -> dict:
    cfg = DATASETS[args.dataset]
    recipe = recipes(args.dataset)[name]
    st = recipe.strategy
    k_model, k_fit, k_sample, k_metrics, k_ais = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), 1), 5)
    x_train, x_test = data["x_train"], data["x_test"]
    log_det = 0.0
    if recipe.symmetric:
        (x_train, _), (x_test, log_det) = eb.datasets.to_symmetric_range(x_train), eb.datasets.to_symmetric_range(x_test)
    flat = args.energy == "mlp"
    to_model = (lambda x: x.reshape(x.shape[0], -1)) if flat else (lambda x: x)
    to_image = lambda x: x.reshape((x.shape[0],) + cfg.shape)  # noqa: E731
    energy = build_energy(args.energy, cfg, recipe, k_model, args.quick)
    model = eb.EBM(energy, event_shape=(math.prod(cfg.shape),) if flat else cfg.shape)

    schedule: Any = recipe.learning_rate
    if recipe.warmup:
        schedule = optax.linear_schedule(0.0, recipe.learning_rate, recipe.warmup)
    optimizer = optax.adam(schedule, b1=recipe.adam_b1)
    tag = f"{args.dataset}_{name}_{args.energy}"
    ckpt = os.path.join(args.out, "checkpoints", tag)
    if not args.resume and os.path.isdir(ckpt) and any(n.startswith("step-") for n in os.listdir(ckpt)):
        raise SystemExit(f"--resume: {ckpt} holds the checkpoints of an earlier run; pass --resume to continue it "
                         f"(with the same options), or name another --out")
    print(f"== {tag}: {st}", flush=True)
    t0 = time.perf_counter()
    note = ""
    result = None
    try:
        result = eb.fit(model, to_model(x_train), st, optimizer=optimizer, num_steps=s["steps"],
                        batch_size=s["batch_size"], key=k_fit, ema_decay=recipe.ema, progress=True,
                        checkpoint_dir=ckpt, checkpoint_every=max(s["steps"] // 10, 1), resume=args.resume)
        trained = result.ema_model if recipe.ema else result.model
        note = "" if result.resumed_from is None else f"resumed from step {result.resumed_from}"
    except eb.TrainingDivergedError as err:
        trained, note = err.model, f"diverged at step {err.step + 1}: the last healthy model is judged"
        print(note, flush=True)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if result is None and name in ("replay", "particles"):
        samples = None  # the buffer or particles of a diverged run are gone with it
    else:
        samples = draw_samples(name, recipe, result, trained, s["num_samples"], k_sample, to_model(x_train), args.quick)
    sample_s = time.perf_counter() - t0
    if samples is not None:
        samples = to_image(samples)
        if recipe.symmetric:
            samples = eb.datasets.from_symmetric_range(samples)[0]
    metrics = sample_metrics(samples, data["x_test"], features, k_metrics)

    if s["ais_steps"] > 0:
        density = st.level_model(trained, 0) if name == "recovery" else trained
        t1 = time.perf_counter()
        est = eb.evaluate.log_likelihood(density, to_model(x_test),
                                         AIS(num_chains=s["ais_chains"], num_steps=s["ais_steps"]), key=k_ais)
        bpd = eb.evaluate.bits_per_dim(est, cfg.shape, levels=cfg.levels, log_det=log_det)
        metrics.update(ais_seconds=round(time.perf_counter() - t1, 1), bits_per_dim=bpd.bits_per_dim,
                       bits_per_dim_stderr=bpd.stderr, ais_reliable=bpd.reliable,
                       ais_ess=float(est.log_z.ess), ais_warnings=list(est.warnings))

    os.makedirs(args.out, exist_ok=True)
    record = dict(dataset=args.dataset, strategy=name, energy=args.energy, recipe=repr(st), steps=s["steps"],
                  batch_size=s["batch_size"], learning_rate=recipe.learning_rate, ema=recipe.ema, note=note,
                  train_seconds=round(train_s, 1), sample_seconds=round(sample_s, 1),
                  num_samples=s["num_samples"], ais_chains=s["ais_chains"], ais_steps=s["ais_steps"], **metrics)
    if samples is not None:
        record["figure"] = save_figure(os.path.join(args.out, f"images_{tag}.png"), samples, data["x_test"],
                                       f"{name} ({args.energy})")
    with open(os.path.join(args.out, f"images_{tag}.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps({k: v for k, v in record.items() if k != "classes"}), flush=True)
    return record


def save_figure(path: str, samples, x_test, title: str) -> str | None:
    try:
        from declebm import plot
    except ImportError:
        return None
    try:
        fig, axs = plot.figure(1, 2, size=4.0)
    except ImportError as e:
        print(f"no figure: {e}")
        return None
    n = min(64, samples.shape[0], x_test.shape[0])
    plot.images(jnp.clip(samples[:n], 0.0, 1.0), ax=axs[0, 0], title=f"samples: {title}")
    plot.images(x_test[:n], ax=axs[0, 1], title="held-out images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def references(data: dict, features, s: dict, key) -> dict:
    """The two reference rows: held-out images against as many training images, and a
    Gaussian fitted to the training images."""
    k_pick, k_gauss, k_1, k_2 = jax.random.split(key, 4)
    n = min(s["num_samples"], data["x_train"].shape[0])
    train_pick = data["x_train"][jax.random.choice(k_pick, data["x_train"].shape[0], (n,), replace=False)]
    return {"training images": sample_metrics(train_pick, data["x_test"], features, k_1),
            "Gaussian fitted to the training images": sample_metrics(
                gaussian_images(data["x_train"], n, k_gauss), data["x_test"], features, k_2)}


def table(args, refs: dict, rows: list[dict], accuracy: float) -> str:
    def num(v, spec):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)

    lines = [f"# Images: {args.dataset}", "",
             f"Command: `python examples/images.py {' '.join(args.argv)}`", "",
             f"FD and KD with a classifier trained on the data (held-out accuracy {accuracy:.3f}), "
             f"samples against the held-out images; sure: the classifier's p > 0.9; bits/dim from AIS "
             f"(lower is better).", "",
             "| model | energy | FD | KD ± std over subsets | sure | bits/dim (AIS) | reliable | train s |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for name, m in refs.items():
        lines.append(f"| {name} (reference) | | {num(m['fd'], '.1f')} | {num(m['kd'], '.3g')} ± "
                     f"{num(m['kd_std'], '.2g')} | {num(m['sure'], '.3f')} | | | |")
    for r in rows:
        bpd = (f"{num(r['bits_per_dim'], '.3f')} ± {num(r['bits_per_dim_stderr'], '.3f')}"
               if "bits_per_dim" in r else "")
        label = r["strategy"] + (" (diverged)" if r["note"].startswith("diverged") else "")
        lines.append(f"| {label} | {r['energy']} | {num(r['fd'], '.1f')} | {num(r['kd'], '.3g')} ± "
                     f"{num(r['kd_std'], '.2g')} | {num(r['sure'], '.3f')} | {bpd} | "
                     f"{r.get('ais_reliable', '')} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import sys

    ap = build_parser()
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    s = settings(args)
    for k in ("steps", "batch_size", "num_samples", "ais_chains"):
        if s[k] < 1:
            ap.error(f"--{k.replace('_', '-')}: expected a positive number, got {s[k]}")
    if s["ais_steps"] < 0:
        ap.error(f"--ais-steps: expected 0 (skip) or more, got {s['ais_steps']}")
    k_data, k_features, k_refs = jax.random.split(jax.random.key(args.seed), 3)
    data = load_images(args, k_data)
    print(f"{args.dataset}: {data['x_train'].shape[0]} training and {data['x_test'].shape[0]} held-out images of "
          f"shape {tuple(data['x_train'].shape[1:])}, on {jax.devices()[0].platform}", flush=True)
    features = eb.evaluate.classifier_features(data["x_train"], data["y_train"], key=k_features,
                                               num_steps=s["classifier_steps"])
    print(f"classifier for the features: held-out accuracy {features.accuracy:.3f}", flush=True)
    refs = references(data, features, s, k_refs)
    rows = [run(args, name, data, features, s) for name in args.strategy]
    text = table(args, refs, rows, features.accuracy)
    with open(os.path.join(args.out, f"images_{args.dataset}_table.md"), "w") as f:
        f.write(text)
    print(text)
    return dict(references=refs, runs=rows)


if __name__ == "__main__":
    main()
