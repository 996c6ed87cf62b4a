"""Activation layers (Relu, Sigmoid, LeakyReLU, Tanh) and softmax: elementwise, no parameters."""

from __future__ import annotations
from typing import Any, Dict, Optional
from numpy.typing import DTypeLike
import numpy as np
from deepnet.functional import Array
from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype

from .base import Layer
from .config import _check_keys, _short


class Relu(Layer):
    """max(x, 0), elementwise; backward passes dout where the output was positive.

    Takes no parameters (``Relu()``); NaN stays NaN.
    """

    preserves_rank = True

    def __init__(self) -> None:
        super().__init__()
        self.out: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        self.out = F.relu(x, caller="Relu.forward")
        return self.out

    def backward(self, dout: Array) -> Array:
        return F.relu_backward(dout, self.out, caller="Relu.backward")


class Sigmoid(Layer):
    preserves_rank = True

    def __init__(self) -> None:
        super().__init__()
        self.out: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "Sigmoid.forward")
        xp = get_array_module(x)
        acc = x.astype(compute_dtype(x.dtype), copy=False)
        self.out = (1 / (1 + xp.exp(-acc))).astype(x.dtype, copy=False)
        return self.out

    def backward(self, dout: Array) -> Array:
        return dout * (1.0 - self.out) * self.out


class LeakyReLU(Layer):
    """max(x, alpha * x) for alpha in [0, 1): a ReLU that lets a little of the negative side through."""

    preserves_rank = True

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 1:
            raise ValueError(f"LeakyReLU: alpha must be a number in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.negative: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "LeakyReLU.forward")
        self.negative = x < 0
        xp = get_array_module(x)
        return xp.where(self.negative, x * x.dtype.type(self.alpha), x)

    def backward(self, dout: Array) -> Array:
        xp = get_array_module(dout)
        return xp.where(self.negative, dout * dout.dtype.type(self.alpha), dout)

    def config(self) -> Dict[str, Any]:
        return {"alpha": self.alpha}

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "alpha"}, where)
        alpha = spec.get("alpha", 0.01)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 1:
            raise ValueError(f"build: {where} ({spec['type']}): 'alpha' must be in [0, 1), got {_short(alpha)}")
        return cls(float(alpha))


class Tanh(Layer):
    """The hyperbolic tangent, computed in float32 for float16 input."""

    preserves_rank = True

    def __init__(self) -> None:
        super().__init__()
        self.out: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "Tanh.forward")
        xp = get_array_module(x)
        self.out = xp.tanh(x.astype(compute_dtype(x.dtype), copy=False)).astype(x.dtype, copy=False)
        return self.out

    def backward(self, dout: Array) -> Array:
        return dout * (1.0 - self.out * self.out)


def softmax(x: Array) -> Array:
    """Row-wise softmax, stabilised by subtracting each row's maximum."""
    xp = get_array_module(x)
    if x.shape[-1] == 0 or x.size == 0:
        return xp.zeros_like(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
