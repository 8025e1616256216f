"""Datasets that need no download: 2-D toys with exact densities where they exist,
scikit-learn's bundled digits, MNIST, Fashion-MNIST and CIFAR-10 from their standard files
in a local folder, arrays from local files, and the pixel transforms image recipes use."""

from ._toy import TOY_NAMES as TOY_NAMES
from ._toy import has_log_prob as has_log_prob
from ._toy import toy as toy
from ._toy import toy_log_prob as toy_log_prob
from ._toy import toy_mode_fraction as toy_mode_fraction
from ._toy import toy_sample_metrics as toy_sample_metrics
from ._files import digits as digits
from ._files import load as load
from ._images import cifar10 as cifar10
from ._images import fashion_mnist as fashion_mnist
from ._images import from_symmetric_range as from_symmetric_range
from ._images import inverse_logit_transform as inverse_logit_transform
from ._images import logit_transform as logit_transform
from ._images import mnist as mnist
from ._images import to_symmetric_range as to_symmetric_range
