"""Fully connected layers: Affine (x @ W + b) and Flatten."""

from __future__ import annotations
from typing import Any, Dict, Optional, Sequence, Tuple
from numpy.typing import DTypeLike
import numpy as np
from deepnet.functional import Array
import math

from deepnet import functional as F
from deepnet._dtypes import compute_dtype

from .base import _WeightAndBias, Layer
from .config import _check_keys, _int
from .init import he_normal, zeros


class _AffineShape:
    """Shape, spec, cost and input hint of a layer multiplying by W (in_features,
    out_features): shared by Affine and BinaryAffine."""

    W: Array

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return (input_shape[0], self.W.shape[1])

    def config(self) -> Dict[str, Any]:
        return {"in_features": int(self.W.shape[0]), "out_features": int(self.W.shape[1])}

    @classmethod
    def from_config(cls: Any, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "in_features", "out_features"}, where)
        n_in, n_out = _int(spec, "in_features", where, 0), _int(spec, "out_features", where, 0)
        return cls(he_normal((n_in, n_out), rng, dtype), zeros(n_out, dtype))

    def cost(self, input_shape: Sequence[int]) -> Tuple[Tuple[int, ...], int, Optional[Tuple[int, int]]]:
        out = self.output_shape(input_shape)
        return out, out[0] * self.W.shape[0] * self.W.shape[1], None

    def check_cost(self, shape: Sequence[int], check: Any) -> Sequence[int]:
        n_in, n_out = (int(n) for n in self.W.shape)
        if len(shape) < 2:
            check.fail(f"needs a batch of samples, gets shape {shape}")
        features = math.prod(shape[1:])
        if features != n_in and check.strict:
            check.fail(f"expects {n_in} features, gets {features} (shape {shape})")
        check.add_work(n_in * n_out)
        out = (shape[0], n_out)
        check.values(out)
        return out

    def input_hint(self, first: bool) -> Optional[Tuple[str, int]]:
        return ("features", int(self.W.shape[0])) if first else None


class Affine(_AffineShape, _WeightAndBias):
    """y = x @ W + b for x of shape (N, ...) flattened to (N, in_features).

    Parameters
    ----------
    W : array of shape (in_features, out_features)
        The weights (their dtype is the layer's).
    b : array of shape (out_features,)
        The biases.
    """

    def __init__(self, W: Array, b: Array) -> None:
        super().__init__(W, b)
        self.x: Any = None
        self.original_x_shape: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "Affine.forward", dtype=self.W.dtype)
        features = math.prod(x.shape[1:]) if x.ndim >= 1 else None
        if features != self.W.shape[0]:
            raise ValueError(
                f"Affine.forward: each sample must have {self.W.shape[0]} features "
                f"(W shape {tuple(self.W.shape)}), got x of shape {tuple(x.shape)}"
            )
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], self.W.shape[0])  # == features
        acc = compute_dtype(self.W.dtype)
        out = F.affine(F.cast(self.x, acc), F.cast(self.W, acc), F.cast(self.b, acc))
        return F.cast(out, self.W.dtype)

    def backward(self, dout: Array) -> Array:
        acc = compute_dtype(self.W.dtype)
        dout = F.cast(dout, acc)
        dx = F.matmul(dout, F.cast(self.W, acc).T)
        self._set_grads(
            W=F.cast(F.matmul(F.cast(self.x, acc).T, dout), self.W.dtype), b=F.cast(dout.sum(axis=0), self.W.dtype)
        )
        return F.cast(dx, self.W.dtype).reshape(self.original_x_shape)


class Flatten(Layer):
    """(N, ...) -> (N, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.x_shape: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        self.x_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dout: Array) -> Array:
        return dout.reshape(self.x_shape)

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return (input_shape[0], math.prod(input_shape[1:]))
