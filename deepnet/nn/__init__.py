"""deepnet's layers, one module per kind, on one Layer base class that registers every layer type.

``deepnet.layers`` re-exports these names for the book's imports (``from deepnet import
layers as L``).  To add a layer, define a subclass of ``Layer`` in its module (see
deepnet.nn.base): it registers itself, and ``deepnet.models.build``, ``model_spec``,
``load_model`` and ``describe`` know it with no other change.
"""

from __future__ import annotations
from .activations import LeakyReLU, Relu, Sigmoid, Tanh, softmax
from .binary import BinaryAffine, BinaryConvolution
from .base import Layer, _pair, _train_mode, _WeightAndBias
from .containers import Concat, Residual, Sequential
from .conv import Convolution, Pooling
from .linear import Affine, Flatten
from .losses import SigmoidWithLoss, SoftmaxWithLoss, SpatialSoftmaxWithLoss, cross_entropy_error
from .normalization import BatchNormalization
from .pooling import GlobalAveragePooling
from .regularization import Dropout
from .transposed import ConvTranspose

__all__ = [
    "Layer",
    "Relu",
    "Sigmoid",
    "LeakyReLU",
    "Tanh",
    "Affine",
    "Convolution",
    "ConvTranspose",
    "BinaryConvolution",
    "BinaryAffine",
    "Pooling",
    "Dropout",
    "BatchNormalization",
    "Flatten",
    "GlobalAveragePooling",
    "Residual",
    "Concat",
    "Sequential",
    "SoftmaxWithLoss",
    "SigmoidWithLoss",
    "SpatialSoftmaxWithLoss",
    "softmax",
    "cross_entropy_error",
    "_pair",
    "_train_mode",
    "_WeightAndBias",
]
