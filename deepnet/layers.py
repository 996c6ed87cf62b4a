"""The book's layers (Deep Learning from Scratch, common/layers.py): the import path of deepnet.nn's layers.

The contract every layer follows (params, grads, buffers, forward/backward, output_shape,
config/from_config, cost) is written once, in deepnet.nn.base.

The layers live in deepnet.nn, one module per kind; this module re-exports them.
The book's attributes keep working: ``W, b, dW, db`` and ``gamma, beta, dgamma, dbeta``,
and ``train_flg=`` where the book passes it.  The speed lives below, in deepnet.functional
and its backends.

Layers compute in the dtype of their parameters; inputs of another float dtype are
converted once at the boundary.  Parameter-free layers keep the input's dtype.  float16
is stored as half and computed in float32.  NumPy and CuPy arrays both work.
"""

from __future__ import annotations
from deepnet.nn import (
    Affine,
    BatchNormalization,
    BinaryAffine,
    BinaryConvolution,
    Convolution,
    ConvTranspose,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    Layer,
    Pooling,
    Relu,
    Residual,
    Concat,
    Sigmoid,
    SigmoidWithLoss,
    SpatialSoftmaxWithLoss,
    LeakyReLU,
    Tanh,
    SoftmaxWithLoss,
    _pair,
    _train_mode,
    _WeightAndBias,
    cross_entropy_error,
    softmax,
)

__all__ = [
    "Layer",
    "Relu",
    "Sigmoid",
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
    "SoftmaxWithLoss",
    "SigmoidWithLoss",
    "SpatialSoftmaxWithLoss",
    "LeakyReLU",
    "Tanh",
    "softmax",
    "cross_entropy_error",
    "_pair",
    "_train_mode",
    "_WeightAndBias",
]
