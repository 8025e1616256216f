"""How the cost of a training step grows: batch, chains and width over a decade each, and
1, 2, 4, 8 devices (forced host devices on a CPU, real ones where present).

    python benchmarks/bench_scaling.py                 # full table (a few minutes on 2 cores)
    python benchmarks/bench_scaling.py --quick         # tiny settings (smoke test)
    python benchmarks/bench_scaling.py --width 512 --chains 4096   # a larger setting, e.g. on a GPU

Each configuration runs in its own process (the device count is fixed when JAX starts):
persistent CD with 20 Langevin steps on 8gaussians, an MLP energy. Reported per row: ms
per step (median of repeats after compilation, `fit` reusing its compiled chunk),
examples per second, XLA's temporary memory for one step's loss and gradient, and the
process's peak resident memory. For the device rows the per-device work is constant
(batch and chains grow with the devices: weak scaling), and a second block keeps the
global batch fixed (strong scaling); the efficiency of a doubling is
``t(n) / t(2n)`` for strong scaling and ``t(n) / t(2n)`` at twice the work for weak
scaling... see the table titles (1.0 = perfect).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    ap.add_argument("--steps", type=int, default=200, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=128, help="width of the base configuration")
    ap.add_argument("--chains", type=int, default=256, help="batch size and chains of the base configuration")
    ap.add_argument("--max-devices", type=int, default=8)
    ap.add_argument("--out", default=None, help="write the table (markdown) here too")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return ap


def worker(cfg: dict) -> dict:
    """One configuration, in a process started with the right device count."""
    import resource
    import statistics
    import time

    import equinox as eqx
    import jax
    import optax

    import declebm as eb
    from declebm.inference import Langevin, PersistentCD
    from declebm.models import MLPEnergy

    devices = jax.devices()[: cfg["devices"]] if cfg["devices"] > 1 else None
    data = eb.datasets.toy("8gaussians", 20_000, key=jax.random.key(0))
    model = eb.EBM(MLPEnergy(2, cfg["width"], 2, key=jax.random.key(1)))
    strategy = PersistentCD(Langevin(0.01), steps=20, num_chains=cfg["chains"])
    opt = optax.adam(1e-3)
    kw = dict(num_steps=cfg["steps"], batch_size=cfg["batch"], chunk_size=cfg["steps"], optimizer=opt,
              progress=False, devices=devices, divergence_guard=None)
    eb.fit(model, data, strategy, key=jax.random.key(2), **kw)  # compile
    times = []
    for r in range(cfg["repeats"]):
        t0 = time.perf_counter()
        res = eb.fit(model, data, strategy, key=jax.random.key(3 + r), **kw)
        jax.block_until_ready(res.model)
        times.append((time.perf_counter() - t0) / cfg["steps"])
    # XLA's memory for one step's loss and gradient (single device).
    state = strategy.init(model, data, jax.random.key(0), batch_size=cfg["batch"])
    params, static = eqx.partition(model, eqx.is_inexact_array)
    step = jax.jit(jax.grad(lambda p, b, st, k: strategy.loss(eqx.combine(p, static), b, st, k)[0]))
    mem = step.lower(params, data[: cfg["batch"]], state, jax.random.key(0)).compile().memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
    return dict(cfg, ms_per_step=1e3 * statistics.median(times), platform=jax.devices()[0].platform,
                temp_mib=temp / 2**20, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run(cfg: dict, in_process: bool = False) -> dict:
    """``worker(cfg)`` in a fresh process (its own device count, its own peak RSS); with
    ``in_process`` (``--quick``: a smoke test of the table, not a measurement) here."""
    if in_process and cfg["devices"] == 1:
        return worker(cfg)
    env = dict(os.environ)
    if cfg["devices"] > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={cfg['devices']}").strip()
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(title: str, rows: list[dict], vary: str, efficiency: list[float | None]) -> str:
    lines = [f"### {title} (varying: {vary})", "", "| batch | chains | width | devices | ms/step | examples/s | "
             "step temp MiB | peak RSS MiB | efficiency of the doubling |", "|" + "---|" * 9]
    for r, e in zip(rows, efficiency):
        lines.append(
            f"| {r['batch']} | {r['chains']} | {r['width']} | {r['devices']} | {r['ms_per_step']:.2f} | "
            f"{r['batch'] / r['ms_per_step'] * 1e3:.0f} | {r['temp_mib']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{'' if e is None else f'{e:.2f}'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return ""
    steps, repeats = (5, 1) if args.quick else (args.steps, args.repeats)
    base = dict(batch=args.chains, chains=args.chains, width=args.width, devices=1, steps=steps, repeats=repeats)
    decade = [1, 2] if args.quick else [1, 4, 10]
    sections = []

    def sweep(vary, values, title, eff):
        rows = [run(dict(base, **v), in_process=args.quick) for v in values]
        sections.append(table(title, rows, vary, [None] + [eff(x, y) for x, y in zip(rows, rows[1:])]))

    def growth(key):  # time growth / work growth: 1.0 = cost linear in the work, below 1 = sublinear
        return lambda a, b: (b["ms_per_step"] / a["ms_per_step"]) / (b[key] / a[key])

    small = max(16, args.chains // 4)
    sweep("batch", [dict(batch=small * f, chains=small * f) for f in decade],
          "Batch and chains together (1 device); last column: time growth / work growth", growth("batch"))
    sweep("chains", [dict(chains=small * f, batch=small) for f in decade],
          "Chains alone, batch fixed (1 device); last column: time growth / work growth", growth("chains"))
    sweep("width", [dict(width=max(8, args.width // 4) * f) for f in decade],
          "Width (1 device); last column: time growth / width growth", growth("width"))
    counts = [n for n in (1, 2, 4, 8) if n <= args.max_devices][: (2 if args.quick else None)]
    per = max(8, args.chains // 2)
    sweep("devices", [dict(devices=n, batch=per * n, chains=per * n) for n in counts],
          f"Weak scaling: {per} examples and chains per device; last column: efficiency t(n) / t(2n) (1.0 = perfect)",
          lambda a, b: a["ms_per_step"] / b["ms_per_step"])
    sweep("devices", [dict(devices=n, batch=args.chains, chains=args.chains) for n in counts],
          f"Strong scaling: batch and chains {args.chains} in all; last column: efficiency t(n) / (2 t(2n)) "
          "(1.0 = perfect)", lambda a, b: a["ms_per_step"] / (2 * b["ms_per_step"]))
    text = "\n".join(sections)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
