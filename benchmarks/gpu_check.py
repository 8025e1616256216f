"""GPU check: ms/iteration and achieved FLOP/s of declebm's image and MLP training at GPU
sizes, and a few hundred steps of every image training recipe on full-size synthetic data.
Run by `benchmarks/gpu_check.sh` (which installs the carried wheels first); in one process,
at most `--budget` seconds (default 420: the whole script fits 8 minutes on one GPU), then
the remaining sections are skipped with a note.

1. Image rows: 32x32x3, `ConvEnergy(channels=(128, 128, 128))` (`NoiseConditionedConvEnergy`
   for recovery), batch 128 and 256: short-run ML (K = 20, 60; Langevin 1e-3 from uniform
   noise), one diffusion recovery likelihood step (K = 30), DSM (sigma 0.1); Adam 1e-4.
   ms/iteration is the median over `fit` chunks after the first (which holds compilation;
   `divergence_guard=None`); FLOPs/iteration as in `bench_images.py`, XLA's
   `cost_analysis()` of fit's chunk plus (K - 1) jitted Langevin steps (XLA counts a loop
   body once), here of the lowered programs, which costs no second compilation.
2. The MLP peer protocol (`bench_fit.py`'s: 8gaussians, PCD with 20 Langevin steps of 0.01,
   Adam 1e-3) at width 512 (`MLPEnergy(2, 512, 2)`) with 4096 chains and batch 4096, beside
   `bench_fit.py`'s hand-written jit+scan loop.
3. Recipes, `--steps` updates each (default 300; batch 128) on synthetic uniform arrays of
   full size, MNIST (60000 x 1x28x28) and CIFAR-10 (50000 x 3x32x32): short-run ML, replay
   buffer ML, DSM, diffusion recovery likelihood, particle dynamics (alpha) with
   `ConvEnergy(channels=(32, 64, 128))`; wall time, ms/step after the first chunk, last loss.

    bash benchmarks/gpu_check.sh            # on the GPU machine; writes benchmarks/RESULTS_gpu.md
    python benchmarks/gpu_check.py --quick  # CPU smoke run: tiny sizes, a few steps
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import optax  # noqa: E402

import declebm as eb  # noqa: E402
from declebm import inference, models  # noqa: E402

from bench_images import _cost_flops, _langevin_step_fn, recorded_chunk  # noqa: E402

FULL = dict(
    image_shape=(3, 32, 32), image_channels=(128, 128, 128), image_batches=(128, 256), image_examples=4096,
    image_rows=(("shortrun", 20, (128, 256)), ("shortrun", 60, (256,)), ("recovery", 30, (128, 256)),
                ("dsm", 0, (128, 256))),
    mlp_width=512, mlp_chains=4096, mlp_batch=4096, mlp_chunk=50, mlp_chunks=6,
    recipe_shapes=(("MNIST", (1, 28, 28), 60000), ("CIFAR-10", (3, 32, 32), 50000)),
    recipe_channels=(32, 64, 128), recipe_batch=128, recipe_chunk=50, image_chunk=5, image_seconds=3.0,
)
QUICK = dict(
    # one conv layer of 4 channels: every row and recipe still runs, each compiles in a fraction
    image_shape=(1, 8, 8), image_channels=(4,), image_batches=(8,), image_examples=64,
    image_rows=(("shortrun", 2, (8,)), ("recovery", 2, (8,)), ("dsm", 0, (8,))),
    mlp_width=16, mlp_chains=64, mlp_batch=64, mlp_chunk=2, mlp_chunks=2,
    recipe_shapes=(("tiny", (3, 8, 8), 64),),
    recipe_channels=(4,), recipe_batch=8, recipe_chunk=1, image_chunk=1, image_seconds=0.1,
)


def timed_fit(model, data, strategy, *, steps, batch, chunk, optimizer, key, seconds=None, min_chunks=2,
              guard=None, flops_row=None):
    """``fit`` in chunks; returns ms/step (median over chunks after the first), the first
    chunk's wall time, the last loss and, with ``flops_row``, FLOPs per step."""
    stamps, losses = [], []

    def cb(step, metrics, model):
        stamps.append(time.perf_counter())
        losses.append(metrics.get("loss", float("nan")))
        n = len(stamps) - 1
        return seconds is not None and n >= min_chunks and stamps[-1] - stamps[0] >= seconds

    kwargs = {} if guard == "default" else {"divergence_guard": guard}
    t = time.perf_counter()
    with recorded_chunk() as captured:
        eb.fit(model, data, strategy, optimizer=optimizer, num_steps=steps, batch_size=batch, chunk_size=chunk,
               key=key, progress=False, callbacks=[cb], **kwargs)
    wall = time.perf_counter() - t
    per_step = [(b - a) / chunk * 1e3 for a, b in zip(stamps, stamps[1:])]
    out = {"ms": statistics.median(per_step) if per_step else float("nan"), "first_s": stamps[0] - t,
           "wall_s": wall, "loss": losses[-1], "steps": len(stamps) * chunk}
    if flops_row is not None:
        chunk_flops = captured["flops"]()  # no second compilation
        step_flops = 0.0
        if flops_row["K"] > 1:
            fn, args = _langevin_step_fn(flops_row, model, data, strategy, key)
            step_flops = _cost_flops(fn.lower(*args).lowered)
        out["flops"] = chunk_flops + max(flops_row["K"] - 1, 0) * step_flops
    return out


def image_rows(cfg, key, deadline):
    shape = cfg["image_shape"]
    data = jax.random.uniform(jax.random.fold_in(key, 1), (cfg["image_examples"],) + shape)
    rows = []
    for kind, k, batches in cfg["image_rows"]:
        for b in batches:
            name = f"{kind} {shape[1]}x{shape[2]}x{shape[0]} B={b}" + (f" K={k}" if kind != "dsm" else "")
            if time.perf_counter() > deadline:
                rows.append({"name": name, "error": "skipped: time budget spent"})
                continue
            if kind == "recovery":
                energy = models.NoiseConditionedConvEnergy(event_shape=shape, channels=cfg["image_channels"], key=key)
                strategy = inference.DiffusionRecoveryLikelihood(langevin_steps=k)
            else:
                energy = models.ConvEnergy(event_shape=shape, channels=cfg["image_channels"], key=key)
                strategy = (inference.DenoisingScoreMatching(sigma=0.1) if kind == "dsm" else
                            inference.ShortRunML(inference.Langevin(1e-3), steps=k, noise="uniform"))
            chunk = cfg["image_chunk"]
            try:
                r = timed_fit(eb.EBM(energy), data, strategy, steps=chunk * 40, batch=b, chunk=chunk,
                              optimizer=optax.adam(1e-4), key=key, seconds=cfg["image_seconds"],
                              flops_row={"kind": kind, "batch": b, "K": k})
            except Exception as e:  # a row that fails is reported, the others still run
                r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                traceback.print_exc()
            r["name"] = name
            rows.append(r)
            print(f"image {name}: {r}", flush=True)
    return rows


def mlp_row(cfg, key):
    from bench_fit import handwritten_loop

    data = eb.datasets.toy("8gaussians", 50_000, key=key)
    energy = models.MLPEnergy(2, cfg["mlp_width"], 2, key=key)
    k = 20
    strategy = inference.PersistentCD(inference.Langevin(step_size=0.01), steps=k, num_chains=cfg["mlp_chains"])
    chunk, n = cfg["mlp_chunk"], cfg["mlp_chunks"]
    r = timed_fit(eb.EBM(energy), data, strategy, steps=chunk * n, batch=cfg["mlp_batch"], chunk=chunk,
                  optimizer=optax.adam(1e-3), key=key, flops_row={"kind": "shortrun", "batch": cfg["mlp_chains"], "K": k})
    run, carry, _ = handwritten_loop(data, energy.mlp, key, chunk, batch=cfg["mlp_batch"], chains=cfg["mlp_chains"])
    times = []
    for c in range(n):
        t = time.perf_counter()
        carry, losses = run(carry, c * chunk)
        jax.block_until_ready(carry)
        times.append((time.perf_counter() - t) / chunk * 1e3)
    r["hand_ms"] = statistics.median(times[1:])
    r["name"] = f"MLP 2-{cfg['mlp_width']}-{cfg['mlp_width']}-1 PCD K=20, {cfg['mlp_chains']} chains, batch {cfg['mlp_batch']}"
    print(f"mlp: {r}", flush=True)
    return r


def recipes(cfg, key, steps, deadline):
    out = []
    for label, shape, n in cfg["recipe_shapes"]:
        data = jax.random.uniform(jax.random.fold_in(key, 2), (n,) + shape)
        b = cfg["recipe_batch"]
        makers = {
            "short-run ML": lambda: inference.ShortRunML(inference.Langevin(1e-3), steps=20, noise="uniform"),
            "replay buffer ML": lambda: inference.ReplayBufferML(inference.Langevin(1e-3), steps=20, noise="uniform",
                                                                 buffer_size=min(10_000, n)),
            "DSM": lambda: inference.DenoisingScoreMatching(sigma=0.1),
            "recovery likelihood": lambda: inference.DiffusionRecoveryLikelihood(),
            "particle dynamics (alpha)": lambda: inference.ParticleDynamics(
                "alpha", num_particles=b, correction_steps=10, correction_step_size=1e-3, init_steps=20,
                init_step_size=1e-3),
        }
        for name, make in makers.items():
            row = {"name": f"{name}, {label} {n} x {'x'.join(map(str, shape))}"}
            if time.perf_counter() > deadline:
                row["error"] = "skipped: time budget spent"
                out.append(row)
                continue
            cls = models.NoiseConditionedConvEnergy if name == "recovery likelihood" else models.ConvEnergy
            energy = cls(event_shape=shape, channels=cfg["recipe_channels"], key=key)
            chunk = min(cfg["recipe_chunk"], steps)
            try:
                row.update(timed_fit(eb.EBM(energy), data, make(), steps=steps, batch=b, chunk=chunk,
                                     optimizer=optax.adam(1e-4), key=key, guard="default"))
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                traceback.print_exc()
            print(f"recipe {row}", flush=True)
            out.append(row)
    return out


def fmt(r, key, spec):
    v = r.get(key)
    return "n/a" if v is None or v != v else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a CPU smoke run)")
    ap.add_argument("--steps", type=int, help="updates per recipe run (default 300; --quick: 3)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which sections are skipped")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS_gpu.md"), help="the results file")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    steps = args.steps or (3 if args.quick else 300)
    t0 = time.perf_counter()
    deadline = t0 + args.budget
    key = jax.random.key(0)
    dev = jax.devices()[0]
    print(f"devices: {jax.devices()}", flush=True)

    rows = image_rows(cfg, key, deadline)
    mlp = mlp_row(cfg, key) if time.perf_counter() < deadline else {"error": "skipped: time budget spent"}
    rec = recipes(cfg, key, steps, deadline)

    lines = [
        "# GPU check", "",
        f"Command: `bash benchmarks/gpu_check.sh {' '.join(sys.argv[1:])}`" if os.environ.get("GPU_CHECK_SH")
        else f"Command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`", "",
        f"Device: {dev.platform} {getattr(dev, 'device_kind', '')} (x{len(jax.devices())}); jax {jax.__version__}, "
        f"Python {platform.python_version()}; total {time.perf_counter() - t0:.0f} s.", "",
        "## Image rows (`fit`, Adam 1e-4)", "",
        "ms/it: median over chunks after the first (compilation); GFLOP/it: XLA `cost_analysis()` of fit's "
        "chunk plus (K - 1) jitted Langevin steps.", "",
        "| row | ms/it | first chunk s | GFLOP/it | TFLOP/s |", "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | |")
            continue
        lines.append(f"| {r['name']} | {r['ms']:.2f} | {r['first_s']:.1f} | {r['flops'] / 1e9:.3g} | "
                     f"{r['flops'] / (r['ms'] / 1e3) / 1e12:.3g} |")
    lines += ["", "## MLP peer protocol (8gaussians, PCD)", "",
              "| run | fit ms/step | hand-written jit+scan ms/step | fit / hand-written | GFLOP/step | TFLOP/s (fit) |",
              "|---|---:|---:|---:|---:|---:|"]
    if "error" in mlp:
        lines.append(f"| MLP | {mlp['error']} | | | | |")
    else:
        lines.append(f"| {mlp['name']} | {mlp['ms']:.3f} | {mlp['hand_ms']:.3f} | {mlp['ms'] / mlp['hand_ms']:.2f} | "
                     f"{mlp['flops'] / 1e9:.3g} | {mlp['flops'] / (mlp['ms'] / 1e3) / 1e12:.3g} |")
    lines += ["", f"## Recipes ({steps} updates each, batch {cfg['recipe_batch']}, Adam 1e-4, default divergence guard)",
              "", "| recipe, data | steps done | wall s | first chunk s | ms/step | last loss |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rec:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | | |")
        else:
            lines.append(f"| {r['name']} | {r['steps']} | {r['wall_s']:.1f} | {r['first_s']:.1f} | "
                         f"{fmt(r, 'ms', '.2f')} | {fmt(r, 'loss', '.4g')} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
