"""ResNet (He et al. 2016): a small residual network for MNIST, made of basic blocks."""

from __future__ import annotations
from typing import List, Sequence, Union

from numpy.typing import DTypeLike
import numpy as np

from ..nn import GlobalAveragePooling, Layer, Relu, Residual
from .init import affine_layer, batch_norm_layer, conv_layer
from .limits import MAX_LAYERS, _short
from .sequential import NamedModel, Sequential
from .settings import _config_int, _config_ints, _config_layers


def basic_block(
    in_channels: int, channels: int, stride: int, rng: np.random.Generator, dtype: DTypeLike
) -> List[Layer]:
    """ResNet's basic block: conv3x3 - BN - relu - conv3x3 - BN, plus the shortcut, then relu.

    The shortcut is the identity where the shapes agree, else a strided 1x1 convolution
    with BN (a projection).
    """
    body = Sequential(
        conv_layer(in_channels, channels, 3, rng, dtype, stride=stride),
        batch_norm_layer(channels, dtype, relu=True),
        conv_layer(channels, channels, 3, rng, dtype),
        batch_norm_layer(channels, dtype),
    )
    shortcut = None
    if stride != 1 or in_channels != channels:
        shortcut = Sequential(
            conv_layer(in_channels, channels, 1, rng, dtype, stride=stride, pad=0), batch_norm_layer(channels, dtype)
        )
    return [Residual(body, shortcut), Relu()]


class ResNet(NamedModel):
    """A small ResNet for MNIST (He et al. 2016, chapter 8.2.3)::

        conv3x3 - BN - relu - [stage: basic blocks] x len(widths) - global average pool - affine

    Stage s has ``blocks[s]`` basic blocks of ``widths[s]`` channels; every stage after the
    first halves the resolution with a stride-2 first block (28 -> 14 -> 7).  The default,
    widths (16, 32, 64) and two blocks a stage, has 175k parameters.
    """

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (2, 2, 2),
        output_size: int = 10,
        dtype: DTypeLike = np.float32,
        seed: Union[None, int, np.random.Generator] = None,
    ) -> None:
        model = "ResNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        widths = _config_ints(model, "widths", widths, allow_empty=False)
        blocks = _config_ints(model, "blocks", blocks, maximum=MAX_LAYERS, allow_empty=False)
        output_size = _config_int(model, "output_size", output_size)
        if len(widths) != len(blocks):
            raise ValueError(
                f"ResNet: widths and blocks must be equally long, non-empty lists; got "
                f"{_short(widths)} and {_short(blocks)}"
            )
        _config_layers(model, 4 + 10 * sum(blocks))  # a block: Residual, body (4), shortcut (2), Relu
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {
            "input_dim": list(input_dim),
            "widths": list(widths),
            "blocks": list(blocks),
            "output_size": output_size,
        }
        layers = [conv_layer(input_dim[0], widths[0], 3, rng, dtype), batch_norm_layer(widths[0], dtype, relu=True)]
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                layers += basic_block(channels, width, stride, rng, dtype)
                channels = width
        layers += [GlobalAveragePooling(), affine_layer(channels, output_size, rng, dtype)]
        super().__init__(*layers, rng=rng)
