"""GoogLeNet's Inception block (Szegedy et al. 2015, figure 8-11): four branches side by side, concatenated."""

from __future__ import annotations
from typing import Tuple

from numpy.typing import DTypeLike
import numpy as np

from ..nn import Concat, Convolution, Pooling
from .init import conv_layer
from .sequential import Sequential


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
