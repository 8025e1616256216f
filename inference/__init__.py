"""Samplers (BlackJAX-backed) and training strategies."""

from ._maximum_likelihood import ContrastiveDivergence as ContrastiveDivergence
from ._maximum_likelihood import MaximumLikelihood as MaximumLikelihood
from ._maximum_likelihood import MCMCState as MCMCState
from ._maximum_likelihood import PersistentCD as PersistentCD
from ._maximum_likelihood import ReplayBufferML as ReplayBufferML
from ._maximum_likelihood import ShortRunML as ShortRunML
from ._particles import ParticleDynamics as ParticleDynamics
from ._particles import ParticleState as ParticleState
from ._samplers import HMC as HMC
from ._samplers import MALA as MALA
from ._samplers import NUTS as NUTS
from ._samplers import Langevin as Langevin
from ._samplers import LangevinState as LangevinState
from ._names import STRATEGY_NAMES as STRATEGY_NAMES
from ._names import strategy_from_name as strategy_from_name
from ._nce import NCE as NCE
from ._nce import NCEState as NCEState
from ._score_matching import DenoisingScoreMatching as DenoisingScoreMatching
from ._score_matching import ExactScoreMatching as ExactScoreMatching
from ._score_matching import SlicedScoreMatching as SlicedScoreMatching
