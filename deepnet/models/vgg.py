"""VGG (Simonyan & Zisserman 2014): a net of 3x3 convolutions and poolings from a config."""

from __future__ import annotations
from typing import List, Sequence, Union

from numpy.typing import DTypeLike
import math

import numpy as np

from ..nn import Dropout, Layer, Pooling, Relu
from .init import affine_layer, batch_norm_layer, conv_layer
from .limits import MAX_LAYERS, _short
from .sequential import NamedModel
from .settings import _config_float, _config_flag, _config_int, _config_ints, _config_layers, _next_shape


class VGG(NamedModel):
    """A VGG-style net (Simonyan & Zisserman 2014) from a config such as
    ``[16, 16, "M", 32, 32, "M", 64, 64, "M"]``: a number is a 3x3 convolution (pad 1) with
    that many filters and a ReLU (with ``batch_norm``, conv - BN - relu), "M" a 2x2 max-pool.
    Then ``hidden`` fully connected ReLU layers (each followed by dropout when ``dropout`` > 0)
    and the output layer.
    """

    def __init__(
        self,
        config: Sequence[Union[int, str]] = (16, 16, "M", 32, 32, "M", 64, 64, "M"),
        input_dim: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (50,),
        output_size: int = 10,
        batch_norm: bool = False,
        dropout: float = 0.5,
        dtype: DTypeLike = np.float32,
        seed: Union[None, int, np.random.Generator] = None,
    ) -> None:
        model = "VGG"
        if not isinstance(config, (list, tuple)) or len(config) > MAX_LAYERS:
            raise ValueError(f"VGG: 'config' must be a list of positive ints and 'M', got {_short(config)}")
        for index, item in enumerate(config):
            if not (isinstance(item, str) and item == "M"):
                try:
                    _config_int(model, f"config[{index}]", item)
                except ValueError as exc:
                    raise ValueError(f"{exc} (or 'M', a pooling)") from None
        config = [item if isinstance(item, str) else int(item) for item in config]
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        hidden = _config_ints(model, "hidden", hidden)
        output_size = _config_int(model, "output_size", output_size)
        batch_norm = _config_flag(model, "batch_norm", batch_norm)
        dropout = _config_float(model, "dropout", dropout, 0, 1, include_maximum=False)
        _config_layers(model, 2 * len(config) + 3 * len(hidden) + 1)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {
            "config": list(config),
            "input_dim": list(input_dim),
            "hidden": list(hidden),
            "output_size": output_size,
            "batch_norm": bool(batch_norm),
            "dropout": dropout,
        }
        layers: List[Layer] = []
        channels = input_dim[0]
        for item in config:
            if isinstance(item, str):
                layers.append(Pooling(2, 2, stride=2))
            elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                layers.append(conv_layer(channels, item, 3, rng, dtype, relu=not batch_norm))
                if batch_norm:
                    layers.append(batch_norm_layer(item, dtype, relu=True))
                channels = item
            else:
                raise ValueError(f"VGG: config entries must be positive ints or 'M', got {item!r}")
        shape = (1,) + tuple(input_dim)
        for index, layer in enumerate(layers):
            shape = _next_shape(model, f"layer {index} ({type(layer).__name__})", layer, shape)
        features = math.prod(shape[1:])
        for width in hidden:
            layers += [affine_layer(features, width, rng, dtype), Relu()]
            if dropout:
                layers.append(Dropout(dropout, rng=rng))
            features = width
        layers.append(affine_layer(features, output_size, rng, dtype))
        super().__init__(*layers, rng=rng)
