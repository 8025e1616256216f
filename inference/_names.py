"""One vocabulary of strategy names across examples and CLIs."""

from __future__ import annotations

from typing import Callable

from declebm import AbstractStrategy

from ._maximum_likelihood import ContrastiveDivergence, PersistentCD, ReplayBufferML, ShortRunML
from ._samplers import MALA, Langevin

# Defaults tuned for 2-D toys with unit-scale data (the examples' setting).
_DEFAULTS: dict[str, Callable[[], AbstractStrategy]] = {
    "cd": lambda: ContrastiveDivergence(Langevin(step_size=0.01), steps=10),
    "pcd": lambda: PersistentCD(MALA(step_size=0.2), steps=20),
    "shortrun": lambda: ShortRunML(Langevin(step_size=0.05), steps=40),
    "replay": lambda: ReplayBufferML(Langevin(step_size=0.05), steps=20),
}

STRATEGY_NAMES: tuple[str, ...] = tuple(_DEFAULTS)


def strategy_from_name(name: str) -> AbstractStrategy:
    """A default-configured strategy by its short name: ``cd``, ``pcd``, ``shortrun``,
    ``replay`` (and the MCMC-free ones as they are added)."""
    if name not in _DEFAULTS:
        raise ValueError(f"name: unknown strategy {name!r}; choose one of {', '.join(_DEFAULTS)}")
    return _DEFAULTS[name]()
