"""The book's networks: DeepConvNet (chapter 8) and SimpleConvNet (chapter 7).

Both keep the book's parameter names (W1, b1, ...; gamma1, beta1, ... for DeepConvNet's BN
variant) through ``aliases``, so the book's parameter files load into them.
"""

from __future__ import annotations
from typing import Any, Dict, List, Sequence, Tuple, Union

from numpy.typing import DTypeLike
import math

import numpy as np

from ..nn import Affine, BatchNormalization, Convolution, Dropout, Layer, Pooling, Relu
from .init import affine_layer, batch_norm_layer, conv_layer, normal, zeros
from .sequential import NamedModel
from .settings import _config_conv, _config_flag, _config_float, _config_int, _config_ints, _config_layers, _next_shape

# A convolution of the book's settings: {"filter_num", "filter_size", "pad", "stride"}.
ConvParam = Dict[str, Any]

_BOOK_CONVS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


class DeepConvNet(NamedModel):
    """Chapter 8's deep CNN for MNIST::

        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        affine - relu - dropout - affine - dropout - softmax

    Weights use He initialisation (std sqrt(2 / fan_in)); biases start at zero.
    ``seed`` seeds ``self.rng``, which draws the initial weights and the dropout masks.
    ``batch_norm=True`` is the BN variant: every convolution and the hidden affine layer
    are followed by BatchNormalization (parameters gamma1..gamma7, beta1..beta7).

    Parameters
    ----------
    input_dim : sequence of int
        (channels, height, width) of an input image.
    conv_param_1, ..., conv_param_6 : dict
        Each convolution's ``filter_num``, ``filter_size``, ``pad`` and ``stride``.
    hidden_size : int
        Units of the hidden affine layer.
    output_size : int
        Number of classes.
    dtype : dtype
        The parameters' dtype.
    seed : int or numpy.random.Generator, optional
        Seed of the weights and dropout masks.
    batch_norm : bool
        Follow each convolution with BatchNormalization.
    """

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        conv_param_1: ConvParam = _BOOK_CONVS[0],
        conv_param_2: ConvParam = _BOOK_CONVS[1],
        conv_param_3: ConvParam = _BOOK_CONVS[2],
        conv_param_4: ConvParam = _BOOK_CONVS[3],
        conv_param_5: ConvParam = _BOOK_CONVS[4],
        conv_param_6: ConvParam = _BOOK_CONVS[5],
        hidden_size: int = 50,
        output_size: int = 10,
        dtype: DTypeLike = np.float32,
        seed: Union[None, int, np.random.Generator] = None,
        batch_norm: bool = False,
    ) -> None:
        model = "DeepConvNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        conv_params = [
            _config_conv(model, f"conv_param_{i}", c)
            for i, c in enumerate(
                (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6), 1
            )
        ]
        hidden_size = _config_int(model, "hidden_size", hidden_size)
        output_size = _config_int(model, "output_size", output_size)
        batch_norm = _config_flag(model, "batch_norm", batch_norm)
        _config_layers(model, 23 if batch_norm else 16)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv_params = conv_params
        self._config = {
            "input_dim": list(input_dim),
            "hidden_size": hidden_size,
            "output_size": output_size,
            "batch_norm": bool(batch_norm),
            **{f"conv_param_{i}": c for i, c in enumerate(self.conv_params, 1)},
        }
        channels, height, width = input_dim
        layers: List[Layer] = []
        names: List[str] = []
        shape: Tuple[int, ...] = (1, channels, height, width)
        for index, conv in enumerate(self.conv_params, 1):
            # conv - relu as one fused layer (one pass through memory); with BN, conv - BN - relu
            layer = conv_layer(
                shape[1],
                conv["filter_num"],
                conv["filter_size"],
                rng,
                dtype,
                conv["stride"],
                conv["pad"],
                relu=not batch_norm,
            )
            layers.append(layer)
            names += [f"W{index}", f"b{index}"]
            if batch_norm:  # conv - BN+relu (fused)
                layers.append(batch_norm_layer(conv["filter_num"], dtype, relu=True))
                names += [f"gamma{index}", f"beta{index}"]
            shape = _next_shape(model, f"conv_param_{index}", layer, shape)
            if index % 2 == 0:  # a pooling layer follows every second convolution
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
                shape = _next_shape(model, f"the pooling after conv_param_{index}", layers[-1], shape)
        layers.append(affine_layer(math.prod(shape[1:]), hidden_size, rng, dtype))
        names += ["W7", "b7"]
        if batch_norm:
            layers.append(batch_norm_layer(hidden_size, dtype, relu=True))
            names += ["gamma7", "beta7"]
        else:
            layers.append(Relu())
        layers += [Dropout(0.5, rng=rng), affine_layer(hidden_size, output_size, rng, dtype), Dropout(0.5, rng=rng)]
        names += ["W8", "b8"]
        super().__init__(*layers, rng=rng)
        self.aliases = _book_aliases(self, names)


class SimpleConvNet(NamedModel):
    """Chapter 7's CNN: conv - relu - pool - affine - relu - affine - softmax.

    Weights are drawn from N(0, weight_init_std^2); biases start at zero.
    """

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        conv_param: ConvParam = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        dtype: DTypeLike = np.float32,
        seed: Union[None, int, np.random.Generator] = None,
    ) -> None:
        model = "SimpleConvNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        conv_param = _config_conv(model, "conv_param", conv_param)
        hidden_size = _config_int(model, "hidden_size", hidden_size)
        output_size = _config_int(model, "output_size", output_size)
        weight_init_std = _config_float(model, "weight_init_std", weight_init_std, 0, 1e3)
        _config_layers(model, 6)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv_param = conv_param
        self._config = {
            "input_dim": list(input_dim),
            "conv_param": self.conv_param,
            "hidden_size": hidden_size,
            "output_size": output_size,
            "weight_init_std": weight_init_std,
        }
        channels, height, width = input_dim
        filters, size = conv_param["filter_num"], conv_param["filter_size"]

        def weights(*shape: int) -> np.ndarray:
            return normal(shape, weight_init_std, rng, dtype)

        conv = Convolution(
            weights(filters, channels, size, size), zeros(filters, dtype), conv_param["stride"], conv_param["pad"]
        )
        pool = Pooling(pool_h=2, pool_w=2, stride=2)
        conv_shape = _next_shape(model, "conv_param", conv, (1, channels, height, width))
        pooled = math.prod(_next_shape(model, "the pooling after conv_param", pool, conv_shape)[1:])
        layers = [
            conv,
            Relu(),
            pool,
            Affine(weights(pooled, hidden_size), zeros(hidden_size, dtype)),
            Relu(),
            Affine(weights(hidden_size, output_size), zeros(output_size, dtype)),
        ]
        super().__init__(*layers, rng=rng)
        self.aliases = _book_aliases(self, ["W1", "b1", "W2", "b2", "W3", "b3"])


def _book_aliases(net: NamedModel, names: List[str]) -> Dict[str, str]:
    """Map the hierarchical names of the parameters, in order, onto the book's names; the
    running statistics of a BN layer whose gamma is "gamma3" become "running_mean3" and
    "running_var3"."""
    hierarchical = [prefix + name for prefix, layer in net.named_layers() for name in layer.params]
    if len(hierarchical) != len(names):
        raise AssertionError(f"{len(hierarchical)} parameters for {len(names)} names")
    aliases = dict(zip(hierarchical, names))
    for prefix, layer in net.named_layers():
        if isinstance(layer, BatchNormalization):
            index = aliases[prefix + "gamma"].removeprefix("gamma")
            aliases.update({prefix + name: f"{name}{index}" for name in layer.buffers})
    return aliases
