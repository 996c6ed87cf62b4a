"""Activation layers (Relu, Sigmoid) and softmax: elementwise, no parameters."""
from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype

from .base import Layer


class Relu(Layer):
    preserves_rank = True

    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x, train=False, *, train_flg=None):
        self.out = F.relu(x, caller="Relu.forward")
        return self.out

    def backward(self, dout):
        return F.relu_backward(dout, self.out, caller="Relu.backward")


class Sigmoid(Layer):
    preserves_rank = True

    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x, train=False, *, train_flg=None):
        x = F.as_float_array(x, "x", "Sigmoid.forward")
        xp = get_array_module(x)
        acc = x.astype(compute_dtype(x.dtype), copy=False)
        self.out = (1 / (1 + xp.exp(-acc))).astype(x.dtype, copy=False)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


def softmax(x):
    """Row-wise softmax, stabilised by subtracting each row's maximum."""
    xp = get_array_module(x)
    if x.shape[-1] == 0 or x.size == 0:
        return xp.zeros_like(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
