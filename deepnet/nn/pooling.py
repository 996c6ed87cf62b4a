"""Global pooling: GlobalAveragePooling, (N, C, H, W) -> (N, C)."""

from __future__ import annotations
from typing import Any, Optional, Sequence, Tuple
from deepnet.functional import Array
from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype

from .base import Layer


class GlobalAveragePooling(Layer):
    """(N, C, H, W) -> (N, C): the mean of every feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.x_shape: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "GlobalAveragePooling.forward", ndim=4)
        self.x_shape = x.shape
        return F.global_average_pool(x)

    def backward(self, dout: Array) -> Array:
        N, C, H, W = self.x_shape
        xp = get_array_module(dout)
        acc = compute_dtype(dout.dtype)
        share = dout.astype(acc, copy=False) / (H * W) if H * W else dout.astype(acc)
        return xp.broadcast_to(share[:, :, None, None], self.x_shape).astype(dout.dtype)

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return tuple(input_shape[:2])

    def check_cost(self, shape: Sequence[int], check: Any) -> Sequence[int]:
        check.spatial(shape)
        return super().check_cost(shape, check)
