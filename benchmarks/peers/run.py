"""declebm beside ebmkit, torchebm and plain PyTorch on one 8-Gaussians protocol: one
subprocess per (library, method, seed), interleaved round-robin over the libraries;
writes benchmarks/RESULTS.md (tables, machine, versions, the command).

    python benchmarks/peers/run.py                       # the full run (about 40 minutes on 2 cores)
    python benchmarks/peers/run.py --quick --out /tmp/RESULTS.md   # tiny, 1 seed, installed libraries only
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # scripts run with PYTHONSAFEPATH get no script folder on sys.path

import common  # noqa: E402
from worker import METHODS, RECOMMENDED  # noqa: E402  (worker imports no JAX or PyTorch at module level)

LIBRARIES = ("declebm", "jax-scan", "ebmkit", "torchebm", "torch")
ALL_METHODS = ("dsm", "pcd", "ssm", "esm", "nce")
# The module each library needs, and the distribution whose version is reported.
NEEDS = {"declebm": ("declebm", "declebm"), "jax-scan": ("declebm", "jax"), "ebmkit": ("ebm", "ebmkit"),
         "torchebm": ("torchebm", "torchebm"), "torch": ("torch", "torch")}
PEER_VERSION = {"ebmkit": "ebmkit 0.16.0", "torchebm": "torchebm 0.8.9", "torch": "the hand-written PyTorch loop",
                "jax-scan": "the hand-written JAX loop", "declebm": "declebm"}
METHOD_NAMES = {"dsm": "DSM (sigma 0.1)", "pcd": "persistent chains + 5% reinit, 20 ULA steps",
                "ssm": "sliced SM (1 projection)", "esm": "exact SM", "nce": "NCE (library default noise)"}
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "RESULTS.md")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny runs (20 iterations, 1 seed, no 10k runs, no budgets "
                    "unless given), for smoke tests")
    ap.add_argument("--out", default=DEFAULT_OUT, help="the markdown report (default benchmarks/RESULTS.md)")
    ap.add_argument("--workdir", default=None, help="data files, per-run JSON and results.jsonl "
                    "(default: OUT's folder/peers_out)")
    ap.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--long-iterations", type=int, default=10_000, help="0: no long runs")
    ap.add_argument("--long-methods", nargs="*", default=["dsm", "pcd", "nce"], choices=ALL_METHODS)
    ap.add_argument("--budgets", type=float, nargs="*", default=None,
                    help="wall-clock budgets (s, startup included) for the recommended configurations, seeds 0..--budget-seeds - 1 "
                    "(default 30 120; none with --quick)")
    ap.add_argument("--budget-methods", nargs="*", default=list(RECOMMENDED), choices=RECOMMENDED)
    ap.add_argument("--budget-seeds", type=int, default=1, help="seeds 0..N-1 for the budget runs (default 1)")
    ap.add_argument("--chunk", type=int, default=100, help="iterations per timed chunk")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (JAX uses every core)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="start no run after this many minutes (the rest are listed as not run); "
                    "kill one still running 5 minutes later")
    ap.add_argument("--resume", action="store_true",
                    help="continue an earlier run in the same --workdir (same options): skip the runs it recorded")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite OUT from WORKDIR's results.jsonl and meta.json (an earlier run's records); run nothing")
    return ap


def available(libraries) -> tuple[list[str], list[str]]:
    ok, lines = [], []
    for lib in libraries:
        module = NEEDS[lib][0]
        if importlib.util.find_spec(module) is None:
            lines.append(f"skipped {lib}: `import {module}` is not available in this environment")
        elif lib in ("ebmkit", "torchebm") and importlib.util.find_spec("torch") is None:
            lines.append(f"skipped {lib}: `import torch` is not available in this environment")
        else:
            ok.append(lib)
    for line in lines:
        print(line, flush=True)
    return ok, lines


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "versions": {d: version(d) for d in ("jax", "jaxlib", "equinox", "blackjax", "optax", "torch", "ebmkit",
                                                  "torchebm", "numpy")}}


def plan(a, libs) -> list[dict]:
    """Every run, in order of priority (so that --max-minutes cuts the least important):
    the protocol at --iterations for seed 0, the budgets, the other seeds, then the long
    runs (seed 0). Inside each (seed, method) one run per library, round robin."""
    methods = [m for m in ALL_METHODS if m in a.methods]

    def protocol(seed, iterations, which):
        return [dict(library=lib, method=m, seed=seed, iterations=iterations, config="protocol")
                for m in which for lib in libs if m in METHODS[lib]]

    runs = protocol(0, a.iterations, methods) if a.seeds else []
    for seed in range(a.budget_seeds):
        for budget in a.budgets:
            for m in a.budget_methods:
                runs += [dict(library=lib, method=m, seed=seed, budget=budget, config="recommended")
                         for lib in libs if lib in ("declebm", "ebmkit", "torchebm")]
    for seed in range(1, a.seeds):
        runs += protocol(seed, a.iterations, methods)
    if a.long_iterations:
        runs += protocol(0, a.long_iterations, [m for m in ALL_METHODS if m in a.long_methods])
    return runs


def run_one(a, spec: dict, data_path: str, workdir: str, index: int, timeout: float | None = None) -> dict:
    out = os.path.join(workdir, f"run{index:03d}_{spec['library']}_{spec['method']}_s{spec['seed']}.json")
    cmd = [sys.executable, os.path.join(HERE, "worker.py"), "--library", spec["library"], "--method", spec["method"],
           "--data", data_path, "--seed", str(spec["seed"]), "--config", spec["config"], "--chunk", str(a.chunk),
           "--threads", str(a.threads), "--out", out]
    cmd += ["--budget", str(spec["budget"])] if spec.get("budget") else ["--iterations", str(spec["iterations"])]
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"KILLED {spec} after {timeout:.0f} s (--max-minutes)", flush=True)
        return dict(spec, failed=True, error=f"killed after {timeout:.0f} s (--max-minutes + 5)",
                    process_wall_s=time.perf_counter() - t)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not os.path.exists(out):
        print(f"FAILED {spec}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}", flush=True)
        return dict(spec, failed=True, error=proc.stderr[-500:], process_wall_s=wall)
    with open(out) as f:
        rec = json.load(f)
    rec.update(process_wall_s=wall, load_before=load0, load_after=os.getloadavg()[0])
    print(f"[{index}] {spec['library']:9s} {spec['method']} seed {spec['seed']} "
          f"{'budget ' + str(spec.get('budget')) if spec.get('budget') else str(spec.get('iterations')) + ' it'}: "
          f"{rec['ms_per_iter']:.2f} ms/it, NLL {rec['nll']:.3f}, {wall:.1f} s", flush=True)
    return rec


# ------------------------------------------------------------------- the report --------
def _f(x, fmt="{:.2f}"):
    return "nan" if x is None or not np.isfinite(x) else fmt.format(x)


def _mean_sd(xs, fmt="{:.3f}"):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    if not xs:
        return "nan"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(np.mean(xs))} ± {fmt.format(np.std(xs, ddof=1))}"


def protocol_table(records, iterations, libs, methods) -> list[str]:
    rows = ["| method | library | seeds | ms/iter (median over seeds) | ms/iter (best seed) | × fastest (best) | "
            "train wall s (mean) | process wall s (mean) | peak RSS MiB | grid NLL (mean ± sd) | true NLL | "
            "mass within 3 std |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        recs = {lib: [r for r in records if r.get("config") == "protocol" and r.get("iterations") == iterations
                      and r["method"] == m and r["library"] == lib and not r.get("failed")] for lib in libs}
        ms = {lib: float(np.median([r["ms_per_iter"] for r in rs])) for lib, rs in recs.items() if rs}
        best = {lib: float(np.nanmin([r["ms_per_iter"] for r in rs])) for lib, rs in recs.items() if rs}
        fastest = min(best.values()) if best else float("nan")
        for lib in libs:
            rs = recs[lib]
            if m not in METHODS[lib]:
                if lib in ("ebmkit", "torchebm"):
                    rows.append(f"| {m} | {lib} | | —, not in {PEER_VERSION[lib]} | | | | | | | | |")
                continue
            if not rs:
                rows.append(f"| {m} | {lib} | 0 | not run | | | | | | | | |")
                continue
            div = sum(bool(r.get("diverged")) for r in rs)
            rows.append(
                f"| {m} | {lib} | {len(rs)}{f' ({div} diverged)' if div else ''} | {_f(ms[lib])} | "
                f"{_f(best[lib])} | {_f(best[lib] / fastest)} | "
                f"{_f(np.mean([r['train_wall_s'] for r in rs]), '{:.1f}')} | "
                f"{_f(np.mean([r['process_wall_s'] for r in rs]), '{:.1f}')} | "
                f"{_f(max(r['peak_rss_mib'] for r in rs), '{:.0f}')} | {_mean_sd([r['nll'] for r in rs])} | "
                f"{_mean_sd([r['nll_true'] for r in rs])} | {_mean_sd([r['mass_3std'] for r in rs])} |")
    return rows


def budget_table(records) -> list[str]:
    rows = ["| method | library | seed | budget s | iterations done | ms/iter | train wall s | grid NLL | true NLL | "
            "mass within 3 std | load avg before / after | configuration |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    recs = [r for r in records if r.get("config") == "recommended" and not r.get("failed")]
    for r in sorted(recs, key=lambda r: (r["budget"], r["method"], r["library"], r["seed"])):
        notes = "; ".join(n for n in r.get("notes", []) if "Trainer.fit" not in n and "plain loop" not in n
                          and "TrainingDivergedError" not in n)
        steps = r["steps"]
        if r.get("diverged"):
            healthy = re.search(r"after (\d+) steps", " ".join(r.get("notes", [])))
            by = re.search(r"diverged by step (\d+)", " ".join(r.get("notes", [])))
            steps = (f"diverged{' by ' + by.group(1) if by else ''} (TrainingDivergedError; scored: its last healthy "
                     f"model{', step ' + healthy.group(1) if healthy else ''})")
        rows.append(f"| {r['method']} | {r['library']} | {r['seed']} | {r['budget']:.0f} | {steps} | {_f(r['ms_per_iter'])} | "
                    f"{_f(r['train_wall_s'], '{:.1f}')} | {_f(r['nll'], '{:.3f}')} | {_f(r['nll_true'], '{:.3f}')} | "
                    f"{_f(r['mass_3std'], '{:.3f}')} | {_f(r.get('load_before'), '{:.1f}')} / "
                    f"{_f(r.get('load_after'), '{:.1f}')} | {notes} |")
    return rows


def write_report(a, path, records, libs, skipped, not_run, info, command, started, final=True) -> None:
    methods = [m for m in ALL_METHODS if m in a.methods]
    lines = [
        "# declebm beside ebmkit, torchebm and plain PyTorch",
        "",
        f"Written by `benchmarks/peers/run.py` ({'finished' if final and not not_run else 'partial'}, "
        f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; started {started}). "
        "Every number below comes from that run's JSON records (`results.jsonl` in the work folder; a copy "
        f"sits next to this report as `{os.path.splitext(os.path.basename(path))[0]}.jsonl`). "
        f"{len(records)} runs, {sum(r.get('process_wall_s', 0.0) for r in records) / 60:.0f} minutes of worker "
        "wall time in all.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {info['nproc']} cores (`nproc`), {info['cpu']}, Python {info['python']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ". "
        f"PyTorch runs use `torch.set_num_threads({a.threads})`; JAX uses every core. "
        "The machine was shared with other jobs: each record keeps the 1-minute load average before and after "
        f"it (over this run: {_load_summary(records)}), and runs are interleaved over the libraries so that "
        "load hits all alike.",
        "",
        "## Protocol",
        "",
        "8 Gaussians at radius 2, std 0.15 (ebmkit's `ebm.datasets.eight_gaussians`), drawn once per seed with "
        f"NumPy: a fixed pool of {common.TRAIN_SIZE:,} training points and {common.TEST_SIZE:,} test points, the "
        "same arrays for every library (an `.npz` the driver writes). MLP 2-128-128-1 SiLU, Adam 1e-3, batch 256 "
        "drawn with replacement. Methods: DSM sigma 0.1; persistent chains (256, 5% re-initialised from noise per "
        "iteration, 20 unadjusted Langevin steps `x <- x - 0.01 grad E + sqrt(0.02) z`, energy regulariser 0.001 "
        "`(E(x+)^2 + E(x-)^2)`); sliced SM (1 projection, variance reduction); exact SM; NCE with each library's "
        "default noise.",
        "",
        "- **ms/iter**: median over timed chunks (" + str(a.chunk) + " iterations each) of chunk wall time / "
        "iterations, the first chunk (compilation, warm-up) left out; then the median over seeds, and the best "
        "(smallest) seed, the one least disturbed by the other jobs; × fastest compares the best seeds. declebm: from "
        "`fit`'s history (`time` at the end of every chunk, `fit(..., chunk_size=" + str(a.chunk) + ")`); the "
        "others: `time.perf_counter()` around each chunk (`jax.block_until_ready` for the JAX loop).",
        "- **train wall s**: from the worker's first line (before any import) to the end of training: imports, "
        "data loading, compilation and training. **process wall s**: the whole subprocess as the driver saw it, "
        "evaluation included.",
        "- **peak RSS**: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the worker (max over seeds).",
        "- **grid NLL**: every library's model gives `-E` on the same 300x300 cell centres on [-4, 4]^2 and on "
        "the test set; one NumPy function (`benchmarks/peers/common.py: scores`) computes `mean E(test) + "
        "logsumexp(-E(grid)) + log(cell area)`. For declebm the record also keeps "
        "`declebm.evaluate.grid_nll` of the same model: " + _api_check(records) + ". "
        "**true NLL**: the known mixture's NLL of the same test set. **mass within 3 std**: the model's grid "
        "mass within 3 x 0.15 of a mode (the true density has 0.989 there).",
        "",
    ]
    for it in sorted({r.get("iterations") for r in records if r.get("config") == "protocol" and r.get("iterations")}):
        which = methods if it == a.iterations else [m for m in methods if m in a.long_methods]
        lines += [f"### {it} iterations", ""] + protocol_table(records, it, libs, which) + [""]
    lines += ["How each library runs the protocol natively (what differs):", ""] + [f"- {n}" for n in PROTOCOL_NOTES]
    if any(r.get("config") == "recommended" for r in records):
        lines += ["", "## Quality per second: each library's recommended configuration", "",
                  "Seeds 0.." + str(getattr(a, "budget_seeds", 1) - 1) + " (each seed its own data, shared by the "
                  "libraries), the same 2-128-128-1 network, each library's own recommended method settings "
                  "(README / defaults), trained in chunks until the wall-clock budget (counted from the "
                  "worker's first line, imports and compilation included) is used up; then the same grid NLL. "
                  "declebm: `fit(num_steps=10**9, callbacks=[stop when out of time])` (a callback returning True "
                  "stops `fit` after the current chunk of " + str(a.chunk) + "), compiled once. The PyTorch "
                  "workers check the clock every " + str(a.chunk) + " iterations too, so a slow chunk overruns "
                  "the budget (train wall s). One run per (library, seed, budget), interleaved; the 1-minute load "
                  "average before / after each run is listed, since a loaded machine slows runs unevenly "
                  "(compare ms/iter across rows).", ""]
        lines += budget_table(records)
    if skipped or not_run:
        lines += ["", "## Not run", ""] + [f"- {s}" for s in skipped]
        lines += [f"- {r['library']} {r['method']} seed {r['seed']} "
                  f"{'budget ' + str(r['budget']) if r.get('budget') else str(r['iterations']) + ' iterations'}: "
                  + ("not started before --max-minutes" if final else "pending") for r in not_run]
    failed = [r for r in records if r.get("failed")]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- {r['library']} {r['method']} seed {r['seed']}: "
                                               f"{r.get('error', '')[-200:]!r}" for r in failed]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


PROTOCOL_NOTES = [
    "declebm: `fit` with `MaximumLikelihood(Langevin(step_size=0.02), steps=20, init=\"buffer\", buffer_size=256, "
    "num_chains=256, reinit_prob=0.05, energy_reg=0.001)` (declebm's Langevin is `x + eps/2 score + sqrt(eps) z`, "
    "so eps = 0.02; `PersistentCD` has no re-initialisation, the buffer start with a buffer of exactly the 256 "
    "chains is the protocol); chains start, and restart, from a Gaussian fitted to the data. "
    "`DenoisingScoreMatching(sigma=0.1)`, `SlicedScoreMatching(num_projections=1)`, `ExactScoreMatching()`, "
    "`NCE()` (noise: a Gaussian fitted to the data, 1.25x wider, used as the model's base density). Default "
    "`DivergenceGuard` on, `progress=False`.",
    "jax-scan: `benchmarks/bench_fit.handwritten_loop` (jit + `lax.scan`, no framework) with eps 0.02 and the "
    "energy regulariser; 256 persistent chains without re-initialisation.",
    "ebmkit: `ebm.Trainer(ebm.nets.MLPEnergy(2, (128, 128)), loss, lr=1e-3).fit(x, steps=chunk, batch_size=256)`; "
    "`ContrastiveDivergence(LangevinDynamics(0.01, steps=20), buffer=ReplayBuffer(256, (2,), reinit_prob=0.05), "
    "energy_reg=0.001)` (its Langevin is `x - eps grad E + sqrt(2 eps) z`: eps 0.01 as given; buffer slots drawn "
    "with replacement, as declebm's; noise N(0, I)); `DenoisingScoreMatching(0.1)`, `SlicedScoreMatching(1)`, "
    "`ExactScoreMatching()`, `NoiseContrastiveEstimation()` (noise N(0, I)).",
    "torchebm: the README's loop (loss module + `torch.optim.Adam`); `ContrastiveDivergence(model, "
    "LangevinDynamics(model, step_size=0.01, noise_scale=1.0), k_steps=20, persistent=True, buffer_size=256, "
    "new_sample_ratio=0.05, energy_reg_weight=0.001)`: its buffer starts at 0.01 N(0, I) with 100 warm-up steps "
    "(default `init_steps`), and `new_sample_ratio` adds 0.01 N(0, I) to 5% of the starts: torchebm 0.8.9 has no "
    "re-initialisation from noise. `DenoisingScoreMatching(noise_scale=0.1)`, `SlicedScoreMatching(n_projections=1, "
    "projection_type=\"gaussian\")`, `ScoreMatching(hessian_method=\"exact\")`; no NCE.",
    "torch: hand-written DSM and the protocol's PCD (chains re-initialised from N(0, I)).",
    "Recovery likelihood (declebm and ebmkit have it) is not in this comparison: it needs a noise-level-conditioned "
    "network, not the protocol's 2-128-128-1 MLP.",
]


def _load_summary(records) -> str:
    loads = [x for r in records for x in (r.get("load_before"), r.get("load_after")) if x is not None]
    return f"min {min(loads):.1f}, median {np.median(loads):.1f}, max {max(loads):.1f}" if loads else "n/a"


def _api_check(records) -> str:
    diffs = [abs(r["nll"] - r["nll_declebm_grid_nll"]) for r in records
             if r.get("nll_declebm_grid_nll") is not None and np.isfinite(r["nll"])]
    return f"largest |difference| over {len(diffs)} declebm runs {max(diffs):.2e} nats" if diffs else "no declebm run"


def _key(spec: dict) -> str:
    return json.dumps({k: spec.get(k) for k in ("library", "method", "seed", "iterations", "budget", "config")})


def _read(workdir):
    with open(os.path.join(workdir, "meta.json")) as f:
        meta = json.load(f)
    with open(os.path.join(workdir, "results.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return meta, records


def main(argv=None):
    a = build_parser().parse_args(argv)
    command = "python benchmarks/peers/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.quick:
        a.seeds = 1
        a.iterations = min(a.iterations, 20)
        a.chunk = min(a.chunk, 10)
        a.long_iterations = 0
    if a.budgets is None:
        a.budgets = [] if a.quick else [30.0, 120.0]
    workdir = a.workdir or os.path.join(os.path.dirname(os.path.abspath(a.out)), "peers_out")
    os.makedirs(workdir, exist_ok=True)
    jsonl, meta_path = os.path.join(workdir, "results.jsonl"), os.path.join(workdir, "meta.json")
    if a.report_only:
        meta, records = _read(workdir)
        out_path = a.out
        a = build_parser().parse_args(meta["argv"])
        a.seeds, a.iterations, a.chunk, a.budgets, a.long_iterations = (
            meta["seeds"], meta["iterations"], meta["chunk"], meta["budgets"], meta["long_iterations"])
        a.budget_seeds = meta.get("budget_seeds", 1)
        done = {_key(r) for r in records}
        not_run = [r for r in plan(a, meta["libs"]) if _key(r) not in done]
        write_report(a, out_path, records, meta["libs"], meta["skipped"], not_run, meta["machine"],
                     meta["command"] + "\n# the report rewritten from those runs' records:\n" + command, meta["started"])
        print(f"rewrote the report from {len(records)} records")
        return
    libs, skipped = available(a.libraries)
    records = []
    if a.resume:  # continue an earlier run in the same workdir: its records, machine, start and command stay
        meta, records = _read(workdir)
        meta["command"] += "\n" + command
        info, started = meta["machine"], meta["started"]
    else:
        info = machine()
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        meta = dict(argv=sys.argv[1:] if argv is None else list(argv), command=command, started=started, libs=libs,
                    skipped=skipped, machine=info, seeds=a.seeds, iterations=a.iterations, chunk=a.chunk,
                    budgets=a.budgets, long_iterations=a.long_iterations, budget_seeds=a.budget_seeds)
        open(jsonl, "w").close()
    command = meta["command"]
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    data_paths = {}
    for seed in range(max(a.seeds, a.budget_seeds, 1)):  # seed 0's data serve the budgets and long runs too
        data_paths[seed] = os.path.join(workdir, f"data_seed{seed}.npz")
        if not (a.resume and os.path.exists(data_paths[seed])):
            np.savez(data_paths[seed], **common.make_data(seed))
    done = {_key(r) for r in records}
    runs = [r for r in plan(a, libs) if _key(r) not in done]
    print(f"{len(runs)} runs{f' (after {len(records)} done)' if records else ''}; libraries {', '.join(libs)}",
          flush=True)
    not_run = []
    t0 = time.perf_counter()
    for i, spec in enumerate(runs):
        if a.max_minutes is not None and time.perf_counter() - t0 > 60 * a.max_minutes:
            not_run = runs[i:]
            break
        timeout = None if a.max_minutes is None else 60 * (a.max_minutes + 5) - (time.perf_counter() - t0)
        rec = run_one(a, spec, data_paths[spec["seed"]], workdir, len(records), timeout)
        records.append(rec)
        with open(jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        write_report(a, a.out, records, libs, skipped, runs[i + 1:], info, command, started, final=False)
    write_report(a, a.out, records, libs, skipped, not_run, info, command, started)
    print(f"wrote {a.out} ({len(records)} runs, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
