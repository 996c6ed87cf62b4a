"""The book's layers (Deep Learning from Scratch, common/layers.py): the import path of deepnet.nn's layers.

Every layer follows one contract:

- ``params``: its own parameters, name -> array (``W``, ``b``, ``gamma``, ``beta``), held by
  reference, so an optimizer that updates them in place is seen by the layer;
- ``grads``: the gradients of the last ``backward``, under the same names (empty while the
  layer is frozen: ``trainable = False``);
- ``buffers``: state that is saved with a model but not trained (BatchNormalization's
  running statistics);
- ``forward(x, train=False)`` keeps what ``backward`` needs; ``backward(dout)`` returns dx;
- ``output_shape(input_shape)``: the shape ``forward`` returns for an input of that shape
  (batch axis included);
- ``config()``: the constructor's settings as JSON-ready data, from which
  ``deepnet.models.build`` rebuilds the layer (the architecture half of a model file).

The layers live in deepnet.nn, one module per kind; this module re-exports them.
The book's attributes keep working: ``W, b, dW, db`` and ``gamma, beta, dgamma, dbeta``,
and ``train_flg=`` where the book passes it.  The speed lives below, in deepnet.functional
and its backends.

Layers compute in the dtype of their parameters; inputs of another float dtype are
converted once at the boundary.  Parameter-free layers keep the input's dtype.  float16
is stored as half and computed in float32.  NumPy and CuPy arrays both work.
"""
from __future__ import annotations
from deepnet.nn import (Affine, BatchNormalization, Convolution, Dropout, Flatten, GlobalAveragePooling, Layer,
                        Pooling, Relu, Residual, Sigmoid, SoftmaxWithLoss, _pair, _train_mode,
                        _WeightAndBias, cross_entropy_error, softmax)

__all__ = ["Layer", "Relu", "Sigmoid", "Affine", "Convolution", "Pooling", "Dropout",
           "BatchNormalization", "Flatten", "GlobalAveragePooling", "Residual",
           "SoftmaxWithLoss", "softmax", "cross_entropy_error", "_pair", "_train_mode", "_WeightAndBias"]
