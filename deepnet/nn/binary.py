"""Binarized layers (Courbariaux, Hubara et al. 2016): BinaryConvolution and BinaryAffine on signs.

Both layers multiply sign(W) by sign(x), where sign(v) is +1 for v >= 0 (0 and -0 included)
and -1 otherwise, and add a real bias.  W holds real-valued latent weights that the
optimizer trains; only their signs reach the output.  The backward pass is the
straight-through estimator: the gradient of sign(x) is taken as 1 where |x| <= 1 and 0
elsewhere, and the gradient with respect to sign(W) goes to W unchanged.  The latent
weights are clipped to [-1, 1] at the start of every training forward pass, which is
clipping after every update (the optimizer's update is only ever seen by the next forward
pass), and which never changes a sign.

The training forward pass is the layer's float convolution (or product) of +-1 values,
rounded to the nearest integer (a Winograd convolution of integers is exact only up to
rounding), plus the bias.  Inference (eval mode) on NumPy arrays with the compiled kernels
runs the bit-packed XNOR-popcount kernel (deepnet._kernels.binary) instead, which gives
the same integers, so the same output bits.  Zero padding contributes 0 in both.
"""

from __future__ import annotations
from typing import Any, Dict, Iterator, Optional
from numpy.typing import DTypeLike
import contextlib
import contextvars
import math

import numpy as np

from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._config import get_backend, get_num_threads
from deepnet._dtypes import compute_dtype
from deepnet.functional import Array, IntPair

from .base import _WeightAndBias, Layer, _pair
from .conv import _ConvolutionGeometry
from .linear import _AffineShape
from .config import _check_keys, _int, _int_pair
from .init import he_normal, zeros

try:  # the compiled bit kernels; without them inference takes the float path
    from deepnet._kernels import binary as _bits
except ImportError:  # pragma: no cover - a build without kernels
    _bits = None


def sign(x: Array, dtype: DTypeLike) -> Array:
    """+1 where x >= 0, else -1 (NaN included), as ``dtype``."""
    xp = get_array_module(x)
    one = np.dtype(dtype).type(1)
    return xp.where(x >= 0, one, -one)


def straight_through(dx: Array, x: Array) -> Array:
    """The straight-through estimator of sign's gradient: dx where |x| <= 1, else 0."""
    xp = get_array_module(x)
    return xp.where(abs(x) <= 1, dx, xp.zeros((), dx.dtype))


_BIT_INFERENCE = contextvars.ContextVar("deepnet_binary_bit_inference", default=True)


@contextlib.contextmanager
def bit_inference(enabled: bool = True) -> Iterator[None]:
    """Within the block, the binary layers' inference runs the bit kernel (the default,
    where it can) or, with enabled=False, the float path: the same bits, for comparing."""
    token = _BIT_INFERENCE.set(bool(enabled))
    try:
        yield
    finally:
        _BIT_INFERENCE.reset(token)


def _uses_bits(x: Array, W: Array) -> bool:
    """The bit kernel serves this inference pass: compiled kernels, NumPy arrays, cython
    backend, and not turned off by bit_inference(False)."""
    return (
        _bits is not None
        and _BIT_INFERENCE.get()
        and isinstance(x, np.ndarray)
        and isinstance(W, np.ndarray)
        and get_backend() == "cython"
    )


class _Binary(_WeightAndBias):
    """What the binary layers share: the latent weights' clipping and the output's dtype."""

    def __init__(self, W: Array, b: Array) -> None:
        super().__init__(W, b)
        self.x: Any = None
        self.xb: Any = None  # sign(x) of a float forward pass, for backward
        self._bits_cache: Any = None  # (W as packed, the packed signs) for inference

    def _signs(self, dtype: DTypeLike) -> Array:
        """sign(self.x), kept from the forward pass unless the bit kernel ran it."""
        if self.xb is None or self.xb.shape != self.x.shape:
            self.xb = sign(self.x, dtype)
        return self.xb

    def _packed(self, pack: Any) -> Any:
        """sign(W) packed for the bit kernel, packed again only when W has changed."""
        cached = self._bits_cache
        if cached is None or cached[0].shape != self.W.shape or not np.array_equal(cached[0], self.W):
            cached = self._bits_cache = (self.W.copy(), pack(self.W))
        return cached[1]

    def _clip_latent(self) -> None:
        xp = get_array_module(self.W)
        xp.clip(self.W, -1, 1, out=self.W)

    def _finish(self, out: Array) -> Array:
        """rint(out) + b in the compute dtype, then the layer's dtype."""
        xp = get_array_module(out)
        xp.rint(out, out=out)
        out += F.cast(self.b, out.dtype).reshape((-1,) + (1,) * (out.ndim - 2))
        return F.cast(out, self.W.dtype)


class BinaryConvolution(_ConvolutionGeometry, _Binary):
    """Convolution of sign(W) over sign(x) (see the module's docstring), zero padded.

    Parameters
    ----------
    W : array of shape (FN, C, kh, kw)
        The latent filters (their dtype is the layer's).
    b : array of shape (FN,)
        The biases.
    stride : int or (int, int)
        Vertical and horizontal stride.
    pad : int or (int, int)
        Zero padding of each side, vertically and horizontally.
    """

    def __init__(self, W: Array, b: Array, stride: IntPair = 1, pad: IntPair = 0) -> None:
        super().__init__(W, b)
        self.stride, self.pad = stride, pad

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "BinaryConvolution.forward", dtype=self.W.dtype)
        if x.ndim != 4 or x.shape[1] != self.W.shape[1]:
            raise ValueError(
                f"BinaryConvolution.forward: expected (N, {self.W.shape[1]}, H, W) input, got shape {tuple(x.shape)}"
            )
        training = self._mode(train, train_flg)
        if training:
            self._clip_latent()
        self.x = x
        acc = compute_dtype(self.W.dtype)
        if not training and _uses_bits(x, self.W):
            (sh, sw), (ph, pw) = _pair(self.stride), _pair(self.pad)
            self.xb = None
            out = np.empty(self.output_shape(x.shape), acc)
            packed = self._packed(_bits.pack_conv_weights)
            _bits.conv_forward(x, self.W, F.cast(self.b, acc), out, sh, sw, ph, pw, "auto", get_num_threads(), packed)
            return F.cast(out, self.W.dtype)
        self.xb = sign(x, acc)
        out = F.conv2d(self.xb, sign(self.W, acc), None, self.stride, self.pad, caller="BinaryConvolution.forward")
        return self._finish(out)

    def backward(self, dout: Array) -> Array:
        if self.x is None:
            raise RuntimeError("BinaryConvolution.backward: no forward pass to differentiate (call forward(x) first)")
        acc = compute_dtype(self.W.dtype)
        dout = F.as_float_array(dout, "dout", "BinaryConvolution.backward", dtype=acc)
        dxb, dW, db = F.conv2d_backward(
            dout,
            self._signs(acc),
            sign(self.W, acc),
            self.stride,
            self.pad,
            caller="BinaryConvolution.backward",
        )
        assert dxb is not None  # input_gradient=True
        self._set_grads(W=F.cast(dW, self.W.dtype), b=F.cast(db, self.W.dtype))
        return F.cast(straight_through(dxb, self.x), self.W.dtype)

    def config(self) -> Dict[str, Any]:
        FN, C, kh, kw = (int(s) for s in self.W.shape)
        return {
            "in_channels": C,
            "filters": FN,
            "kernel": [kh, kw],
            "stride": list(_pair(self.stride)),
            "pad": list(_pair(self.pad)),
        }

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "in_channels", "filters", "kernel", "stride", "pad"}, where)
        C, FN = _int(spec, "in_channels", where, 0), _int(spec, "filters", where, 0)
        kh, kw = _int_pair(spec, "kernel", where, 1)
        return cls(
            he_normal((FN, C, kh, kw), rng, dtype),
            zeros(FN, dtype),
            _int_pair(spec, "stride", where, 1),
            _int_pair(spec, "pad", where, 0),
        )


class BinaryAffine(_AffineShape, _Binary):
    """y = sign(x) @ sign(W) + b for x of shape (N, ...) flattened to (N, in_features).

    Parameters
    ----------
    W : array of shape (in_features, out_features)
        The latent weights (their dtype is the layer's).
    b : array of shape (out_features,)
        The biases.
    """

    def __init__(self, W: Array, b: Array) -> None:
        super().__init__(W, b)
        self.original_x_shape: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "BinaryAffine.forward", dtype=self.W.dtype)
        features = math.prod(x.shape[1:]) if x.ndim >= 1 else None
        if features != self.W.shape[0]:
            raise ValueError(
                f"BinaryAffine.forward: each sample must have {self.W.shape[0]} features "
                f"(W shape {tuple(self.W.shape)}), got x of shape {tuple(x.shape)}"
            )
        training = self._mode(train, train_flg)
        if training:
            self._clip_latent()
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], self.W.shape[0])
        acc = compute_dtype(self.W.dtype)
        if not training and _uses_bits(self.x, self.W):
            self.xb = None
            out = np.empty((x.shape[0], self.W.shape[1]), acc)
            packed = self._packed(_bits.pack_affine_weights)
            _bits.affine_forward(self.x, self.W, F.cast(self.b, acc), out, "auto", get_num_threads(), packed)
            return F.cast(out, self.W.dtype)
        self.xb = sign(self.x, acc)
        return self._finish(F.matmul(self.xb, sign(self.W, acc)))

    def backward(self, dout: Array) -> Array:
        if self.x is None:
            raise RuntimeError("BinaryAffine.backward: no forward pass to differentiate (call forward(x) first)")
        acc = compute_dtype(self.W.dtype)
        dout = F.as_float_array(dout, "dout", "BinaryAffine.backward", dtype=acc)
        dxb = F.matmul(dout, sign(self.W, acc).T)
        dW = F.matmul(self._signs(acc).T, dout)
        self._set_grads(W=F.cast(dW, self.W.dtype), b=F.cast(dout.sum(axis=0), self.W.dtype))
        return F.cast(straight_through(dxb, self.x), self.W.dtype).reshape(self.original_x_shape)
