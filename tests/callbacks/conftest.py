import jax
import pytest

import declebm as eb
from declebm.inference import DenoisingScoreMatching
from declebm.models import MLPEnergy


@pytest.fixture
def tiny_fit():
    """``fit`` of one small configuration (the callbacks' tests share its compiled chunk):
    15 or 20 steps in chunks of 5 of denoising score matching on 256 2-D points."""

    def run(num_steps, callbacks, **kwargs):
        data = eb.datasets.toy("8gaussians", 256, key=jax.random.key(0))
        model = eb.EBM(MLPEnergy(2, 8, 1, key=jax.random.key(0)))
        return eb.fit(model, data, DenoisingScoreMatching(sigma=0.3), num_steps=num_steps, batch_size=32,
                      chunk_size=5, key=jax.random.key(1), progress=False, callbacks=callbacks,
                      divergence_guard=None, **kwargs)

    return run
