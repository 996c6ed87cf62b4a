"""Regularisation layers: the book's Dropout."""

from __future__ import annotations
from typing import Any, Dict, Optional
from numpy.typing import DTypeLike
from deepnet.functional import Array
import numpy as np

from deepnet._array import get_array_module

from .base import Layer
from .config import _check_keys, _fraction


class Dropout(Layer):
    """The book's dropout: training drops units; inference scales by (1 - dropout_ratio).

    The masks are drawn from ``rng`` on the CPU, so a seed gives the same masks on either
    device.  ``shard = (global_batch, first)`` makes it draw the masks of a whole global
    batch and keep rows first..first+N (data-parallel training: every rank draws the same
    masks and takes its own slice, so K ranks compute what one process would).

    Parameters
    ----------
    dropout_ratio : float
        The share of units dropped in training, in [0, 1).
    rng : numpy.random.Generator, optional
        The generator the masks are drawn from (default: a fresh one).
    """

    preserves_rank = True

    def __init__(self, dropout_ratio: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
        super().__init__()
        if not 0 <= dropout_ratio < 1:
            raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {dropout_ratio!r}")
        self.dropout_ratio = dropout_ratio
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mask: Any = None
        self.shard: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        if self._mode(train, train_flg):
            if self.shard is None:
                keep = self.rng.random(x.shape, dtype=np.float32) > self.dropout_ratio
            else:
                global_batch, first = self.shard
                keep = self.rng.random((global_batch,) + x.shape[1:], dtype=np.float32) > self.dropout_ratio
                keep = keep[first : first + x.shape[0]]
            self.mask = get_array_module(x).asarray(keep)
            return x * self.mask
        return x * x.dtype.type(1.0 - self.dropout_ratio)

    def backward(self, dout: Array) -> Array:
        return dout * self.mask

    def config(self) -> Dict[str, Any]:
        return {"dropout_ratio": self.dropout_ratio}

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "dropout_ratio"}, where)
        return cls(_fraction(spec, "dropout_ratio", where, 0.5, upper_open=True), rng=rng)
