"""Initialising parameters: He and normal weights, zero biases, and the layers made of them.

Every parameter of every net is allocated here, and charged first to the parameter budget of
the ``build`` in progress (``_parameter_limit``): a spec from a file cannot make deepnet
allocate more than MAX_PARAMETERS.  ``_initialised`` says how the parameters are filled:
drawn at random (a new model), zeros (a model about to be loaded: nothing is drawn) or
shapes only (a skeleton of read-only arrays that take no memory).
"""

from __future__ import annotations
from typing import Iterator, Optional

import numpy as np
from numpy.typing import DTypeLike

from ..functional import IntPair
import contextlib


from ..nn import Affine, BatchNormalization, Convolution
from ..nn.init import (
    _charge,
    _charge_layers,
    _draw,
    _init_mode,
    _initialised,
    _parameter_budget,  # noqa: F401
    _placeholder,
    he_normal,
    normal,
    zeros,
)
from ..nn.init import _parameter_limit as _nn_parameter_limit
from .limits import MAX_LAYERS, MAX_PARAMETERS


@contextlib.contextmanager
def _parameter_limit(limit: Optional[int] = MAX_PARAMETERS, layers: Optional[int] = MAX_LAYERS) -> Iterator[None]:
    with _nn_parameter_limit(limit, layers):
        yield


def conv_layer(
    in_channels: int,
    filters: int,
    kernel: int,
    rng: np.random.Generator,
    dtype: DTypeLike,
    stride: IntPair = 1,
    pad: Optional[IntPair] = None,
    relu: bool = False,
) -> Convolution:
    """A He-initialised Convolution; pad defaults to "same" for odd kernels."""
    pad = kernel // 2 if pad is None else pad
    return Convolution(
        he_normal((filters, in_channels, kernel, kernel), rng, dtype), zeros(filters, dtype), stride, pad, relu=relu
    )


def affine_layer(in_features: int, out_features: int, rng: np.random.Generator, dtype: DTypeLike) -> Affine:
    return Affine(he_normal((in_features, out_features), rng, dtype), zeros(out_features, dtype))


def batch_norm_layer(features: int, dtype: DTypeLike, momentum: float = 0.9, relu: bool = False) -> BatchNormalization:
    return BatchNormalization.new(features, dtype, momentum, relu=relu)
