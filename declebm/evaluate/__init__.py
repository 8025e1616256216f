"""Honest evaluation: exact normalisation on grids in 1-D and 2-D, log Z estimates, sample
diagnostics, and image metrics named after the features they use."""

from ._grid import grid_log_prob as grid_log_prob
from ._grid import grid_log_z as grid_log_z
from ._grid import grid_nll as grid_nll
from ._grid import grid_points as grid_points
from ._mmd import median_bandwidth as median_bandwidth
from ._mmd import mmd as mmd
from ._long_run import LongRunReport as LongRunReport
from ._long_run import long_run as long_run
from ._entropy import nearest_neighbour_entropy as nearest_neighbour_entropy
from ._ksd import ksd as ksd
from ._diagnose import DiagnosisReport as DiagnosisReport
from ._diagnose import SamplerWarning as SamplerWarning
from ._diagnose import diagnose as diagnose
from .._diagnostics import ess as ess
from .._diagnostics import rhat as rhat
from ._log_z import LogLikelihoodEstimate as LogLikelihoodEstimate
from ._log_z import log_likelihood as log_likelihood
from ._log_z import log_z as log_z
from ._bits import BitsPerDim as BitsPerDim
from ._bits import bits_per_dim as bits_per_dim
from ._images import ClassifierFeatures as ClassifierFeatures
from ._images import KernelDistance as KernelDistance
from ._images import classifier_features as classifier_features
from ._images import frechet_distance as frechet_distance
from ._images import kernel_distance as kernel_distance
