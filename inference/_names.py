"""One vocabulary of strategy names across examples and CLIs."""

from __future__ import annotations

from typing import Callable

from declebm import AbstractStrategy

from ._maximum_likelihood import ContrastiveDivergence, PersistentCD, ReplayBufferML, ShortRunML
from ._nce import NCE
from ._particles import ParticleDynamics
from ._samplers import MALA, Langevin
from ._score_matching import DenoisingScoreMatching, ExactScoreMatching, SlicedScoreMatching

# Defaults tuned for 2-D toys with unit-scale data (the examples' setting).
_DEFAULTS: dict[str, Callable[[], AbstractStrategy]] = {
    "cd": lambda: ContrastiveDivergence(Langevin(step_size=0.01), steps=10),
    "pcd": lambda: PersistentCD(MALA(step_size=0.2), steps=20),
    "shortrun": lambda: ShortRunML(Langevin(step_size=0.05), steps=40),
    "replay": lambda: ReplayBufferML(Langevin(step_size=0.05), steps=20),
    "esm": lambda: ExactScoreMatching(),
    "dsm": lambda: DenoisingScoreMatching(sigma=0.1),
    "ssm": lambda: SlicedScoreMatching(num_projections=1),
    "nce": lambda: NCE(),
    "particles": lambda: ParticleDynamics("beta", num_particles=1000, correction_steps=10, correction_step_size=1e-2),
}

STRATEGY_NAMES: tuple[str, ...] = tuple(_DEFAULTS)


def strategy_from_name(name: str) -> AbstractStrategy:
    """A default-configured strategy by its short name: ``cd``, ``pcd``, ``shortrun``,
    ``replay`` (MCMC maximum likelihood), ``esm``, ``dsm``, ``ssm`` (score matching),
    ``nce`` (noise-contrastive estimation), ``particles`` (particle dynamics). The same vocabulary as every example's
    ``--strategy``."""
    if name not in _DEFAULTS:
        raise ValueError(f"name: unknown strategy {name!r}; choose one of {', '.join(_DEFAULTS)}")
    return _DEFAULTS[name]()
