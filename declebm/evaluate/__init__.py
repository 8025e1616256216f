"""Honest evaluation: exact normalisation on grids in 1-D and 2-D."""

from ._grid import grid_log_prob as grid_log_prob
from ._grid import grid_log_z as grid_log_z
from ._grid import grid_nll as grid_nll
from ._grid import grid_points as grid_points
