"""Image EBM training: `declebm.fit` beside a plain PyTorch loop (CPU, torch 2.13) on the same
convolutional networks and the same per-iteration math.

Network: 3x3 convolutions with channels (32, 64, 128), strides 1-2-2, padding 1, SiLU, a
linear head to a scalar (`declebm.models.ConvEnergy(event_shape=(C, H, W),
channels=(32, 64, 128))`; in PyTorch an `nn.Sequential` of `Conv2d` + `SiLU`, `Flatten`,
`Linear`). Data: uniform random arrays of the shape (1024 examples). Adam 1e-4.

Rows, for shapes 1x8x8 (digits), 1x28x28 and 3x32x32 and batches (= chains) 32 and 128:

- `shortrun` K = 5, 20, 60: short-run maximum likelihood, chains from uniform noise (the
  data's box), K unadjusted Langevin steps `x <- x - (eps/2) grad_x E(x) + sqrt(eps) z`,
  eps = 1e-3, loss `mean E(data) - mean E(sg(samples))` (`ShortRunML(Langevin(1e-3),
  steps=K, noise="uniform")`).
- `recovery` K = 30: one diffusion recovery likelihood step (`DiffusionRecoveryLikelihood()`,
  T = 6, b^2 = 2e-4, `NoiseConditionedConvEnergy`): per example a level t, x_t and x_{t+1},
  30 Langevin steps of `p(x_t | x_{t+1})` from `x_{t+1}/a_{t+1}`, loss
  `-(f(a x_t, t) - f(a x-, t)) sigma_1/sigma_{t+1}` (the PyTorch loop reads the ladder's
  numbers from `inference/_recovery_schedule.py`).
- `dsm`: denoising score matching, sigma = 0.1 (PyTorch: `create_graph` double backward).

Every run is a fresh subprocess (so compilation and peak memory are per run); the two
contenders alternate run by run, `--repeats` rounds. Per run: ms/iteration (median over
the timed iterations after the first chunk, which holds compilation; `fit` runs
`chunk_size`-step chunks with `divergence_guard=None`, whose per-chunk probe would
otherwise be timed at the small chunks used here, and a callback stops it once
`--seconds` of timed chunks are done), the first chunk's wall time (compilation included;
PyTorch: the first iteration), peak RSS (`ru_maxrss`), and GFLOP/s from the FLOPs per
iteration of XLA's `cost_analysis()` of `fit`'s own compiled chunk. XLA counts a while
loop's body once, whatever its trip count, so the K-step sampling loop is counted once:
FLOPs/iteration = cost(chunk) + (K - 1) * cost(one jitted Langevin step of the same
chains). The PyTorch rows use the same count (the math is the same). Rows where PyTorch is
faster get a breakdown: sampling (K Langevin steps) and parameter update timed apart, as
separately jitted pieces (declebm's own `strategy.negatives` / recovery chains) and as the
same two halves of the PyTorch loop.

    python benchmarks/bench_images.py --cores 1 --repeats 2 --seconds 1.5

Measured (2-core Xeon VM, both contenders pinned to one core, under a load average of 5-8
from another process; full table, breakdown and analysis in `benchmarks/RESULTS_images.md`),
ratio = PyTorch ms / declebm ms:

| rows | torch / declebm |
|---|---|
| 8x8x1, short-run and recovery, B=32 / B=128 | 2.0-2.4 / 1.4-1.8 |
| 28x28x1, short-run and recovery, B=32 / B=128 | 1.1-1.8 / 0.76-1.05 |
| 32x32x3, short-run and recovery, B=32 / B=128 | 0.87-1.61 / 0.76-0.85 |
| DSM (every shape and batch) | 0.51-1.46 (met only at 8x8x1 B=32) |

`--quick`: one tiny row per contender (`--kinds` picks others).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHANNELS = (32, 64, 128)
EPS = 1e-3
LR = 1e-4
NUM_EXAMPLES = 1024
SHAPES = ((1, 8, 8), (1, 28, 28), (3, 32, 32))
BATCHES = (32, 128)
SHORTRUN_K = (5, 20, 60)
RECOVERY_K = 30
DSM_SIGMA = 0.1


# ---- rows ---------------------------------------------------------------------------------

def forward_flops(shape, channels=CHANNELS, extra_in=0):
    """Multiply-adds x 2 of one forward pass of the conv net on one example (an estimate,
    only used to size chunks and iteration counts; the table's FLOPs come from XLA)."""
    c, h, w = shape
    c += extra_in
    total = 0
    for i, co in enumerate(channels):
        s = 1 if i == 0 else 2
        h, w = (h - 1) // s + 1, (w - 1) // s + 1
        total += 2 * h * w * co * c * 9
        c = co
    return total + 2 * c * h * w


def estimate_flops(row):
    fwd = forward_flops(tuple(row["shape"]), extra_in=1 if row["kind"] == "recovery" else 0)
    b = row["batch"]
    if row["kind"] == "dsm":
        return 6 * fwd * b
    return b * fwd * (2 * row["K"] + 6)  # K x (forward + input gradient), then the update on 2B examples


def all_rows():
    rows = []
    for shape in SHAPES:
        for b in BATCHES:
            for k in SHORTRUN_K:
                rows.append({"kind": "shortrun", "shape": list(shape), "batch": b, "K": k})
            rows.append({"kind": "recovery", "shape": list(shape), "batch": b, "K": RECOVERY_K})
            rows.append({"kind": "dsm", "shape": list(shape), "batch": b, "K": 0})
    return rows


def row_name(row):
    c, h, w = row["shape"]
    k = f" K={row['K']}" if row["kind"] != "dsm" else ""
    return f"{row['kind']} {h}x{w}x{c} B={row['batch']}{k}"


# ---- declebm worker -------------------------------------------------------------------------

def _declebm_setup(row):
    import jax
    import declebm as eb
    from declebm import inference, models

    key = jax.random.key(0)
    shape = tuple(row["shape"])
    data = jax.random.uniform(jax.random.fold_in(key, 1), (NUM_EXAMPLES,) + shape)
    if row["kind"] == "recovery":
        energy = models.NoiseConditionedConvEnergy(event_shape=shape, channels=CHANNELS, key=key)
        strategy = inference.DiffusionRecoveryLikelihood(langevin_steps=row["K"])
    else:
        energy = models.ConvEnergy(event_shape=shape, channels=CHANNELS, key=key)
        if row["kind"] == "dsm":
            strategy = inference.DenoisingScoreMatching(sigma=DSM_SIGMA)
        else:
            strategy = inference.ShortRunML(inference.Langevin(EPS), steps=row["K"], noise="uniform")
    return eb.EBM(energy), data, strategy, key


@contextlib.contextmanager
def recorded_chunk():
    """Within the block, ``fit``'s compiled chunk records the arguments of its first call;
    yields a dict whose ``"flops"`` (after the block) lowers the chunk with them and returns
    XLA's FLOP count of one chunk, without compiling it a second time."""
    from declebm import _loop

    captured, run_chunk = {}, _loop.run_chunk

    def recording(*args):
        captured.setdefault("args", args)
        return run_chunk(*args)

    _loop.run_chunk = recording
    try:
        yield captured
    finally:
        _loop.run_chunk = run_chunk
    captured["flops"] = lambda: _cost_flops(run_chunk.lower(*captured["args"]).lowered)


def _cost_flops(stage):
    """``flops`` of XLA's cost analysis of a compiled executable or, cheaper (no compilation),
    of a lowered program (the HLO before optimisation; within 0.3% of the compiled count for
    these networks)."""
    cost = stage.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def _langevin_step_fn(row, model, data, strategy, key):
    """One Langevin step of ``batch`` chains as the strategy's chains take it: returns
    ``(fn, args)`` for ``jax.jit(fn).lower(*args)``."""
    import jax
    import jax.numpy as jnp
    import equinox as eqx
    from declebm._ebm import EBM, stop_gradient

    b = row["batch"]
    frozen = stop_gradient(model)
    if row["kind"] == "shortrun":
        sampler = strategy.sampler
        x = data[:b]

        def fn(frozen, x, k):
            return sampler.step(frozen, sampler.init(frozen, x), k)[0].position

        return eqx.filter_jit(fn), (frozen, x, key)
    level = jnp.arange(b, dtype=jnp.int32) % strategy.num_levels
    x_next = data[:b]

    def fn(frozen, x_next, k):
        cond = EBM(strategy._energy(frozen), event_shape=frozen.event_shape)
        sampler = strategy.sampler(level, strategy.noise_scale)
        st = sampler.init(cond, x_next, level=level, x_next=x_next)
        return sampler.step(cond, st, k, level=level, x_next=x_next)[0].position

    return eqx.filter_jit(fn), (frozen, x_next, key)


def _breakdown_declebm(row, model, data, strategy, key, seconds):
    """Sampling (K Langevin steps, the strategy's own code) and the parameter update (loss
    on fixed negatives, gradient, Adam), each jitted and timed alone."""
    import jax
    import jax.numpy as jnp
    import equinox as eqx
    import optax
    from declebm._ebm import stop_gradient

    b = row["batch"]
    batch = data[:b]
    opt = optax.adam(LR)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = opt.init(params)
    out = {}
    if row["kind"] == "shortrun":
        state = strategy.init(model, data, key, batch_size=b)

        @eqx.filter_jit
        def sample(model, k):
            return strategy.negatives(model, batch, state, k)[0]

        def loss(p, x_neg):
            m = eqx.combine(p, static)
            return jnp.mean(-m.log_prob_unnorm_batch(batch)) - jnp.mean(-m.log_prob_unnorm_batch(x_neg))
    elif row["kind"] == "recovery":
        s = strategy.schedule
        level = jnp.arange(b, dtype=jnp.int32) % strategy.num_levels
        x_next = batch

        @eqx.filter_jit
        def sample(model, k):
            return strategy._recover(stop_gradient(model), x_next, level, strategy.langevin_steps,
                                     strategy.noise_scale, k)[0]

        scale = jnp.asarray(s.scale, jnp.float32)[level].reshape((b, 1, 1, 1))
        label = jnp.asarray(s.tether_sigma, jnp.float32)[level]
        weight = jnp.asarray(s.weight, jnp.float32)[level]

        def loss(p, x_neg):
            m = eqx.combine(p, static)
            f_pos = m.log_prob_unnorm_batch(scale * batch, sigma=label)
            f_neg = m.log_prob_unnorm_batch(scale * x_neg, sigma=label)
            return jnp.mean(-(f_pos - f_neg) * weight)
    else:  # dsm: the score alone (one input gradient) vs the whole double-backward step
        @eqx.filter_jit
        def sample(model, k):
            return model.score_batch(batch + DSM_SIGMA * jax.random.normal(k, batch.shape))

        def loss(p, x_neg):
            m = eqx.combine(p, static)
            z = x_neg
            sc = DSM_SIGMA * m.score_batch(batch + DSM_SIGMA * z)
            return 0.5 * jnp.mean(jnp.sum((sc + z).reshape(b, -1) ** 2, 1))

    @jax.jit
    def update(p, o, x_neg):
        g = jax.grad(loss)(p, x_neg)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    def timed(f):
        f()  # compile, warm up
        times = []
        t_end = time.perf_counter() + seconds
        while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    x_neg = jax.block_until_ready(sample(model, key))
    if row["kind"] == "dsm":
        x_neg = jax.random.normal(key, batch.shape)
    out["sample_ms"] = timed(lambda: jax.block_until_ready(sample(model, key)))
    out["update_ms"] = timed(lambda: jax.block_until_ready(update(params, opt_state, x_neg)))
    return out


def worker_declebm(row, cfg):
    import jax
    import optax
    import declebm as eb

    t_start = time.perf_counter()
    model, data, strategy, key = _declebm_setup(row)
    if cfg["mode"] == "breakdown":
        return _breakdown_declebm(row, model, data, strategy, key, cfg["seconds"])
    chunk, max_chunks = cfg["chunk"], cfg["max_iters"]
    stamps = []

    def stop_when_timed(step, metrics, model):
        stamps.append(time.perf_counter())
        n = len(stamps) - 1  # timed chunks (the first holds compilation)
        return n >= cfg["min_iters"] and (stamps[-1] - stamps[0] >= cfg["seconds"] or n >= max_chunks)

    t_fit = time.perf_counter()
    with recorded_chunk() as captured:
        eb.fit(model, data, strategy, optimizer=optax.adam(LR), num_steps=chunk * (1 + max_chunks),
               batch_size=row["batch"], chunk_size=chunk, key=key, progress=False, divergence_guard=None,
               callbacks=[stop_when_timed])
    per_iter = [(b - a) / chunk * 1e3 for a, b in zip(stamps, stamps[1:])]
    out = {
        "ms": statistics.median(per_iter), "iters": len(per_iter) * chunk, "chunk": chunk,
        "first_s": stamps[0] - t_fit, "setup_s": t_fit - t_start,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if cfg.get("flops"):
        chunk_flops = captured["flops"]()
        step_flops = 0.0
        if row["kind"] != "dsm":
            fn, args = _langevin_step_fn(row, model, data, strategy, key)
            step_flops = _cost_flops(fn.lower(*args).lowered)
        out["chunk_flops"] = chunk_flops
        out["step_flops"] = step_flops
        out["flops"] = chunk_flops + max(row["K"] - 1, 0) * step_flops
    return out


# ---- PyTorch worker ---------------------------------------------------------------------------

def _torch_net(shape, extra_in=0):
    import torch
    from torch import nn

    c, h, w = shape
    layers, c_in = [], c + extra_in
    for i, co in enumerate(CHANNELS):
        s = 1 if i == 0 else 2
        layers += [nn.Conv2d(c_in, co, 3, stride=s, padding=1), nn.SiLU()]
        h, w = (h - 1) // s + 1, (w - 1) // s + 1
        c_in = co
    layers += [nn.Flatten(), nn.Linear(c_in * h * w, 1)]
    return nn.Sequential(*layers)


def _load_schedule():
    """The ladder's numbers from declebm's own (NumPy-only) module, without importing JAX."""
    spec = importlib.util.spec_from_file_location("_recovery_schedule", os.path.join(ROOT, "inference", "_recovery_schedule.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.recovery_schedule(mod.ddpm_level_sigmas(6), 2e-4)


def _torch_iteration(row):
    """``(iteration, sample, update)``: one training iteration, and its two halves (for the
    breakdown), as closures over a fresh network, optimizer and data."""
    import torch

    torch.manual_seed(0)
    shape = tuple(row["shape"])
    b, k_steps, kind = row["batch"], row["K"], row["kind"]
    data = torch.rand((NUM_EXAMPLES,) + shape)
    net = _torch_net(shape, extra_in=1 if kind == "recovery" else 0)
    opt = torch.optim.Adam(net.parameters(), lr=LR)

    def energy(x):
        return net(x).squeeze(-1)

    def draw():
        return data[torch.randint(0, NUM_EXAMPLES, (b,))]

    def step(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if kind == "shortrun":
        sq = math.sqrt(EPS)

        def sample():
            x = torch.rand((b,) + shape)  # the data's box, [0, 1)
            for _ in range(k_steps):
                x.requires_grad_(True)
                (g,) = torch.autograd.grad(energy(x).sum(), x)
                x = (x - 0.5 * EPS * g + sq * torch.randn_like(x)).detach()
            return x

        def update(batch, x_neg):
            step(energy(batch).mean() - energy(x_neg).mean())

        def iteration():
            batch = draw()
            update(batch, sample())

        return iteration, lambda: sample(), (lambda x: update(draw(), x))

    if kind == "dsm":
        def update(batch, z):
            xt = (batch + DSM_SIGMA * z).requires_grad_(True)
            (g,) = torch.autograd.grad(energy(xt).sum(), xt, create_graph=True)
            scaled = DSM_SIGMA * (-g)
            step(0.5 * ((scaled + z) ** 2).flatten(1).sum(1).mean())

        def score():
            xt = (draw() + DSM_SIGMA * torch.randn((b,) + shape)).requires_grad_(True)
            return torch.autograd.grad(energy(xt).sum(), xt)[0]

        def iteration():
            batch = draw()
            update(batch, torch.randn_like(batch))

        return iteration, score, (lambda z: update(draw(), torch.randn((b,) + shape)))

    # recovery
    s = _load_schedule()
    t32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    abar, sigmabar, a, sigma = t32(s.abar), t32(s.sigmabar), t32(s.a), t32(s.sigma)
    scale_t, label_t, s2_t = t32(s.scale), t32(s.tether_sigma), t32(s.step_size**2)
    tether_t, weight_t = t32(s.tether), t32(s.weight)
    per_level = t32(s.step_size / s.scale)
    levels = s.num_levels
    col = (b, 1, 1, 1)
    h, w = shape[1:]

    def f(y, lab):  # f = -E(y, sigma) = -net([y, log sigma]) / sigma
        chan = torch.log(lab).view(col).expand(b, 1, h, w)
        return -energy(torch.cat([y, chan], 1)) / lab

    def chains(x_next, t):
        sc, lab = scale_t[t].view(col), label_t[t]
        s2, teth, ts2 = s2_t[t], tether_t[t].view(col), (label_t[t] ** 2).view(col)
        step_sz, noise = (per_level[t] ** 2).view(col), per_level[t].view(col)  # noise_scale = 1
        x = x_next / sc
        for _ in range(k_steps):
            x.requires_grad_(True)
            y = sc * x
            log_p = f(y, lab) / s2 - (teth * (y - x_next) ** 2).flatten(1).sum(1) / (2 * ts2.flatten())
            (g,) = torch.autograd.grad(log_p.sum(), x)
            x = (x + 0.5 * step_sz * g + noise * torch.randn_like(x)).detach()
        return x

    def noised(batch):
        t = torch.randint(0, levels, (b,))
        x_t = abar[t].view(col) * batch + sigmabar[t].view(col) * torch.randn_like(batch)
        x_next = a[t + 1].view(col) * x_t + sigma[t + 1].view(col) * torch.randn_like(batch)
        return t, x_t, x_next

    def update(t, x_t, x_neg):
        sc, lab = scale_t[t].view(col), label_t[t]
        step((-(f(sc * x_t, lab) - f(sc * x_neg, lab)) * weight_t[t]).mean())

    def iteration():
        t, x_t, x_next = noised(draw())
        update(t, x_t, chains(x_next, t))

    fixed = noised(draw())
    return iteration, (lambda: chains(fixed[2], fixed[0])), (lambda x: update(fixed[0], fixed[1], x))


def worker_torch(row, cfg):
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # torch's default counts cores, not the affinity
    iteration, sample, update = _torch_iteration(row)
    if cfg["mode"] == "breakdown":
        def timed(f):
            f()
            times = []
            t_end = time.perf_counter() + cfg["seconds"]
            while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
                t = time.perf_counter()
                f()
                times.append(time.perf_counter() - t)
            return statistics.median(times) * 1e3

        x = sample()
        return {"sample_ms": timed(sample), "update_ms": timed(lambda: update(x))}
    t = time.perf_counter()
    iteration()
    first = time.perf_counter() - t
    times = []
    t_end = time.perf_counter() + cfg["seconds"]
    while len(times) < cfg["min_iters"] * cfg["chunk"] or (
            time.perf_counter() < t_end and len(times) < cfg["max_iters"] * cfg["chunk"]):
        t = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - t)
    return {"ms": statistics.median(times) * 1e3, "iters": len(times), "first_s": first,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- driver -----------------------------------------------------------------------------------

def run_worker(contender, row, cfg, timeout):
    payload = json.dumps({"contender": contender, "row": row, "cfg": cfg})
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", payload],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:300]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def peak_flops(used_cores):
    """The CPU's peak f32 FLOP/s from lscpu: cores x GHz x FLOPs/cycle. Assumes 2 FMA units
    per core (AVX-512: 2 x 16 lanes x 2 = 64 FLOPs/cycle; AVX2: 32), as on Xeon server parts;
    the clock is the reported (base) frequency, not the turbo."""
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info[k.strip()] = v.strip()
    except OSError:
        pass
    cores = int(info.get("CPU(s)", os.cpu_count() or 1))
    desc_cores = f"{used_cores} of {cores} cores" if used_cores != cores else f"{cores} cores"
    cores = used_cores
    ghz = None
    for k in ("CPU max MHz", "CPU MHz"):
        if k in info:
            ghz = float(info[k]) / 1000
            break
    if ghz is None:
        try:
            with open("/proc/cpuinfo") as f:
                ghz = next(float(ln.split(":")[1]) for ln in f if ln.startswith("cpu MHz")) / 1000
        except (OSError, StopIteration, ValueError):
            ghz = 1.0
    flags = info.get("Flags", "")
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    desc = (f"{info.get('Model name', platform.processor())}, {desc_cores} x {ghz:.2f} GHz x {per_cycle} "
            f"f32 FLOPs/cycle ({'AVX-512' if per_cycle == 64 else 'AVX2' if per_cycle == 32 else 'SSE'} FMA, "
            "2 FMA units per core assumed)")
    return cores * ghz * 1e9 * per_cycle, desc


def chunk_for(row, quick):
    """Steps per `fit` chunk: ~0.15 s of work at an assumed 50 GFLOP/s, 1..25."""
    if quick:
        return 2
    return max(1, min(25, int(0.15 / (estimate_flops(row) / 50e9))))


def summarise(runs, key):
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else float("nan")


def fmt(v, spec):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def write_results(path, rows, results, breakdowns, peak, peak_desc, command, notes):
    lines = [
        "# Image EBM training: declebm.fit beside a PyTorch loop (CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {peak_desc}; peak {peak / 1e9:.1f} GFLOP/s. "
        f"jax {results.get('_jax', '?')}, torch {results.get('_torch', 'absent')}, Python {platform.python_version()}.",
        "",
        "ms/it: median over timed iterations (declebm: `fit` chunks after the first, per step; PyTorch: "
        "iterations after the first), median over repeats; best-of ratio: the fastest run of each. first s: declebm the first chunk's wall time "
        "(compilation included), PyTorch the first iteration. Peak MiB: the subprocess's `ru_maxrss`. "
        "GFLOP/it: XLA `cost_analysis()` of fit's lowered chunk plus (K - 1) jitted Langevin steps "
        "(XLA counts a loop body once); the same count for both contenders.",
        "",
        "| row | declebm ms/it | torch ms/it | torch/declebm | best-of ratio | declebm first s | torch first s | "
        "declebm peak MiB | torch peak MiB | GFLOP/it | declebm GFLOP/s (% peak) | torch GFLOP/s (% peak) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = row_name(row)
        d = results.get((name, "declebm"), [])
        t = results.get((name, "torch"), [])
        dm, tm = summarise(d, "ms"), summarise(t, "ms")
        flops = summarise(d, "flops")
        ratio = tm / dm if dm == dm and tm == tm else float("nan")
        best = [min((r["ms"] for r in rr if "ms" in r), default=float("nan")) for rr in (d, t)]
        best_ratio = best[1] / best[0] if all(b == b for b in best) else float("nan")

        def rate(ms):
            if ms != ms or flops != flops:
                return "n/a"
            g = flops / (ms / 1e3)
            return f"{g / 1e9:.1f} ({100 * g / peak:.1f}%)"

        err = "; ".join(f"{c}: {r['error']}" for c, rr in (("declebm", d), ("torch", t)) for r in rr if "error" in r)
        lines.append(
            f"| {name} | {fmt(dm, '.2f')} | {fmt(tm, '.2f')} | {fmt(ratio, '.2f')} | {fmt(best_ratio, '.2f')} | "
            f"{fmt(summarise(d, 'first_s'), '.2f')} | "
            f"{fmt(summarise(t, 'first_s'), '.3f')} | {fmt(summarise(d, 'peak_mib'), '.0f')} | "
            f"{fmt(summarise(t, 'peak_mib'), '.0f')} | {fmt(flops / 1e9, '.3f')} | {rate(dm)} | {rate(tm)} |"
            + (f" {err}" if err else "")
        )
    if breakdowns:
        lines += ["", "Breakdown of the rows where PyTorch is faster (`--quick`: every row; sampling = the K Langevin steps, "
                  "for DSM the score alone; update = loss on fixed negatives, parameter gradient, Adam; "
                  "each jitted and timed alone, median ms):", "",
                  "| row | declebm sample ms | declebm update ms | torch sample ms | torch update ms |",
                  "|---|---:|---:|---:|---:|"]
        for name, b in breakdowns.items():
            d, t = b.get("declebm", {}), b.get("torch", {})
            lines.append(f"| {name} | {fmt(d.get('sample_ms'), '.2f')} | {fmt(d.get('update_ms'), '.2f')} | "
                         f"{fmt(t.get('sample_ms'), '.2f')} | {fmt(t.get('update_ms'), '.2f')} |")
    if notes:
        lines += [""] + notes
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, help="rounds of interleaved runs (default 2; --quick: 1)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed work per run (at least 2 iterations)")
    ap.add_argument("--kinds", nargs="+", choices=["shortrun", "recovery", "dsm"],
                    help="row kinds to run (default all; --quick: shortrun)")
    ap.add_argument("--shapes", nargs="+", help="HxWxC shapes to run (default 8x8x1 28x28x1 32x32x3; --quick: 8x8x1)")
    ap.add_argument("--batches", nargs="+", type=int, help="batch sizes to run (default 32 128; --quick: 8)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the breakdown of rows PyTorch wins")
    ap.add_argument("--cores", type=int, help="pin every run (both contenders) to the first N cores "
                    "(default: all; torch then uses N threads)")
    ap.add_argument("--quick", action="store_true", help="one tiny row per contender, a few iterations")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS_images.md"), help="results table (and .jsonl)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    repeats = args.repeats or (1 if args.quick else 2)
    if args.worker:
        job = json.loads(args.worker)
        if job["cfg"].get("cores"):  # before JAX or torch start their thread pools
            os.sched_setaffinity(0, job["cfg"]["cores"])
        fn = worker_declebm if job["contender"] == "declebm" else worker_torch
        print(json.dumps(fn(job["row"], job["cfg"])))
        return

    def shape_of(s):
        h, w, c = (int(v) for v in s.split("x"))
        return [c, h, w]

    kinds = args.kinds or (["shortrun"] if args.quick else ["shortrun", "recovery", "dsm"])
    shapes = [shape_of(s) for s in args.shapes or (["8x8x1"] if args.quick else ["8x8x1", "28x28x1", "32x32x3"])]
    batches = args.batches or ([8] if args.quick else list(BATCHES))
    if args.quick:  # tiny: K = 2, a few iterations
        rows = [{"kind": k, "shape": sh, "batch": b, "K": 0 if k == "dsm" else 2}
                for sh in shapes for b in batches for k in kinds]
        seconds, min_iters, max_iters = min(args.seconds, 0.2), 2, 3
    else:
        rows = [r for r in all_rows() if r["kind"] in kinds and r["shape"] in shapes and r["batch"] in batches]
        seconds, min_iters, max_iters = args.seconds, 2, 30
    contenders = ["declebm"]
    try:
        import torch  # noqa: F401  (only to know whether the PyTorch contender can run)

        have_torch = True
    except ImportError:
        have_torch = False
    if have_torch:
        contenders.append("torch")
    else:
        print("torch is not importable here: skipping the PyTorch contender")
    available = sorted(os.sched_getaffinity(0))
    cores = available[: args.cores] if args.cores else available
    peak, peak_desc = peak_flops(len(cores))
    results = {}
    import jax

    results["_jax"] = jax.__version__
    if have_torch:
        from importlib.metadata import version

        results["_torch"] = version("torch")
    jsonl = os.path.splitext(args.out)[0] + ".jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(jsonl)), exist_ok=True)
    log = open(jsonl, "w")
    t0 = time.perf_counter()
    for rep in range(repeats):
        for row in rows:
            name = row_name(row)
            cfg = {"mode": "train", "chunk": chunk_for(row, args.quick), "seconds": seconds,
                   "min_iters": min_iters, "max_iters": max_iters, "flops": rep == 0, "cores": cores}
            order = contenders if rep % 2 == 0 else contenders[::-1]
            for c in order:
                r = run_worker(c, row, cfg, timeout=900)
                r.update(contender=c, row=name, repeat=rep)
                results.setdefault((name, c), []).append(r)
                log.write(json.dumps(r) + "\n")
                log.flush()
                print(f"[{time.perf_counter() - t0:7.1f} s] rep {rep} {name:34s} {c:8s} "
                      + (f"{r['ms']:9.2f} ms/it  first {r['first_s']:.2f} s  {r['peak_mib']:.0f} MiB"
                         if "ms" in r else r["error"]), flush=True)
    # rows with declebm slower than PyTorch: where the time goes
    breakdowns = {}
    if have_torch and not args.no_breakdown:
        for row in rows:
            name = row_name(row)
            dm, tm = summarise(results[(name, "declebm")], "ms"), summarise(results[(name, "torch")], "ms")
            if not (dm > tm or args.quick):  # --quick: every row, to exercise the code
                continue
            cfg = {"mode": "breakdown", "seconds": min(seconds, 1.0), "cores": cores}
            for c in contenders:
                r = run_worker(c, row, cfg, timeout=900)
                breakdowns.setdefault(name, {})[c] = r
                log.write(json.dumps({**r, "contender": c, "row": name, "breakdown": True}) + "\n")
                print(f"breakdown {name:34s} {c:8s} {r}", flush=True)
    log.close()
    command = "python benchmarks/bench_images.py " + " ".join(sys.argv[1:])
    notes = [f"Total wall time {time.perf_counter() - t0:.0f} s; every run's numbers: `{os.path.basename(jsonl)}`."]
    text = write_results(args.out, rows, results, breakdowns, peak, peak_desc, command, notes)
    print(text)


if __name__ == "__main__":
    main()
