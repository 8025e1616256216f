"""The training-strategy contract: hyperparameters in the module, mutable state apart."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._checks import tree_hash
from ._repr import hyperparameter_repr


class AbstractStrategy(eqx.Module):
    r"""How an EBM is learned. ``fit`` is configured by one of these, as Diffrax's
    ``diffeqsolve`` is by a solver.

    A strategy holds only hyperparameters; whatever changes during training (persistent
    chains, a replay buffer, a noise distribution, particles) lives in a separate
    pytree ``state``:

    - ``init(model, data, key, *, batch_size=None) -> state``, called once by ``fit``
      (``batch_size`` is the training batch size, for strategies that size their
      chains by it; it is the only addition to the DESIGN signature);
    - ``loss(model, batch, state, key) -> (loss, (state, metrics))``: a scalar whose
      gradient with respect to the model's parameters is the training direction, the
      updated state, and a dict of scalar metrics that explain the strategy;
    - ``after_update(old_model, new_model, state, key) -> state``: called after each
      parameter update (identity by default; particle methods move particles here);
    - ``init_model(model, data, key) -> model``: called once by ``fit`` before training to
      set what the strategy owns in the model (identity by default; ``NCE`` starts
      ``log_z`` at an importance-sampling estimate). Also an addition to DESIGN.
    - ``uses_labels`` (a class attribute, ``False``): whether the strategy trains on
      labelled data, a pair ``(x, y)`` of arrays with a common leading axis (``JEM``);
      ``fit`` refuses labelled data for every other strategy, and unlabelled data for it.
      Such a strategy's ``init`` and ``init_model`` get the pair, its ``loss`` a batch pair.
    - ``watched_model(model) -> model``: the density ``fit``'s divergence guard watches
      (the model itself by default; a strategy that trains a level-conditioned energy
      returns the density it trains, e.g. ``DiffusionRecoveryLikelihood``'s level 0, since
      the energy at an untrained level may drift harmlessly). Also an addition to DESIGN.
    """

    uses_labels: ClassVar[bool] = False

    def __repr__(self) -> str:
        # The numbers of the hyperparameters, not Equinox's ``weak_f32[]`` (see ``_repr``).
        return hyperparameter_repr(self)

    def __hash__(self) -> int:
        # Numeric hyperparameters are 0-d arrays (traced, see ``declebm._checks.hyperparameter``).
        return tree_hash(self)

    def init(self, model: Any, data: Float[Array, "n *event"], key: PRNGKeyArray, *, batch_size: int | None = None) -> PyTree:
        """The training state; ``None`` for strategies that keep none (score matching)."""
        return None

    @abc.abstractmethod
    def loss(
        self, model: Any, batch: Float[Array, "batch *event"], state: PyTree, key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], tuple[PyTree, dict[str, Float[Array, ""]]]]:
        ...

    def watched_model(self, model: Any) -> Any:
        """The model whose energy spread and NLL excess ``fit``'s ``DivergenceGuard`` watches: ``model``."""
        return model

    def init_model(self, model: Any, data: Float[Array, "n *event"], key: PRNGKeyArray) -> Any:
        return model

    def after_update(self, old_model: Any, new_model: Any, state: PyTree, key: PRNGKeyArray) -> PyTree:
        return state

    def per_chain(self, state: PyTree) -> PyTree:
        """Which leaves of ``state`` hold independent chains or samples along their first
        axis (persistent chains, a replay buffer, particles): multi-device ``fit`` splits
        those over the devices and replicates the rest. Default: every array with at least
        two axes (a batch of examples); override when that guess is wrong."""
        return jax.tree.map(lambda x: getattr(x, "ndim", 0) >= 2, state)
