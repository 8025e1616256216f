"""A tiny checkpointed training, resumed from its folder; run by tests/test_checkpoint.py.

    python checkpoint_worker.py DIR OUT.npz [KILL_STAGE KILL_NTH]

Prints ``ready <step>`` after each chunk (the parent kills it at random times after the
first one). With KILL_STAGE (``written``, ``published`` or ``removing``), the process
SIGKILLs itself at the KILL_NTH time ``save_checkpoint`` reaches that instant.
"""

import os
import signal
import sys
import time

import jax
import numpy as np  # noqa: E402

import declebm as eb  # noqa: E402
import declebm._checkpoint as checkpoint  # noqa: E402
from declebm.inference import Langevin, PersistentCD  # noqa: E402
from declebm.models import MLPEnergy  # noqa: E402

NUM_STEPS, CHUNK = 60, 5


def setup():
    """The run, shared with the uninterrupted reference in the test."""
    data = eb.datasets.toy("8gaussians", 256, key=jax.random.key(0))
    model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
    kwargs = dict(strategy=PersistentCD(Langevin(0.05), steps=1), num_steps=NUM_STEPS, batch_size=16,
                  chunk_size=CHUNK, key=jax.random.key(7), progress=False)
    return model, data, kwargs


def summary(result) -> dict:
    leaves = jax.tree.leaves(result.model)
    out = {f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves) if hasattr(x, "shape")}
    out["chains"] = np.asarray(result.state.chains)
    out["history_step"] = result.history["step"]
    out["history_loss"] = result.history["loss"]
    return out


def main():
    directory, out = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        stage, nth = sys.argv[3], int(sys.argv[4])
        seen = [0]

        def hook(s, path):
            if s == stage:
                seen[0] += 1
                if seen[0] == nth:
                    os.kill(os.getpid(), signal.SIGKILL)

        checkpoint._hook = hook

    def report(step, metrics, model):
        print(f"ready {step}", flush=True)
        time.sleep(0.02)  # spread the chunks so that random kills land anywhere

    model, data, kwargs = setup()
    result = eb.fit(model, data, checkpoint_dir=directory, checkpoint_every=CHUNK, resume=True,
                    callbacks=[report], **kwargs)
    np.savez(out, **summary(result))
    print("done", flush=True)


if __name__ == "__main__":
    main()
