"""GoogLeNet (Szegedy et al. 2015): its Inception block (figure 8-11, four branches side by side) and a small GoogLeNet for MNIST."""

from __future__ import annotations
from typing import List, Sequence, Tuple, Union

from numpy.typing import DTypeLike
import numpy as np

from ..nn import Concat, Convolution, GlobalAveragePooling, Layer, Pooling
from .init import affine_layer, conv_layer
from .sequential import NamedModel, Sequential
from .settings import _config_int, _config_ints

Block = Tuple[int, Tuple[int, int], Tuple[int, int], int]


def inception(
    in_channels: int,
    ones: int,
    threes: Tuple[int, int],
    fives: Tuple[int, int],
    pool_projection: int,
    rng: np.random.Generator,
    dtype: DTypeLike = np.float32,
) -> Concat:
    """The Inception block of figure 8-11, each convolution with its ReLU:

        1x1 (``ones`` filters);
        1x1 (``threes[0]``) -> 3x3 pad 1 (``threes[1]``);
        1x1 (``fives[0]``) -> 5x5 pad 2 (``fives[1]``);
        3x3 max-pooling, stride 1, pad 1 -> 1x1 (``pool_projection``);

    concatenated along the channels: ones + threes[1] + fives[1] + pool_projection of them,
    at the input's height and width.
    """
    counts = (in_channels, ones, *threes, *fives, pool_projection)
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in counts):
        raise ValueError(f"inception: every channel count must be a positive int, got {counts}")

    def conv(c_in: int, c_out: int, size: int) -> Convolution:
        return conv_layer(c_in, c_out, size, rng, dtype, pad=size // 2, relu=True)

    return Concat(
        Sequential(conv(in_channels, ones, 1)),
        Sequential(conv(in_channels, threes[0], 1), conv(threes[0], threes[1], 3)),
        Sequential(conv(in_channels, fives[0], 1), conv(fives[0], fives[1], 5)),
        Sequential(Pooling(3, 3, stride=1, pad=1), conv(in_channels, pool_projection, 1)),
    )


class GoogLeNet(NamedModel):
    """A small GoogLeNet for 28x28 inputs (Szegedy et al. 2015, chapter 8.2.2)::

        conv3x3 (32) - relu - pool 2x2 -
        inception (-> 64) - inception (-> 96) - pool 2x2 -
        inception (-> 128) - global average pool - affine (52k parameters)

    Each inception block is figure 8-11's (``inception``); the 1x1 convolutions before the
    3x3 and 5x5 ones and after the pooling reduce the channels those see.
    """

    # The blocks' (ones, (reduce, threes), (reduce, fives), pool projection), in two stages
    # with a 2x2 pooling between them
    STAGES: Tuple[Tuple[Block, ...], ...] = (
        ((16, (16, 32), (8, 8), 8), (32, (24, 32), (8, 16), 16)),
        ((48, (32, 48), (8, 16), 16),),
    )

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        output_size: int = 10,
        dtype: DTypeLike = np.float32,
        seed: Union[None, int, np.random.Generator] = None,
    ) -> None:
        model = "GoogLeNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        output_size = _config_int(model, "output_size", output_size)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {"input_dim": list(input_dim), "output_size": output_size}
        stem = 32
        layers: List[Layer] = [conv_layer(input_dim[0], stem, 3, rng, dtype, relu=True), Pooling(2, 2)]
        channels = stem
        for stage, blocks in enumerate(self.STAGES):
            if stage:
                layers.append(Pooling(2, 2))
            for ones, threes, fives, projection in blocks:
                layers.append(inception(channels, ones, threes, fives, projection, rng, dtype))
                channels = ones + threes[1] + fives[1] + projection
        layers += [GlobalAveragePooling(), affine_layer(channels, output_size, rng, dtype)]
        super().__init__(*layers, rng=rng)
