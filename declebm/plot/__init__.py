"""Plots (needs matplotlib: ``pip install 'declebm[plot]'``)."""

from ._plots import curves as curves
from ._plots import density as density
from ._plots import figure as figure
from ._plots import image_grid as image_grid
from ._plots import images as images
from ._plots import samples as samples
