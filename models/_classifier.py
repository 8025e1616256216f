"""A classifier's logits as an energy (JEM, Grathwohl et al. 2019)."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from declebm._checks import check_number

from ._mlp import check_mlp_sizes, mlp_activation


class MLPClassifier(eqx.Module):
    r"""``x -> logits``: an ``in_size -> width -> ... -> num_classes`` perceptron with
    ``depth`` hidden layers (SiLU by default: smooth, so SGLD on ``ClassifierEnergy`` is
    well posed). Saved and loaded without a template.

    Arguments:
        in_size: dimension of one example (declares ``event_shape = (in_size,)``).
        num_classes: number of classes (logits).
        width, depth, activation: as ``MLPEnergy``.
        key: a ``jax.random.key``.
    """

    mlp: eqx.nn.MLP
    in_size: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_classes: int,
        width: int = 128,
        depth: int = 2,
        activation: Callable[[Array], Array] | eqx.Module = jax.nn.silu,
        *,
        key: PRNGKeyArray,
    ):
        check_mlp_sizes("MLPClassifier", in_size, width, depth, activation, key)
        check_number(num_classes, "num_classes", integer=True, low=2)
        self.in_size, self.num_classes = in_size, num_classes
        self.mlp = eqx.nn.MLP(in_size, num_classes, width, depth, activation=activation, key=key)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.in_size,)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(in_size=self.in_size, num_classes=self.num_classes, width=self.mlp.width_size,
                    depth=self.mlp.depth, activation=mlp_activation(self.mlp))

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " num_classes"]:
        return self.mlp(x)


class ClassifierEnergy(eqx.Module):
    r"""A classifier read as an energy-based model of ``(x, y)`` (JEM: Grathwohl et al.
    2019, "Your classifier is secretly an energy based model and you should treat it like
    one"): with logits ``f(x)``,

    ``p(x, y) ∝ exp(f(x)[y])``, so ``E(x) = -logsumexp_y f(x)[y]`` and
    ``log p(y | x) = f(x)[y] - logsumexp_y f(x)[y]`` (the classifier's softmax, unchanged).

    Calling it gives ``E(x)`` (one example, a scalar), so ``EBM(ClassifierEnergy(f))``
    samples and trains like any energy; ``logits(x)`` and ``log_prob_y(x)`` give the
    classifier's view. Train both views with ``declebm.inference.JEM``.

    Arguments:
        classifier: any Equinox module mapping one example to a vector of logits
            (``MLPClassifier``, or your own). Saved and loaded without a template when the
            classifier can be (declebm's own, or a module with ``constructor_kwargs()``).
        event_shape: the shape of one example; default the classifier's ``event_shape``
            when it declares one.
    """

    classifier: Any
    declared_shape: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(self, classifier: Any, *, event_shape: tuple[int, ...] | None = None):
        if not callable(classifier) or not isinstance(classifier, eqx.Module):
            raise TypeError(f"classifier: expected an Equinox module x -> logits, got {type(classifier).__name__}")
        declared = getattr(classifier, "event_shape", None)
        if event_shape is not None:
            event_shape = tuple(int(s) for s in event_shape)
            if declared is not None and tuple(declared) != event_shape:
                raise ValueError(f"event_shape: {event_shape} disagrees with the classifier's {tuple(declared)}")
        self.classifier = classifier
        self.declared_shape = event_shape if event_shape is not None else (None if declared is None else tuple(declared))

    @property
    def event_shape(self) -> tuple[int, ...] | None:
        return self.declared_shape

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(classifier=self.classifier, event_shape=self.declared_shape)

    def logits(self, x: Float[Array, "*event"]) -> Float[Array, " classes"]:
        """``f(x)``, checked to be one vector of logits."""
        out = self.classifier(x)
        if out.ndim != 1 or out.shape[0] < 2:
            raise ValueError(f"classifier: expected a vector of at least 2 logits for one example, got shape {out.shape}")
        return out

    def log_prob_y(self, x: Float[Array, "*event"]) -> Float[Array, " classes"]:
        """``log p(y | x)`` for every class ``y``: the log softmax of the logits."""
        return jax.nn.log_softmax(self.logits(x))

    def log_prob_of(self, x: Float[Array, "*event"], y: Int[Array, ""]) -> Float[Array, ""]:
        """``log p(y | x)`` of one label."""
        return self.log_prob_y(x)[y]

    def __call__(self, x: Float[Array, "*event"]) -> Float[Array, ""]:
        return -jax.nn.logsumexp(self.logits(x))
