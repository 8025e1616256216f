"""Start-up cost of ``declebm.fit``: time to the first trained chunk, XLA compilations
and peak memory, against the hand-written jit+scan loop of ``bench_fit.py`` doing the
same PCD work (8gaussians, MLP 2-128-128-1, batch 256, 256 chains, 20 Langevin steps).

Each measurement is a fresh process (so every compilation is paid, as a user pays it),
the contenders interleaved, ``--repeats`` rounds; the table gives the median.

    python benchmarks/bench_fit_setup.py --repeats 3
    python benchmarks/bench_fit_setup.py --baseline /tmp/old/bin/python   # also another declebm:
        # a Python (e.g. a venv's) where `pip install <its checkout>` installed it

"CPU s" is user + sys time of the process over the same interval: on a shared machine it
moves far less than the wall time. Measured (``--repeats 3 --baseline`` with the code before
the change, shared 2-core CPU under load; details and the causes that remain in
``RESULTS_fit_setup.md``):

| loop | first chunk, s | CPU s | XLA compilations | peak RSS MiB |
|---|---|---|---|---|
| fit (after) | 4.97 | 4.95 | 10 | 554 |
| hand-written | 4.69 | 3.46 | 13 | 459 |
| fit (before) | 5.90 | 5.87 | 16 | 545 |

fit / hand-written in CPU s: 1.70 before, 1.43 after; most of what remains is compiling
fit's larger chunk (2.5-2.7 CPU s against 1.5), whose per-leaf finite checks and selects
cannot be merged without moving training results by an ulp.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, logging, resource, sys, time
t0 = time.perf_counter()
import jax, jax.numpy as jnp, optax
import declebm as eb
from declebm.inference import Langevin, PersistentCD
from declebm.models import MLPEnergy
sys.path.insert(0, sys.argv[2])
from bench_fit import BATCH, CHAINS, EPS, K, handwritten_loop
compiles = []
class Count(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("Finished XLA compilation"):
            compiles.append(record.getMessage())
jax.config.update("jax_log_compiles", True)
log = logging.getLogger("jax._src.dispatch")
log.addHandler(Count()); log.setLevel(logging.DEBUG); log.propagate = False
key = jax.random.key(0)
data = eb.datasets.toy("8gaussians", 50_000, key=key)
energy = MLPEnergy(2, 128, 2, key=key)
jax.block_until_ready(energy)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t_ready, n_ready, c_ready = time.perf_counter(), len(compiles), cpu()
chunk = 100
if sys.argv[1] == "fit":
    result = eb.fit(eb.EBM(energy), data, PersistentCD(Langevin(step_size=EPS), steps=K, num_chains=CHAINS),
                    optimizer=optax.adam(1e-3), num_steps=chunk, batch_size=BATCH, chunk_size=chunk, key=key,
                    progress=False)
    jax.block_until_ready(result.model)
else:
    run, carry, _ = handwritten_loop(data, energy.mlp, key, chunk)
    carry, _ = run(carry, 0)
    jax.block_until_ready(carry)
t_done = time.perf_counter()
print(json.dumps({"first_chunk_s": t_done - t_ready, "first_chunk_cpu_s": cpu() - c_ready, "process_s": t_done - t0, "compiles": len(compiles) - n_ready,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "declebm": eb.__file__}))
"""


def measure(kind: str, python: str | None = None) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    # cwd: not the repository root, whose source folder declebm/ would shadow the installed package
    out = subprocess.run([python or sys.executable, "-c", WORKER, kind, here], capture_output=True, text=True,
                         check=True, cwd=here)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", help="a Python interpreter with another declebm installed: a third contender")
    args = ap.parse_args(argv)
    contenders = {"fit": ("fit", None), "hand-written": ("hand", None)}
    if args.baseline:
        contenders["fit (baseline)"] = ("fit", args.baseline)
    rows: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(args.repeats):  # interleaved: all see the same machine noise
        for name, (kind, path) in contenders.items():
            rows[name].append(measure(kind, path))
    print(f"median of {args.repeats} fresh processes each; declebm from "
          + ", ".join(f"{name}: {os.path.dirname(rs[0]['declebm'])}" for name, rs in rows.items() if name != "hand-written"))
    print("| loop | first chunk of 100 steps, s (compile + run) | same, CPU s | XLA compilations | whole process, s "
          "| peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    med = {}
    for kind, rs in rows.items():
        med[kind] = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "declebm"}
        m = med[kind]
        print(f"| {kind} | {m['first_chunk_s']:.2f} | {m['first_chunk_cpu_s']:.2f} | {m['compiles']:.0f} "
              f"| {m['process_s']:.2f} | {m['peak_rss_mib']:.0f} |")
    fit, hand = med["fit"], med["hand-written"]
    print(f"ratio fit / hand-written: first chunk {fit['first_chunk_s'] / hand['first_chunk_s']:.2f} "
          f"(CPU {fit['first_chunk_cpu_s'] / hand['first_chunk_cpu_s']:.2f}), "
          f"peak RSS {fit['peak_rss_mib'] / hand['peak_rss_mib']:.2f}")
    return med


if __name__ == "__main__":
    main()
