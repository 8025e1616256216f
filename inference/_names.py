"""One vocabulary of strategy names across examples and CLIs."""

from __future__ import annotations

from typing import Callable

from declebm import AbstractStrategy

from ._maximum_likelihood import ContrastiveDivergence, PersistentCD, ReplayBufferML, ShortRunML
from ._nce import NCE
from ._recovery import DiffusionRecoveryLikelihood
from ._recovery_schedule import ddpm_level_sigmas
from ._particles import ParticleDynamics
from ._samplers import HMC, MALA, Langevin
from ._score_matching import DenoisingScoreMatching, ExactScoreMatching, SlicedScoreMatching

# Recovery likelihood on 2-D toys. The ladder is variance-preserving: it assumes data of unit
# scale (the code's images in [-1, 1]), and the toys' per-axis std is 1.4-2.3 (8gaussians 2.03),
# so the ladder runs on x / 2 (data_scale=2). In those units the data level is sigma_0 = 0.1
# (0.2 in data units) and b^2 = 0.05 (s = 0.072 .. 0.69: the top step stays below the ~0.95
# where chains diverge; it grows as sqrt(b^2 / sigma_0)). 8gaussians, compare_strategies'
# settings (2000 steps), seeds 0-2: level-0 grid NLL 3.37, 4.08, 3.54 (3.82, 4.49, 3.67 with
# data_scale=1, sigma_0=0.2, b^2=0.1; 162 with the code's constants). The 8 modes are still
# not learned (README, "Diffusion recovery likelihood, in practice").
_RECOVERY_2D = dict(data_scale=2.0, schedule=(0.1,) + ddpm_level_sigmas()[1:], step_size_constant=0.05)

# Defaults tuned for 2-D toys with unit-scale data (the examples' setting).
_DEFAULTS: dict[str, Callable[[], AbstractStrategy]] = {
    "cd": lambda: ContrastiveDivergence(Langevin(step_size=0.01), steps=10),
    "pcd": lambda: PersistentCD(HMC(step_size=0.1, num_integration_steps=5), steps=4, adapt_step_size=True),
    "shortrun": lambda: ShortRunML(Langevin(step_size=0.05), steps=40),
    "replay": lambda: ReplayBufferML(Langevin(step_size=0.05), steps=20),
    "esm": lambda: ExactScoreMatching(),
    "dsm": lambda: DenoisingScoreMatching(sigma=0.1),
    "ssm": lambda: SlicedScoreMatching(num_projections=1),
    "nce": lambda: NCE(),
    "recovery": lambda: DiffusionRecoveryLikelihood(**_RECOVERY_2D),
    "particles": lambda: ParticleDynamics("beta", num_particles=1000, correction_steps=10, correction_step_size=1e-2),
}

STRATEGY_NAMES: tuple[str, ...] = tuple(_DEFAULTS)


def strategy_from_name(name: str) -> AbstractStrategy:
    """A default-configured strategy by its short name: ``cd``, ``pcd``, ``shortrun``,
    ``replay`` (MCMC maximum likelihood), ``esm``, ``dsm``, ``ssm`` (score matching),
    ``nce`` (noise-contrastive estimation), ``recovery`` (diffusion recovery likelihood), ``particles`` (particle
    dynamics). The same vocabulary as every example's
    ``--strategy``."""
    if not isinstance(name, str) or name not in _DEFAULTS:
        raise ValueError(f"name: unknown strategy {name!r}; choose one of {', '.join(_DEFAULTS)}")
    return _DEFAULTS[name]()
