"""declebm: declare an energy-based model, choose how to learn it.

    model = EBM(MLPEnergy(in_size=2, key=key))
    result = fit(model, data, strategy=PersistentCD(sampler=MALA(0.05), steps=20), ...)
"""

from . import callbacks as callbacks
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


def _subpackage(name: str):
    """``declebm.<name>`` for the subpackages kept in their own top-level folders.

    An install puts ``models/`` and ``inference/`` inside the package (pyproject.toml's
    ``package-dir``), where the import system finds them. In the source tree they are
    siblings of this folder, and a Python started in the repository root imports this
    folder (the working directory comes first on ``sys.path``) in place of the installed
    package: there ``declebm.<name>`` is loaded from the folder that pyproject.toml
    beside it maps to it, so the checkout imports as the install does. Only a folder the
    source tree's own mapping names is used, never an unrelated one.
    """
    import importlib
    import importlib.util
    import os
    import sys

    full = f"{__name__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name != full:
            raise
        missing = e
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = None
    try:
        import tomllib

        with open(os.path.join(root, "pyproject.toml"), "rb") as f:
            mapped = tomllib.load(f)["tool"]["setuptools"]["package-dir"][full]
        folder = os.path.join(root, mapped)
    except (OSError, KeyError, TypeError, ValueError):
        pass
    if folder is None or not os.path.isfile(os.path.join(folder, "__init__.py")):
        raise missing
    spec = importlib.util.spec_from_file_location(full, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(full, None)
        raise
    return module


# The public face may expose the subpackages as attributes, as `equinox` exposes `eqx.nn`.
inference = _subpackage("inference")
models = _subpackage("models")
