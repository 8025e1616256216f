"""Datasets that need no download: 2-D toys with exact densities where they exist,
scikit-learn's bundled digits, and arrays from local files."""

from ._toy import TOY_NAMES as TOY_NAMES
from ._toy import has_log_prob as has_log_prob
from ._toy import toy as toy
from ._toy import toy_log_prob as toy_log_prob
from ._toy import toy_mode_fraction as toy_mode_fraction
from ._toy import toy_sample_metrics as toy_sample_metrics
from ._files import digits as digits
from ._files import load as load
