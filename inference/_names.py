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

# Recovery likelihood on 2-D toys: the code's ladder and b^2 = 2e-4 are for images in [-1, 1].
# In 2-D the level-0 conditional is as wide as the others, so its chains need a larger step;
# the step grows with sigmabar_t / sigmabar_0, so a data level sigma_0 = 0.2 (instead of 0.01)
# keeps the top step (0.69) stable with b^2 = 0.1 (s_0 = 0.10). 8gaussians, 2000 steps, seed 0:
# level-0 grid NLL 3.8 here, 27.9 at b^2 = 2e-3, 162 at 2e-4 (sigma_0 = 0.01); top steps
# above ~0.95 diverge.
_RECOVERY_SIGMA0_2D = 0.2
_RECOVERY_B2_2D = 0.1

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
    "recovery": lambda: DiffusionRecoveryLikelihood(
        schedule=(_RECOVERY_SIGMA0_2D,) + ddpm_level_sigmas()[1:], step_size_constant=_RECOVERY_B2_2D
    ),
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
