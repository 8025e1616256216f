"""Energy networks: Equinox modules mapping one example to a scalar energy."""

from ._gaussian import GaussianEnergy as GaussianEnergy
from ._mlp import LearnableSwish as LearnableSwish
from ._mlp import MLPEnergy as MLPEnergy
from ._conditional import NoiseConditionedMLPEnergy as NoiseConditionedMLPEnergy
from ._conv import ConvEnergy as ConvEnergy
from declebm._conv2d import conv2d as conv2d
from ._conv import NoiseConditionedConvEnergy as NoiseConditionedConvEnergy
from ._mixture import MixtureEnergy as MixtureEnergy
from ._classifier import ClassifierEnergy as ClassifierEnergy
from ._classifier import MLPClassifier as MLPClassifier
from ._resnet import LeakyReLU as LeakyReLU
from ._resnet import NoiseConditionedResNetEnergy as NoiseConditionedResNetEnergy
from ._resnet import ResNetEnergy as ResNetEnergy
