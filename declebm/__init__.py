"""declebm: declare an energy-based model, choose how to learn it.

    model = EBM(MLPEnergy(in_size=2, key=key))
    result = fit(model, data, strategy=PersistentCD(sampler=MALA(0.05), steps=20), ...)
"""

from . import datasets as datasets
from . import evaluate as evaluate
from . import plot as plot  # matplotlib itself is imported by the first plot, not here
from ._base import GaussianBase as GaussianBase
from ._ebm import EBM as EBM
from ._estimator import AbstractLogZEstimator as AbstractLogZEstimator
from ._estimator import LogZEstimate as LogZEstimate
from ._fit import FitResult as FitResult
from ._guard import DivergenceGuard as DivergenceGuard
from ._loop import TrainingDivergedError as TrainingDivergedError
from ._fit import fit as fit
from ._sample import sample as sample
from ._serialise import load as load
from ._serialise import save as save
from ._numpyro import EBMDistribution as EBMDistribution
from ._diagnostics import ChainDiagnostics as ChainDiagnostics
from ._sampler import AbstractSampler as AbstractSampler
from ._sampler import SamplerInfo as SamplerInfo
from ._strategy import AbstractStrategy as AbstractStrategy

__version__ = "0.1.0"

# The public face may expose the subpackages as attributes, as `equinox` exposes `eqx.nn`.
from . import inference as inference  # noqa: E402
from . import models as models  # noqa: E402
