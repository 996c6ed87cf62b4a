"""Losses: softmax cross-entropy (SoftmaxWithLoss) and cross_entropy_error."""

from __future__ import annotations
from typing import Any, Union
from deepnet.functional import Array
from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype

from .activations import softmax
from .base import Layer


def cross_entropy_error(y: Array, t: Array) -> float:
    """Mean -log(probability of the true class); t holds labels or one-hot rows.

    An empty batch has no mean: the result is nan, as numpy's and PyTorch's mean give.
    """
    if y.ndim == 1:
        y, t = y.reshape(1, -1), t.reshape(1, -1)
    if t.size == y.size and t.ndim == y.ndim:
        t = t.argmax(axis=1)
    xp = get_array_module(y)
    batch_size = y.shape[0]
    if batch_size == 0:
        return float("nan")
    return -float(xp.log(y[xp.arange(batch_size), t] + 1e-7).sum()) / batch_size


class SoftmaxWithLoss(Layer):
    """Softmax and cross-entropy loss; ``t`` holds integer labels 0..C-1 or one-hot rows."""

    spec_name = None  # the loss of a model, not one of its layers

    def __init__(self) -> None:
        super().__init__()
        self.loss: Any = None
        self.y: Any = None  # softmax output
        self.t: Any = None  # labels or one-hot, as given
        self.x_dtype: Any = None

    def forward(self, x: Array, t: Array) -> float:  # type: ignore[override]  # the loss takes labels
        """The mean cross-entropy of softmax(x) against ``t``; keeps what backward needs.

        Parameters
        ----------
        x : array of shape (N, C)
            Class scores.
        t : array of shape (N,) or (N, C)
            Integer labels 0..C-1, or one-hot rows.

        Returns
        -------
        float
            The loss.

        Raises
        ------
        ValueError
            ``t`` does not match ``x``, or a label is out of range.
        TypeError
            Labels that are not integers.
        """
        x = F.as_float_array(x, "x", "SoftmaxWithLoss.forward", ndim=2)
        t = get_array_module(x).asarray(t)
        is_one_hot = t.ndim == 2
        if (t.ndim not in (1, 2)) or t.shape[0] != x.shape[0] or (is_one_hot and t.shape != x.shape):
            raise ValueError(
                f"SoftmaxWithLoss.forward: t must be {x.shape[0]} labels or one-hot rows of "
                f"shape {tuple(x.shape)} to match x; got t of shape {tuple(t.shape)}"
            )
        if not is_one_hot:
            if t.dtype.kind not in "iu":
                raise TypeError(f"SoftmaxWithLoss.forward: labels must be integers, got dtype {t.dtype}")
            if t.size and (int(t.min()) < 0 or int(t.max()) >= x.shape[1]):
                bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
                raise ValueError(
                    f"SoftmaxWithLoss.forward: labels must lie in 0..{x.shape[1] - 1} "
                    f"(one per class of x), got label {bad}"
                )
        self.t = t
        self.x_dtype = x.dtype
        self.y = softmax(x.astype(compute_dtype(x.dtype), copy=False))
        self.loss = cross_entropy_error(self.y, t)
        return self.loss

    def backward(self, dout: Union[float, Array] = 1) -> Array:
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        if batch_size == 0:
            return dx.astype(self.x_dtype, copy=False)
        if self.t.ndim == 2:
            dx -= self.t
        else:
            dx[get_array_module(dx).arange(batch_size), self.t] -= 1
        return (dx * (dout / batch_size)).astype(self.x_dtype, copy=False)
