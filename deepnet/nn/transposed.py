"""The transposed convolution ("deconvolution", chapter 8.4.2): ConvTranspose, the adjoint of Convolution.

ConvTranspose(W, b) with W of shape (C_in, C_out, kh, kw), as PyTorch's conv_transpose2d,
maps (N, C_in, H, W) to (N, C_out, H_out, W_out) with H_out = (H - 1) stride - 2 pad + kh +
output_padding.  It is exactly the input gradient of the Convolution whose filters are W
(C_in filters of C_out channels) with the same stride and pad, so it runs on the
convolution's kernels:

- forward: the input-gradient computation, col2im of (y as rows) @ W;
- backward: the input's gradient is that Convolution's forward pass on dout, and dW is its
  weight gradient with dout as the input and y as the output gradient.
"""

from __future__ import annotations
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

from deepnet import functional as F
from deepnet._dtypes import compute_dtype
from deepnet.functional import Array, IntPair

from .base import Layer, _pair, _WeightAndBias
from .config import _check_keys, _int, _int_pair
from .init import he_normal, zeros


class ConvTranspose(_WeightAndBias):
    """Transposed convolution.

    Parameters
    ----------
    W : array of shape (C_in, C_out, kh, kw)
        The filters, as PyTorch's conv_transpose2d takes them (their dtype is the layer's).
    b : array of shape (C_out,)
        The biases.
    stride, pad : int or (int, int)
        Those of the convolution this layer is the transpose of.
    output_padding : int or (int, int)
        Rows and columns added at the bottom and right of the output (less than the
        stride), to reach the sizes a strided convolution maps to the same input size.
    """

    skips_input_gradient = True

    def __init__(self, W: Array, b: Array, stride: IntPair = 1, pad: IntPair = 0, output_padding: IntPair = 0) -> None:
        super().__init__(W, b)
        if getattr(W, "ndim", None) != 4 or getattr(b, "shape", None) != (W.shape[1],):
            raise ValueError(
                "ConvTranspose: W must have shape (C_in, C_out, kh, kw) and b (C_out,), got "
                f"{getattr(W, 'shape', None)} and {getattr(b, 'shape', None)}"
            )
        (sh, sw), (ph, pw), (oh, ow) = _pair(stride), _pair(pad), _pair(output_padding)
        if min(sh, sw) < 1 or min(ph, pw) < 0 or not (0 <= oh < sh and 0 <= ow < sw):
            raise ValueError(
                "ConvTranspose: stride >= 1, pad >= 0 and 0 <= output_padding < stride, got "
                f"stride {(sh, sw)}, pad {(ph, pw)}, output_padding {(oh, ow)}"
            )
        self.stride, self.pad, self.output_padding = (sh, sw), (ph, pw), (oh, ow)
        self.x: Any = None

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        N, _, H, W = input_shape
        C_out, kh, kw = (int(n) for n in self.W.shape[1:])
        (sh, sw), (ph, pw), (oh, ow) = self.stride, self.pad, self.output_padding
        return (N, C_out, (H - 1) * sh - 2 * ph + kh + oh, (W - 1) * sw - 2 * pw + kw + ow)

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "ConvTranspose.forward", ndim=4, dtype=self.W.dtype)
        C_in, C_out, kh, kw = (int(n) for n in self.W.shape)
        if x.shape[1] != C_in:
            raise ValueError(f"ConvTranspose.forward: expected (N, {C_in}, H, W) input, got shape {tuple(x.shape)}")
        out_shape = self.output_shape(x.shape)
        if min(out_shape[2:]) < 1:
            raise ValueError(f"ConvTranspose.forward: input of shape {tuple(x.shape)} gives no output")
        N, _, H, W = x.shape
        acc = compute_dtype(self.W.dtype)
        rows = F.cast(x, acc).transpose(0, 2, 3, 1).reshape(N * H * W, C_in)
        columns = F.matmul(rows, F.cast(self.W, acc).reshape(C_in, C_out * kh * kw))
        y = F.col2im(columns, out_shape, kh, kw, self.stride, self.pad, caller="ConvTranspose.forward")
        self.x = x
        return F.cast(y + F.cast(self.b, acc).reshape(1, C_out, 1, 1), self.W.dtype)

    def backward(self, dout: Array, input_gradient: bool = True) -> Optional[Array]:  # type: ignore[override]
        if self.x is None:
            raise RuntimeError("ConvTranspose.backward: no forward pass to differentiate (call forward(x) first)")
        dout = F.as_float_array(dout, "dout", "ConvTranspose.backward", ndim=4, dtype=self.W.dtype)
        expected = self.output_shape(self.x.shape)
        if tuple(dout.shape) != tuple(expected):
            raise ValueError(f"ConvTranspose.backward: dout must have shape {tuple(expected)}, got {tuple(dout.shape)}")
        # the Convolution with filters W (C_in filters of C_out channels) maps dout to x's shape
        _, dW, _ = F.conv2d_backward(
            self.x, dout, self.W, self.stride, self.pad, input_gradient=False, caller="ConvTranspose.backward"
        )
        acc = compute_dtype(self.W.dtype)
        db = F.cast(F.cast(dout, acc).sum(axis=(0, 2, 3)), self.W.dtype)
        self._set_grads(W=dW, b=db)
        if not input_gradient:
            return None
        return F.conv2d(dout, self.W, None, self.stride, self.pad, caller="ConvTranspose.backward")

    def config(self) -> Dict[str, Any]:
        C_in, C_out, kh, kw = (int(s) for s in self.W.shape)
        return {
            "in_channels": C_in,
            "out_channels": C_out,
            "kernel": [kh, kw],
            "stride": list(self.stride),
            "pad": list(self.pad),
            "output_padding": list(self.output_padding),
        }

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "in_channels", "out_channels", "kernel", "stride", "pad", "output_padding"}, where)
        C_in, C_out = _int(spec, "in_channels", where, 1), _int(spec, "out_channels", where, 1)
        kh, kw = _int_pair(spec, "kernel", where, 1)
        W = he_normal((C_in, C_out, kh, kw), rng, dtype)
        return cls(
            W,
            zeros(C_out, dtype),
            _int_pair(spec, "stride", where, 1),
            _int_pair(spec, "pad", where, 0),
            _int_pair(spec, "output_padding", where, 0),
        )

    def cost(self, input_shape: Sequence[int]) -> Tuple[Tuple[int, ...], int, Optional[Tuple[int, int]]]:
        C_in, C_out, kh, kw = self.W.shape
        return self.output_shape(input_shape), math.prod(input_shape) * C_out * kh * kw, None

    def input_hint(self, first: bool) -> Optional[Tuple[str, int]]:
        return ("channels", int(self.W.shape[0]))
