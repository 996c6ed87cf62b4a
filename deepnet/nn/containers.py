"""Containers of layers: Residual (Sequential, also a model, is in deepnet.models.sequential)."""

from __future__ import annotations
from typing import Optional, Sequence, Tuple
from deepnet.functional import Array
from .base import Layer, _train_mode


class Residual(Layer):
    """A shortcut connection (ResNet): y = body(x) + shortcut(x).

    ``shortcut`` is the identity by default; where the body changes the shape, pass a
    projection such as a (strided) 1x1 Convolution, possibly with BatchNormalization.
    """

    spec_name = None  # a container: deepnet.models.spec builds it (its children are specs)

    def __init__(self, body: Layer, shortcut: Optional[Layer] = None) -> None:
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def children(self) -> Sequence[Tuple[str, Layer]]:
        return (("body", self.body),) + ((("shortcut", self.shortcut),) if self.shortcut is not None else ())

    def forward(self, x: Array, train: bool = False, *, train_flg: Optional[bool] = None) -> Array:
        train = _train_mode(train, train_flg)
        y = self.body.forward(x, train)
        skip = x if self.shortcut is None else self.shortcut.forward(x, train)
        if y.shape != skip.shape:
            raise ValueError(
                f"Residual.forward: the body gives shape {tuple(y.shape)} but the shortcut "
                f"{tuple(skip.shape)}; give a shortcut that projects to the body's shape"
            )
        return y + skip

    def backward(self, dout: Array) -> Array:
        dx = self.body.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return self.body.output_shape(input_shape)
