"""BinaryDeepConvNet: chapter 8's DeepConvNet binarized as in Courbariaux, Hubara et al. 2016."""

from __future__ import annotations
from typing import List, Sequence, Tuple, Union

from numpy.typing import DTypeLike
import math

import numpy as np

from ..nn import Layer, Pooling
from ..nn.binary import BinaryAffine, BinaryConvolution
from ..nn.init import he_normal, zeros
from .init import affine_layer, batch_norm_layer, conv_layer
from .sequential import NamedModel
from .settings import _config_int, _config_ints, _config_layers, _next_shape


class BinaryDeepConvNet(NamedModel):
    """DeepConvNet's six 3x3 convolutions (pad 1, a 2x2 max-pool after every second one)
    with binary weights and activations::

        conv - BN - bconv - pool - BN - bconv - BN - bconv - pool - BN -
        bconv - BN - bconv - pool - BN - baffine - BN - affine - softmax

    The first convolution and the last affine layer are in full precision; every binary
    layer (deepnet.nn.binary) takes the sign of the batch-normalised output before it, so
    BatchNormalization sets each sign's threshold.  Pooling comes before the BN, as in
    the paper: the max of +-1 sums is pooled, then normalised.

    Parameters
    ----------
    input_dim : sequence of int
        (channels, height, width) of an input image.
    channels : sequence of 6 ints
        Filters of each convolution.
    hidden_size : int
        Units of the binary affine layer.
    output_size : int
        Number of classes.
    dtype : dtype
        The parameters' dtype.
    seed : int or numpy.random.Generator, optional
        Seed of the weights.
    """

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (16, 16, 32, 32, 64, 64),
        hidden_size: int = 256,
        output_size: int = 10,
        dtype: DTypeLike = np.float32,
        seed: Union[None, int, np.random.Generator] = None,
    ) -> None:
        model = "BinaryDeepConvNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        channels = _config_ints(model, "channels", channels, 6)
        hidden_size = _config_int(model, "hidden_size", hidden_size)
        output_size = _config_int(model, "output_size", output_size)
        _config_layers(model, 18)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {
            "input_dim": list(input_dim),
            "channels": list(channels),
            "hidden_size": hidden_size,
            "output_size": output_size,
        }
        layers: List[Layer] = []
        shape: Tuple[int, ...] = (1,) + tuple(input_dim)
        for index, filters in enumerate(channels, 1):
            conv: Layer
            if index == 1:
                conv = conv_layer(shape[1], filters, 3, rng, dtype, 1, 1)
            else:
                conv = BinaryConvolution(he_normal((filters, shape[1], 3, 3), rng, dtype), zeros(filters, dtype), 1, 1)
            layers.append(conv)
            shape = _next_shape(model, f"convolution {index}", conv, shape)
            if index % 2 == 0:
                layers.append(Pooling(2, 2, stride=2))
                shape = _next_shape(model, f"the pooling after convolution {index}", layers[-1], shape)
            layers.append(batch_norm_layer(filters, dtype))
        features = math.prod(shape[1:])
        layers += [
            BinaryAffine(he_normal((features, hidden_size), rng, dtype), zeros(hidden_size, dtype)),
            batch_norm_layer(hidden_size, dtype),
            affine_layer(hidden_size, output_size, rng, dtype),
        ]
        super().__init__(*layers, rng=rng)

    def binary_layers(self) -> List[Layer]:
        """The binary layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, (BinaryConvolution, BinaryAffine))]
