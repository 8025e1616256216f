"""One process of a two-process checkpointed training; started by tests/test_multihost.py.

    python multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID MODE DIR OUT.json

Each process joins ``jax.distributed`` (gloo over loopback), draws its own rows and trains
``PersistentCD(Langevin(0.01), steps=3, num_chains=64)`` on ``jax.devices()``. MODE:

``train``  a 6-step run writing checkpoints in DIR/ckpt, resumed in the same process to 9
           steps, an uninterrupted 9-step run for reference, and ``declebm.save`` of the
           result (called on every process, counting its file writes) to DIR/model.eqx.
           Also a 12-step uninterrupted run, ``sample``, ``evaluate.log_z`` (AIS, SMC) and
           ``log_likelihood`` with the chains split over the processes, and the progress
           log on stderr.
           Last, two resumes that must be refused, each refusal recorded (``other``,
           ``apart``): process 1 passing other rows than the run's, and process 1 naming
           another (empty) folder than process 0.
``kill-arrays``, ``kill-written``  the 9-step run of ``train`` writing checkpoints in
           DIR/ckpt, in which process 0 stops inside the write of step 6's checkpoint:
           once Orbax has written the arrays of both processes, or once everything is
           written and not yet published. It writes DIR/inside and waits there for the
           test's ``kill -9``.
``resume`` resume DIR/ckpt to 9 steps.
``single1``, ``single2``  one process with 1 or 2 devices, passing the rows of both
           processes, resumes a copy of DIR/ckpt (from two processes): to 9 steps (the
           state read, no step taken), then to 12 steps.

Writes what it saw to OUT.json (one file per process).
"""

import json
import os
import shutil
import sys
import time
import traceback

if sys.argv[4].startswith("single"):  # one process holding as many devices as asked
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={sys.argv[4][len('single'):]}")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
    coordinator, n, me, mode, directory, out = sys.argv[1:7]
    n, me = int(n), int(me)
    if n > 1:
        jax.distributed.initialize(coordinator, num_processes=n, process_id=me)

    import numpy as np

    import declebm as eb
    from declebm.inference import Langevin, PersistentCD
    from declebm.models import MLPEnergy

    rows = [eb.datasets.toy("8gaussians", 128, key=jax.random.fold_in(jax.random.key(0), p)) for p in range(2)]
    local = rows[me] if n > 1 else np.concatenate([np.asarray(r) for r in rows])  # one process: both processes' rows
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    kwargs = dict(strategy=PersistentCD(Langevin(0.01), steps=3, num_chains=64), batch_size=16, chunk_size=3,
                  key=jax.random.key(7), progress=False, devices=jax.devices(), shard_data=True)
    ckpt = os.path.join(directory, "ckpt")

    def host(tree):  # this process's copy of every replicated leaf, its rows of every split one
        return [np.asarray(x.addressable_shards[0].data).tolist() for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]

    record = {}
    try:
        if mode == "train":
            eb.fit(model, local, num_steps=6, checkpoint_dir=ckpt, checkpoint_every=3, **kwargs)
            resumed = eb.fit(model, local, num_steps=9, checkpoint_dir=ckpt, resume=True, **kwargs)
            straight = eb.fit(model, local, num_steps=9, **kwargs)
            record["steps"] = sorted(os.listdir(ckpt))
            record["resumed"] = {"model": host(resumed.model), "chains": host(resumed.state.chains),
                                 "history_step": resumed.history["step"].tolist()}
            record["straight"] = {"model": host(straight.model), "chains": host(straight.state.chains),
                                  "history_step": straight.history["step"].tolist()}
            import declebm._serialise as serialise

            writes, write = [], serialise.atomic_write_bytes
            serialise.atomic_write_bytes = lambda path, chunks: (writes.append(path), write(path, chunks))[1]
            eb.save(os.path.join(directory, "model.eqx"), resumed.model)
            record["writes"] = len(writes)
            straight12 = eb.fit(model, local, num_steps=12, **kwargs)
            record["straight12"] = {"model": host(straight12.model), "chains": host(straight12.state.chains)}
            x = eb.sample(resumed.model, Langevin(0.01), num_steps=5, num_samples=64, key=jax.random.key(3),
                          devices=jax.devices())
            reference = eb.sample(resumed.model, Langevin(0.01), num_steps=5, num_samples=64, key=jax.random.key(3))
            record["sample"] = {"mine": host(x)[0], "reference": np.asarray(reference).tolist()}
            from declebm.inference import AIS, SMC
            from declebm.models import MixtureEnergy

            mixture = eb.EBM(MixtureEnergy(np.array([[-2.0, 0.0], [2.0, 1.0]]), np.array([[1.0, 0.5], [0.7, 1.0]]),
                                           weights=np.array([0.3, 0.7])), event_shape=(2,))
            record["log_z"] = {}
            for est in (AIS(num_chains=64, num_steps=50), SMC(num_particles=64, num_runs=4)):
                split_est = eb.evaluate.log_z(mixture, est, key=jax.random.key(1), devices=jax.devices())
                one = eb.evaluate.log_z(mixture, est, key=jax.random.key(1))
                record["log_z"][type(est).__name__] = [[float(e.log_z), float(e.stderr), e.reliable]
                                                       for e in (split_est, one)]
            ll = eb.evaluate.log_likelihood(mixture, rows[0], AIS(num_chains=64, num_steps=50), key=jax.random.key(2),
                                            devices=jax.devices())
            record["log_likelihood"] = [float(ll.log_likelihood), float(ll.log_z.log_z)]
            sys.stderr.write("--- progress ---\n")
            eb.fit(model, local, num_steps=6, **dict(kwargs, progress="log"))
            other = eb.datasets.toy("8gaussians", 128, key=jax.random.fold_in(jax.random.key(1), me)) if me == 1 else local
            for name, rows_given, folder in (("other", other, ckpt), ("apart", local, ckpt if me == 0 else
                                                                       os.path.join(directory, "elsewhere"))):
                try:
                    eb.fit(model, rows_given, num_steps=9, checkpoint_dir=folder, resume=True, **kwargs)
                    record[name] = None
                except ValueError as e:
                    record[name] = f"ValueError: {e}"
        elif mode.startswith("kill"):
            import declebm._checkpoint as checkpoint

            stage = "arrays" if mode == "kill-arrays" else "written"

            def hook(at, path):
                if at == stage and me == 0 and "step-6-" in os.path.basename(path):
                    open(os.path.join(directory, "inside"), "w").close()
                    time.sleep(600)  # until the test kills both processes

            checkpoint._hook = hook
            eb.fit(model, local, num_steps=9, checkpoint_dir=ckpt, checkpoint_every=3, **kwargs)
            record["error"] = "not killed"
        elif mode == "resume":
            resumed = eb.fit(model, local, num_steps=9, checkpoint_dir=ckpt, resume=True, **kwargs)
            record.update(model=host(resumed.model), chains=host(resumed.state.chains), resumed_from=resumed.resumed_from)
        elif mode.startswith("single"):
            copy = os.path.join(directory, f"ckpt-{mode}")
            shutil.copytree(ckpt, copy)
            restored = eb.fit(model, local, num_steps=9, checkpoint_dir=copy, resume=True, **kwargs)  # no step
            resumed = eb.fit(model, local, num_steps=12, checkpoint_dir=copy, resume=True, **kwargs)
            record.update(model=host(resumed.model), chains=host(resumed.state.chains), resumed_from=resumed.resumed_from,
                          devices=len(jax.devices()), restored={"model": host(restored.model), "chains": host(restored.state.chains)})
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except Exception as e:  # noqa: BLE001 -- reported to the test
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc()
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
