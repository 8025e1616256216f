"""Train one EBM over several processes (hosts), data parallel, each reading its own rows.

Launch one process per host, all with the same arguments except --process-id:

    # host 0 (also the coordinator)            # host 1
    python examples/multihost.py \\             python examples/multihost.py \\
        --coordinator 10.0.0.1:1234 \\              --coordinator 10.0.0.1:1234 \\
        --num-processes 2 --process-id 0            --num-processes 2 --process-id 1

On one machine, to try it, use --coordinator 127.0.0.1:<free port> and start both in
two shells (or `--launch-local 2`, which starts the processes itself). Each process calls
`jax.distributed.initialize`, generates (or loads) only its own shard of the data, and
passes it to `fit(..., devices=jax.devices())`: with several processes `fit` splits the
data's rows over the devices (`shard_data`), each device draws its part of the batch from
its own rows, and gradients are averaged by the compiler across all devices of all hosts.
Process 0 evaluates the result and writes the plot and the JSON. On CPUs the processes
talk through gloo (`jax_cpu_collectives_implementation`); on GPUs through NCCL.

A preemptible job: `--checkpoint-dir DIR` (a folder every process reads) writes a checkpoint
every tenth of the run, and after a preemption or `kill -9` the same command with `--resume`
continues from the newest complete one, with the same number of processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinator", default=None, help="host:port of process 0")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--launch-local", type=int, default=0, metavar="N",
                    help="start N processes on this machine (loopback coordinator) and wait for them")
    ap.add_argument("--strategy", default="pcd", choices=("pcd", "dsm", "nce"))
    ap.add_argument("--steps", type=int, help="parameter updates (2000; 20 with --quick)")
    ap.add_argument("--batch-size", type=int, default=256, help="global batch (a multiple of the device count)")
    ap.add_argument("--checkpoint-dir", default=None,
                    help="a folder every process reads: checkpoints every tenth of the run (process 0 writes)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the newest checkpoint in --checkpoint-dir (after a preemption or kill)")
    ap.add_argument("--out", default="out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    return ap


def launch_local(args, argv) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = [a for a in argv if not a.startswith("--launch-local")]
    if "--launch-local" in argv:
        i = argv.index("--launch-local")
        rest = argv[:i] + argv[i + 2:]
    procs = [subprocess.Popen([sys.executable, __file__, *rest, "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", str(args.launch_local), "--process-id", str(i)])
             for i in range(args.launch_local)]
    codes = [p.wait(timeout=1800) for p in procs]
    return max(codes)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.resume and args.checkpoint_dir is None:
        ap.error("--resume: continues from --checkpoint-dir DIR; name the folder")
    if args.launch_local:
        return launch_local(args, argv)

    import jax

    if args.num_processes > 1:
        if args.coordinator is None:
            raise SystemExit("--coordinator host:port is needed with --num-processes > 1")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used on CPUs only
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)

    import jax.numpy as jnp
    import optax

    import declebm as eb
    from declebm.inference import strategy_from_name
    from declebm.models import MLPEnergy

    steps = args.steps if args.steps is not None else (20 if args.quick else 2000)
    n_local = 2048 if args.quick else 25_000
    me = jax.process_index()
    # Each process holds only its own rows (here: its own draws; in practice its files).
    local = eb.datasets.toy("8gaussians", n_local, key=jax.random.fold_in(jax.random.key(args.seed), me))
    model = eb.EBM(MLPEnergy(2, 32 if args.quick else 128, 2, key=jax.random.key(args.seed + 1)))
    if me == 0:
        print(f"{jax.process_count()} processes, {len(jax.devices())} devices ({jax.default_backend()}), "
              f"{args.strategy}, {steps} steps, global batch {args.batch_size}")
    result = eb.fit(model, local, strategy_from_name(args.strategy), optimizer=optax.adam(3e-3), num_steps=steps,
                    batch_size=args.batch_size, key=jax.random.key(args.seed + 2), devices=jax.devices(),
                    progress=me == 0, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                    checkpoint_every=max(steps // 10, 1) if args.checkpoint_dir else None)
    if me != 0:
        return 0
    # Evaluation on process 0 with its own test draws; parameters are replicated everywhere.
    trained = jax.tree.map(lambda x: jnp.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x,
                           result.model)
    test = eb.datasets.toy("8gaussians", 2000, key=jax.random.key(args.seed + 99))
    res = 60 if args.quick else 200
    metrics = {"processes": jax.process_count(), "devices": len(jax.devices()), "strategy": args.strategy,
               "steps": result.step, "resumed_from": result.resumed_from, "test_nll": round(float(eb.evaluate.grid_nll(trained, test, resolution=res)), 4),
               "true_density_nll": round(-float(jnp.mean(eb.datasets.toy_log_prob("8gaussians", test))), 4)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "multihost.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    try:
        from declebm import plot

        fig, axs = plot.figure(1, 2)
        plot.samples(test, ax=axs[0, 0], title="data")
        plot.density(trained, ax=axs[0, 1], title=f"{jax.process_count()} processes: NLL {metrics['test_nll']:.3f}",
                     resolution=res)
        fig.savefig(os.path.join(args.out, "multihost.png"), dpi=100)
    except ImportError as e:
        print(f"no figure: {e}")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
