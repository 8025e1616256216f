"""Fully connected energies for vector data."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


class LearnableSwish(eqx.Module):
    r"""Swish with a learnable slope, ``f(x) = x * sigmoid(beta * x)`` (Ramachandran et
    al. 2017), as used by Neklyudov et al. (2021) and Grathwohl et al.'s LSD code.

    Used as an ``eqx.nn.MLP`` activation (``MLPEnergy(activation=LearnableSwish())``),
    equinox copies the module to every hidden unit of every layer, so each unit learns
    its own ``beta``, started at ``beta`` (default 1: SiLU).
    """

    beta: Float[Array, "..."]

    def __init__(self, beta: ArrayLike = 1.0):
        self.beta = jnp.asarray(beta, jnp.float32)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``):
        ``beta``'s shape and dtype; its values come from the file."""
        return dict(beta=jax.ShapeDtypeStruct(self.beta.shape, self.beta.dtype))

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        return x * jax.nn.sigmoid(self.beta * x)


def mlp_activation(mlp: eqx.nn.MLP) -> Callable[[Array], Array] | eqx.Module:
    """The ``activation`` an ``eqx.nn.MLP`` was built with, as its constructor takes it.

    The MLP stores a learnable activation (an Equinox module such as ``LearnableSwish``)
    copied to every hidden unit: its arrays gain two leading axes ``(depth, width)``.
    Rebuilding the MLP from the stored copy would add two more, so the one-unit structure
    is returned (arrays of the trailing shape, zeros: only the structure matters to
    ``declebm.load``, which then overwrites every leaf). A function is returned as is."""
    activation = mlp.activation
    if not isinstance(activation, eqx.Module):
        return activation
    arrays, rest = eqx.partition(activation, eqx.is_array)
    arrays = jax.tree.map(lambda a: jnp.zeros(a.shape[2:], a.dtype), arrays)
    return eqx.combine(arrays, rest)

from declebm._checks import check_callable, check_key, check_number


def check_mlp_sizes(owner: str, in_size: int, width: int, depth: int, activation=None, key=None) -> None:
    """Positive integer sizes (``depth`` may be 0: a linear energy), a callable
    activation and a PRNG key, checked with ``declebm``'s shared helpers."""
    for name, v in (("in_size", in_size), ("width", width), ("depth", depth)):
        check_number(v, name, integer=True, low=0 if name == "depth" else 1)
    if activation is not None:
        check_callable(activation, "activation", "a function such as jax.nn.silu")
    if key is not None:
        check_key(key)


class MLPEnergy(eqx.Module):
    r"""``E(x) = MLP(x)``: an ``in_size -> width -> ... -> 1`` perceptron with ``depth``
    hidden layers (Swish/SiLU by default, as in Neklyudov et al. 2021 and Song & Kingma
    2021's toy models).

    Arguments:
        in_size: dimension of one example; also declares ``event_shape = (in_size,)``.
        width: hidden units per layer. depth: number of hidden layers.
        activation: the nonlinearity (smooth ones keep Langevin and score matching well
            posed). A module with parameters, such as ``LearnableSwish()``, is copied to
            every hidden unit and trained: a Swish with a learnable beta per unit.
        key: a ``jax.random.key`` for the initial weights.
    """

    mlp: eqx.nn.MLP
    in_size: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        width: int = 128,
        depth: int = 2,
        activation: Callable[[Array], Array] | eqx.Module = jax.nn.silu,
        *,
        key: PRNGKeyArray,
    ):
        check_mlp_sizes("MLPEnergy", in_size, width, depth, activation, key)
        self.in_size = in_size
        self.mlp = eqx.nn.MLP(in_size, "scalar", width, depth, activation=activation, key=key)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.in_size,)

    def constructor_kwargs(self) -> dict:
        """The arguments that rebuild this module's structure (``declebm.save``/``load``)."""
        return dict(in_size=self.in_size, width=self.mlp.width_size, depth=self.mlp.depth, activation=mlp_activation(self.mlp))

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        return self.mlp(x)
