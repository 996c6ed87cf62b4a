"""The NumPy reference of the int8 kernels (docs/int8.md's scheme): pack_filters, conv_int8, quantize_uint8, dequantize_uint8.

Every integer step is exact: the products and sums of uint8 - zero and int8 values are
integers below 255 * 127 * 65536 < 2**53, so a float64 matrix product (BLAS) computes them
exactly, in any order (float32 where they stay below 2**24).  The only rounding is the requantization's float32 multiply, done as the scheme
fixes it.  The compiled module ``deepnet._kernels.int8`` has the same functions and must give
the same bits.  Arguments arrive checked by deepnet.quant.ops.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from ..backends.reference import im2col

__all__ = ["pack_filters", "conv_int8", "quantize_uint8", "dequantize_uint8", "MAX_K"]

MAX_K = 65536  # C * KH * KW: 255 * 127 * MAX_K stays below 2**31 (int32 accumulators)
_RANGE = 512  # requantized values are clipped to [-512, 512] before the zero point is added


def pack_filters(w_q: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The filters as conv_int8 takes them: here w_q itself (int8, (FN, C, KH, KW), C-contiguous)."""
    if w_q.dtype != np.int8 or w_q.ndim != 4:
        raise ValueError(f"pack_filters: expected int8 filters (FN, C, KH, KW), got {w_q.dtype} of shape {w_q.shape}")
    k = int(np.prod(w_q.shape[1:]))
    if k > MAX_K:
        raise ValueError(f"pack_filters: C*KH*KW = {k} is more than {MAX_K} (the int32 accumulators could overflow)")
    return np.ascontiguousarray(w_q)


def accumulate(
    x: np.ndarray[Any, Any],
    x_zero: int,
    w_q: np.ndarray[Any, Any],
    stride: Tuple[int, int],
    pad: Tuple[int, int],
    bias_q: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """The int32 accumulators acc[n, f, i, j] of the scheme (padding holds x_zero)."""
    N = x.shape[0]
    FN, C, KH, KW = w_q.shape
    # Padding holds x_zero; the columns are gathered in uint8 (an eighth of float64's bytes).
    padded = np.pad(x, [(0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])], constant_values=x_zero)
    # Exact in float32 while every partial sum stays below 2**24, else in float64 (below 2**53).
    exact = np.float32 if C * KH * KW * 255 * 127 < 1 << 24 else np.float64
    col = im2col(padded, KH, KW, stride, (0, 0)).astype(exact)
    col -= exact(x_zero)
    oh = (x.shape[2] + 2 * pad[0] - KH) // stride[0] + 1
    ow = (x.shape[3] + 2 * pad[1] - KW) // stride[1] + 1
    acc = col @ w_q.reshape(FN, C * KH * KW).T.astype(exact)
    acc64 = acc.astype(np.int64) + bias_q.astype(np.int64)
    return acc64.astype(np.int32).reshape(N, oh, ow, FN).transpose(0, 3, 1, 2)  # int32 wraparound, as the kernels


def requantize(
    acc: np.ndarray[Any, Any], scale: np.ndarray[Any, Any], out_zero: int, relu: bool
) -> np.ndarray[Any, Any]:
    """uint8 outputs of int32 accumulators (N, FN, H, W): one float32 multiply, round half to even, clamps."""
    y = acc.astype(np.float32) * scale.astype(np.float32)[:, None, None]
    y = np.clip(np.rint(y), -_RANGE, _RANGE) + np.float32(out_zero)
    return np.clip(y, out_zero if relu else 0, 255).astype(np.uint8)


def max_pool_2x2(q: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """2x2, stride-2 max-pooling (floor: a last odd row or column is dropped)."""
    N, F, H, W = q.shape
    h, w = H // 2, W // 2
    q = q[:, :, : 2 * h, : 2 * w].reshape(N, F, h, 2, w, 2)
    return q.max(axis=(3, 5))


def conv_int8(
    x: np.ndarray[Any, Any],
    x_zero: int,
    filters: np.ndarray[Any, Any],
    stride: Tuple[int, int],
    pad: Tuple[int, int],
    bias_q: np.ndarray[Any, Any],
    scale: np.ndarray[Any, Any],
    out_zero: int,
    relu: bool,
    pool: bool,
    out: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """The int8 convolution with its fused epilogue, written into ``out`` (uint8 or float32)."""
    acc = accumulate(x, x_zero, filters, stride, pad, bias_q)
    if out.dtype == np.float32:
        y = acc.astype(np.float32) * scale.astype(np.float32)[:, None, None]
        out[...] = np.maximum(y, np.float32(0)) if relu else y
        return out
    q = requantize(acc, scale, out_zero, relu)
    out[...] = max_pool_2x2(q) if pool else q
    return out


def quantize_uint8(
    x: np.ndarray[Any, Any], inv_scale: np.floating[Any], zero: int, out: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """q = clip(clip(rint(x * inv_scale), -512, 512) + zero, 0, 255) as uint8 (a float32 multiply)."""
    y = np.rint(x.astype(np.float32, copy=False) * np.float32(inv_scale))
    y = np.clip(y, -_RANGE, _RANGE) + np.float32(zero)
    out[...] = np.clip(y, 0, 255).astype(np.uint8)
    return out


def dequantize_uint8(q: np.ndarray[Any, Any], scale: np.floating[Any], zero: int) -> np.ndarray[Any, Any]:
    """float32(int32(q) - zero) * scale."""
    return (q.astype(np.int32) - np.int32(zero)).astype(np.float32) * np.float32(scale)
