"""One process of a two-process checkpointed training; started by tests/test_multihost.py.

    python multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID MODE DIR OUT.json

Each process joins ``jax.distributed`` (gloo over loopback), draws its own rows and trains
``PersistentCD(Langevin(0.01), steps=3, num_chains=64)`` on ``jax.devices()``. MODE:

``train``  a 6-step run writing checkpoints in DIR/ckpt, resumed in the same process to 9
           steps, an uninterrupted 9-step run for reference, and ``declebm.save`` of the
           result (called on every process, counting its file writes) to DIR/model.eqx.
``other``  resume DIR/ckpt where process 1 passes other rows: the refusal is recorded.
``apart``  resume where process 1 names another (empty) folder than process 0.

Writes what it saw to OUT.json (one file per process).
"""

import json
import os
import sys
import traceback

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
    coordinator, n, me, mode, directory, out = sys.argv[1:7]
    n, me = int(n), int(me)
    jax.distributed.initialize(coordinator, num_processes=n, process_id=me)

    import numpy as np

    import declebm as eb
    from declebm.inference import Langevin, PersistentCD
    from declebm.models import MLPEnergy

    seed = 1 if (mode == "other" and me == 1) else 0
    local = eb.datasets.toy("8gaussians", 128, key=jax.random.fold_in(jax.random.key(seed), me))
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    kwargs = dict(strategy=PersistentCD(Langevin(0.01), steps=3, num_chains=64), batch_size=16, chunk_size=3,
                  key=jax.random.key(7), progress=False, devices=jax.devices())
    ckpt = os.path.join(directory, "ckpt" if not (mode == "apart" and me == 1) else "elsewhere")

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
        else:
            eb.fit(model, local, num_steps=9, checkpoint_dir=ckpt, resume=True, **kwargs)
            record["error"] = None
    except Exception as e:  # noqa: BLE001 -- reported to the test
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc()
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
