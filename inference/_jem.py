r"""JEM: a classifier trained as a joint energy-based model of ``(x, y)``
(Grathwohl et al. 2019, "Your classifier is secretly an energy based model and you should
treat it like one")."""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from declebm._checks import is_on, optional_term
from declebm._sampler import AbstractSampler
from declebm._strategy import AbstractStrategy

from ._maximum_likelihood import MCMCState, ReplayBufferML
from ._samplers import Langevin


def classifier_energy(model: Any) -> Any:
    """The energy module of ``model`` if it gives ``log p(y | x)`` (``log_prob_y``, as
    ``models.ClassifierEnergy``), else a TypeError naming ``model``."""
    energy = getattr(model, "energy_module", None)
    if not callable(getattr(energy, "log_prob_y", None)):
        raise TypeError(
            "model: JEM trains a classifier read as an energy, EBM(models.ClassifierEnergy(classifier)); "
            f"got an energy of type {type(energy).__name__}, which gives no log p(y | x) (log_prob_y)"
        )
    return energy


def _labelled(data: Any, name: str = "data") -> tuple[Any, Any]:
    if not (isinstance(data, tuple) and len(data) == 2):
        raise ValueError(f"{name}: JEM trains on labelled data, a pair (x, y); got {type(data).__name__}")
    return data[0], data[1]


class JEM(AbstractStrategy):
    r"""Joint energy-based training of a classifier (JEM, Grathwohl et al. 2019).

    A classifier's logits ``f(x)`` define ``p(x, y) ∝ exp(f(x)[y])``, so
    ``log p(x, y) = log p(y | x) + log p(x)`` with ``E(x) = -logsumexp_y f(x)[y]``
    (``models.ClassifierEnergy``). The loss is the sum of

    - the cross-entropy ``-mean log p(y | x)`` on the labelled batch (the classifier's
      usual loss), and
    - ``generative_weight`` times the maximum-likelihood loss of ``log p(x)``,
      ``mean E(x+) - mean E(sg(x-))``, with negatives ``x-`` from SGLD started at a replay
      buffer (``ReplayBufferML``: ``buffer_size`` chains, each restarted from noise
      uniform over the data's bounding box with probability ``reinit_prob``).

    The defaults are the paper's (section 5 and appendix): a buffer of 10,000, 5%
    re-initialisation, 20 SGLD steps of ``x <- x + alpha grad f + sigma eps`` with step
    size ``alpha = 1`` and noise ``sigma = 0.01``. In declebm's Langevin, whose drift is
    ``(step_size / 2) * score``, that is ``Langevin(step_size=2.0, noise_scale=0.01)``:
    a decoupled noise scale, so the chains sample a tempered density
    (``T = noise_scale^2 / step_size``), as in the paper. Like ``ReplayBufferML`` this is
    ML with a biased sampler, not contrastive divergence.

    ``fit`` gives it labelled data, ``fit(model, (x, y), JEM(), ...)``: ``x`` examples and
    ``y`` integer class labels in ``[0, num_classes)`` with the same leading axis.

    Metrics: ``cross_entropy``, ``accuracy`` (of the batch), ``energy_data``,
    ``energy_samples``, ``acceptance_rate`` (of the chains, 1 for unadjusted Langevin).

    Arguments:
        sampler: the chains' kernel (default the paper's SGLD, above).
        steps: sampler steps per update (20).
        buffer_size, reinit_prob: the replay buffer (10,000; 0.05).
        generative_weight: the weight of the ``log p(x)`` term (1; 0 leaves it out and
            runs no chains: the plain classifier, with the same network and batches).
        energy_reg: the energy-magnitude regulariser of ``ReplayBufferML`` (0: off).
    """

    generative: ReplayBufferML
    generative_weight: float | Float[Array, ""] = eqx.field(converter=optional_term("generative_weight"))
    uses_labels: ClassVar[bool] = True

    def __init__(
        self,
        sampler: AbstractSampler = Langevin(step_size=2.0, noise_scale=0.01),
        steps: int = 20,
        *,
        buffer_size: int = 10_000,
        reinit_prob: float = 0.05,
        generative_weight: float = 1.0,
        energy_reg: float = 0.0,
    ):
        self.generative = ReplayBufferML(sampler, steps, energy_reg=energy_reg, noise="uniform",
                                         buffer_size=buffer_size, reinit_prob=reinit_prob)
        self.generative_weight = generative_weight

    def init(self, model, data, key, *, batch_size=None) -> MCMCState:
        x, y = _labelled(data)
        energy = classifier_energy(model)
        num_classes = int(jax.eval_shape(energy.logits, jax.ShapeDtypeStruct(x.shape[1:], x.dtype)).shape[0])
        labels = np.asarray(y)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"data: the labels y must be integers (class indices), got dtype {labels.dtype}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"data: expected one label per example, y of shape ({x.shape[0]},), got {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"data: labels must lie in [0, {num_classes}) (the classifier's {num_classes} logits), "
                f"got values from {labels.min()} to {labels.max()}"
            )
        return self.generative.init(model, x, key, batch_size=batch_size)

    def loss(self, model, batch, state, key):
        x, y = batch
        log_p_y = jax.vmap(classifier_energy(model).log_prob_y)(x)
        cross_entropy = -jnp.mean(jnp.take_along_axis(log_p_y, y[:, None].astype(jnp.int32), axis=1))
        accuracy = jnp.mean(jnp.argmax(log_p_y, axis=1) == y)
        metrics = {"cross_entropy": cross_entropy, "accuracy": accuracy}
        if not is_on(self.generative_weight):  # 0: the plain classifier, no chains run
            return cross_entropy, (state, metrics)
        generative, (state, chain_metrics) = self.generative.loss(model, x, state, key)
        loss = cross_entropy + self.generative_weight * generative
        return loss, (state, {**metrics, "generative_loss": generative, **chain_metrics})

    def per_chain(self, state):
        return self.generative.per_chain(state)
