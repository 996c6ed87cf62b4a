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


class SigmoidWithLoss(Layer):
    """Binary cross-entropy of sigmoid(x) against targets ``t`` in [0, 1], computed from the
    logits x so that it stays finite for any of them: the mean over every value of
    ``max(x, 0) - x t + log(1 + exp(-|x|))``.  (The discriminator's loss of a GAN.)"""

    spec_name = None  # a loss, not a layer of a model

    def __init__(self) -> None:
        super().__init__()
        self.loss: Any = None
        self.x: Any = None  # the logits, in the compute dtype
        self.t: Any = None
        self.x_dtype: Any = None

    def forward(self, x: Array, t: Array) -> float:  # type: ignore[override]  # the loss takes targets
        """The mean binary cross-entropy of the logits ``x`` against ``t`` (x's shape, values in [0, 1])."""
        x = F.as_float_array(x, "x", "SigmoidWithLoss.forward")
        xp = get_array_module(x)
        t = xp.asarray(t)
        if t.shape != x.shape:
            raise ValueError(f"SigmoidWithLoss.forward: t must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
        if t.dtype.kind not in "biuf" or (t.size and (float(t.min()) < 0 or float(t.max()) > 1)):
            raise ValueError("SigmoidWithLoss.forward: t must hold targets in [0, 1]")
        acc = compute_dtype(x.dtype)
        self.x, self.t, self.x_dtype = x.astype(acc, copy=False), t.astype(acc, copy=False), x.dtype
        if x.size == 0:
            self.loss = float("nan")
            return self.loss
        values = xp.maximum(self.x, 0) - self.x * self.t + xp.log1p(xp.exp(-xp.abs(self.x)))
        self.loss = float(values.mean())
        return self.loss

    def backward(self, dout: Union[float, Array] = 1) -> Array:
        """d loss / dx = (sigmoid(x) - t) / (number of values)."""
        xp = get_array_module(self.x)
        # sigmoid without overflow: exp of a non-positive number only
        e = xp.exp(-xp.abs(self.x))
        sigmoid = xp.where(self.x >= 0, 1 / (1 + e), e / (1 + e))
        return ((sigmoid - self.t) * (dout / max(self.x.size, 1))).astype(self.x_dtype, copy=False)


class SpatialSoftmaxWithLoss(Layer):
    """Softmax cross-entropy per pixel, for segmentation: scores (N, C, H, W) against labels
    (N, H, W) in 0..C-1, the mean over the N H W pixels."""

    spec_name = None  # a loss, not a layer of a model

    def __init__(self) -> None:
        super().__init__()
        self.loss: Any = None
        self.y: Any = None  # the softmax over the classes, (N, C, H, W) in the compute dtype
        self.t: Any = None
        self.x_dtype: Any = None

    def forward(self, x: Array, t: Array) -> float:  # type: ignore[override]  # the loss takes labels
        """The mean over pixels of -log softmax(x)[label]."""
        x = F.as_float_array(x, "x", "SpatialSoftmaxWithLoss.forward", ndim=4)
        xp = get_array_module(x)
        t = xp.asarray(t)
        N, C, H, W = x.shape
        if t.shape != (N, H, W):
            raise ValueError(
                f"SpatialSoftmaxWithLoss.forward: t must hold one label a pixel, shape {(N, H, W)}, "
                f"got {tuple(t.shape)}"
            )
        if t.dtype.kind not in "iu":
            raise TypeError(f"SpatialSoftmaxWithLoss.forward: labels must be integers, got dtype {t.dtype}")
        if t.size and (int(t.min()) < 0 or int(t.max()) >= C):
            raise ValueError(
                f"SpatialSoftmaxWithLoss.forward: labels must lie in 0..{C - 1}, got {int(t.min())}..{int(t.max())}"
            )
        acc = x.astype(compute_dtype(x.dtype), copy=False)
        shifted = acc - acc.max(axis=1, keepdims=True) if C else acc
        e = xp.exp(shifted)
        self.y = e / e.sum(axis=1, keepdims=True)
        self.t, self.x_dtype = t, x.dtype
        if t.size == 0:
            self.loss = float("nan")
            return self.loss
        picked = xp.take_along_axis(shifted, t[:, None].astype(xp.intp), axis=1)[:, 0]
        self.loss = float((xp.log(e.sum(axis=1)) - picked).mean())
        return self.loss

    def backward(self, dout: Union[float, Array] = 1) -> Array:
        """(softmax - one-hot(t)) / (N H W)."""
        xp = get_array_module(self.y)
        dx = self.y.copy()
        if self.t.size:
            N, _, H, W = dx.shape
            n, i, j = xp.meshgrid(xp.arange(N), xp.arange(H), xp.arange(W), indexing="ij")
            dx[n, self.t, i, j] -= 1
        return (dx * (dout / max(self.t.size, 1))).astype(self.x_dtype, copy=False)
