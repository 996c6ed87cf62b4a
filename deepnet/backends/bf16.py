"""The bfloat16 backend: every op on bfloat16 arrays runs in float32 on the configured backend.

bfloat16 (ml_dtypes' dtype) is a storage format, like float16: an op's bfloat16 arguments
are widened to float32 (exactly), the op of the backend deepnet.set_backend names
("cpu" or "reference") computes in float32 with float32 accumulation, and its float32
results are rounded to bfloat16 once (round to nearest even), at the end.  So a bfloat16
op gives the float32 op's result on the widened inputs, rounded: the tests' reference.
Integer results (pooling's argmax) and float64 sums (batch normalisation's) are returned
as they come.  deepnet.backends.for_arrays sends a call here when one of its arrays is
bfloat16; CuPy arrays have no bfloat16 here (a TypeError).
"""

from typing import Any

import numpy as np

from deepnet import _config
from deepnet._dtypes import is_bfloat16, output_hw, require_bfloat16

DOT_CONVOLUTION = True
"""Whether the compiled backend runs a bfloat16 convolution (forward pass, dx and dW) in
vdpbf16ps's dot products (the dot GEMM on the convolution's windows; the instruction where the CPU
has AVX512_BF16, else its emulation: the same floats on every CPU), instead of float32 on
the widened inputs.  The NumPy backend always does the latter."""


def _inner():
    """The backend module that computes the float32 op (deepnet.set_backend's setting; the
    registry in deepnet.backends, which imports this module, is not asked)."""
    if _config.get_backend() == "cython":
        from deepnet.backends import cpu as module
    else:
        from deepnet.backends import reference as module
    return module


def to_float32(a):
    """A bfloat16 array widened to float32 (exact): the compiled kernel where the compiled
    backend is in use, else NumPy's (ml_dtypes') cast."""
    if _config.get_backend() == "cython":
        from deepnet.backends import cpu

        return cpu.cast(a, np.float32)
    return a.astype(np.float32)


def to_bfloat16(a):
    """A float32 array rounded to bfloat16 (nearest even; NaN stays NaN)."""
    if _config.get_backend() == "cython":
        from deepnet.backends import cpu

        return cpu.cast(a, require_bfloat16())
    return a.astype(require_bfloat16())


def _widen(a):
    return to_float32(a) if isinstance(a, np.ndarray) and is_bfloat16(a.dtype) else a


def _narrow(result):
    if isinstance(result, tuple):
        return tuple(_narrow(r) for r in result)
    if isinstance(result, np.ndarray) and result.dtype == np.float32:
        return to_bfloat16(result)
    return result


def _widened(op: str) -> Any:
    def run(*args, **kwargs):
        inner = getattr(_inner(), op, None)
        if inner is None:  # an optional op the backend does not define: declined
            return None
        return _narrow(inner(*(_widen(a) for a in args), **{k: _widen(v) for k, v in kwargs.items()}))

    run.__name__ = run.__qualname__ = op
    run.__doc__ = f"The configured backend's {op}, in float32 on bfloat16 arguments widened, rounded back."
    return run


im2col = _widened("im2col")
col2im = _widened("col2im")
_float32_conv_forward = _widened("conv_forward")
_float32_conv_pool_forward = _widened("conv_pool_forward")
_float32_conv_backward = _widened("conv_backward")
max_pool_forward = _widened("max_pool_forward")
max_pool_backward = _widened("max_pool_backward")
relu_forward = _widened("relu_forward")
relu_backward = _widened("relu_backward")
batch_norm_sums = _widened("batch_norm_sums")
channel_affine = _widened("channel_affine")
batch_norm_backward_sums = _widened("batch_norm_backward_sums")
batch_norm_dx = _widened("batch_norm_dx")
global_average_pool = _widened("global_average_pool")
affine_warp = _widened("affine_warp")
elastic_warp = _widened("elastic_warp")


def pack_pairs(a):
    """A (M, K) bfloat16 matrix as the dot GEMM's (M, ceil(K/2)) uint32 pairs: a[m, 2k] in
    the low half, a[m, 2k+1] in the high (an odd K gains a zero column)."""
    M, K = a.shape
    bits = np.zeros((M, K + K % 2), dtype=np.uint16)
    bits[:, :K] = a.view(np.uint16)
    return bits.view(np.uint32)


def dot_matmul(a, b, c=None, isa=None, a_pairs=None):
    """a @ b for bfloat16 a (M, K) and b (K, N) in vdpbf16ps's dot products (float32
    accumulation, pairs of K in the instruction's order, DAZ/FTZ: src/deepnet_bf16.h), added
    to c (M, N) float32 (zeros if None); returns the float32 result.  isa: "avx512_bf16"
    (the instruction), "avx2" or "scalar" (emulations, the same floats); None: the fastest."""
    from deepnet._kernels import bf16 as kernels

    if a_pairs is None:
        a_pairs = pack_pairs(np.ascontiguousarray(a))
    b_pairs = np.ascontiguousarray(pack_pairs(np.ascontiguousarray(b.T)).T)
    out = (
        np.zeros((a_pairs.shape[0], b.shape[1]), dtype=np.float32) if c is None else np.array(c, np.float32, order="C")
    )
    kernels.dot_gemm(a_pairs, b_pairs, out, _config.get_num_threads(), isa)
    return out


def _dot_convolution():
    return DOT_CONVOLUTION and _config.get_backend() == "cython"


def conv_forward(x, W, b, stride, pad, relu=False):
    """The convolution as filters times windows in the dot GEMM (see DOT_CONVOLUTION),
    accumulated from the float32 bias, ReLU'd in float32 and rounded once."""
    if not _dot_convolution():
        return _float32_conv_forward(x, W, b, stride, pad, relu=relu)
    from deepnet._kernels import bf16 as kernels

    N = x.shape[0]
    FN, C, kh, kw = W.shape
    OH, OW = output_hw(x.shape, kh, kw, stride, pad)
    K, threads = C * kh * kw, _config.get_num_threads()
    windows = np.empty(((K + 1) // 2, N * OH * OW), dtype=np.uint32)
    kernels.im2col_pairs_t(np.ascontiguousarray(x).view(np.uint16), windows, kh, kw, *stride, *pad, threads)
    bias = np.zeros(FN, np.float32) if b is None else to_float32(b)
    y = np.empty((FN, N * OH * OW), dtype=np.float32)
    y[...] = bias[:, None]
    kernels.dot_gemm(pack_pairs(np.ascontiguousarray(W).reshape(FN, K)), windows, y, threads)
    if relu:
        np.maximum(y, 0, out=y)
    # Transposed as 16-bit words: NumPy copies ml_dtypes' dtype element by element.
    words = to_bfloat16(y).view(np.uint16).reshape(FN, N, OH, OW).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(words).view(x.dtype)


def _pairs_down_columns(words):
    """A (M, N) matrix of 16-bit words as the dot GEMM's B, (ceil(M/2), N) uint32 pairs:
    row 2k in the low halves, row 2k+1 in the high (an odd M gains a zero row)."""
    M, N = words.shape
    padded = np.zeros((M + M % 2, N), dtype=np.uint16)
    padded[:M] = words
    return np.ascontiguousarray(padded.reshape(-1, 2, N).transpose(0, 2, 1)).view(np.uint32).reshape(-1, N)


def conv_backward(dout, x, W, stride, pad, relu_out=None, input_gradient=True, pool_argmax=None):
    """The convolution's gradients in the dot GEMM (see DOT_CONVOLUTION), each rounded once:
    (dW, db) = windows^T dout, summed over the windows in (n, oy, ox) order (db as the sum
    of dout times ones); dx, with stride 1 and pad < kernel, the convolution of dout with
    the flipped filters (pad kernel - 1 - pad), else col2im(dout filters) with the overlaps
    added in float32.  The ReLU mask and a following pooling's scatter only move dout's
    values, so they stay exact."""
    if not _dot_convolution():
        return _float32_conv_backward(dout, x, W, stride, pad, relu_out, input_gradient, pool_argmax)
    from deepnet._kernels import bf16 as kernels

    FN, C, kh, kw = W.shape
    if pool_argmax is not None:
        out_shape = dout.shape[:2] + output_hw(x.shape, kh, kw, stride, pad)
        dout = max_pool_backward(dout, pool_argmax, out_shape, 2, 2, (2, 2), (0, 0))
        if relu_out is not None and relu_out.shape != dout.shape:  # the pooling's output: its winners
            relu_out = max_pool_backward(relu_out, pool_argmax, out_shape, 2, 2, (2, 2), (0, 0))
    if relu_out is not None:
        dout = relu_backward(dout, relu_out)
    N, _, OH, OW = dout.shape
    M, K, threads = N * OH * OW, C * kh * kw, _config.get_num_threads()
    dout_rows = np.ascontiguousarray(dout.view(np.uint16).transpose(0, 2, 3, 1)).reshape(M, FN)
    # A: the windows transposed, and a row of ones for db.
    windows_t = np.empty((K + 1, M + M % 2), dtype=np.uint16)
    kernels.im2col_t(np.ascontiguousarray(x).view(np.uint16), windows_t[:K], kh, kw, *stride, *pad, threads)
    windows_t[K, :M] = np.array(1, dtype=x.dtype).view(np.uint16)
    windows_t[K, M:] = 0
    grads_t = np.zeros((K + 1, FN), dtype=np.float32)
    kernels.dot_gemm(windows_t.view(np.uint32), _pairs_down_columns(dout_rows), grads_t, threads)
    dW = to_bfloat16(np.ascontiguousarray(grads_t[:K].T)).reshape(W.shape)
    db = to_bfloat16(grads_t[K])
    if not input_gradient:
        return None, dW, db
    if stride == (1, 1) and pad[0] < kh and pad[1] < kw:
        # dx is then the convolution of dout with the flipped filters, C of them: each
        # element one dot product over (f, i, j), and no large columns to fold.
        flipped = np.ascontiguousarray(W.view(np.uint16)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).view(W.dtype)
        return conv_forward(dout, flipped, None, (1, 1), (kh - 1 - pad[0], kw - 1 - pad[1])), dW, db
    dcol = dot_matmul(None, W.reshape(FN, K), a_pairs=pack_pairs(dout_rows))
    return to_bfloat16(_inner().col2im(dcol, x.shape, kh, kw, stride, pad)), dW, db


def conv_pool_forward(x, W, b, stride, pad, relu=False, argmax=False):
    """The fused kernel in float32, or None (the caller runs conv_forward and pooling)
    where the convolution runs in the dot GEMM."""
    if _dot_convolution():
        return None
    return _float32_conv_pool_forward(x, W, b, stride, pad, relu=relu, argmax=argmax)


def cast(a, dtype):
    """a as dtype: bfloat16 through float32 (both ways; bfloat16 -> float32 is exact)."""
    dtype = np.dtype(dtype)
    if is_bfloat16(a.dtype) and is_bfloat16(dtype):
        return a
    if is_bfloat16(a.dtype):
        wide = to_float32(a)
        return wide if dtype == np.float32 else _inner().cast(wide, dtype)
    wide = a if a.dtype == np.float32 else _inner().cast(a, np.dtype(np.float32))
    return to_bfloat16(wide) if is_bfloat16(dtype) else _inner().cast(wide, dtype)


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam's step in float32 on widened copies of the bfloat16 arrays, each rounded back
    into its array in place (float32 master weights avoid this: deepnet.training.optimizers)."""
    arrays = [param, grad, m, v]
    wide = [_widen(a) for a in arrays]
    _inner().adam_update(*wide, lr_t, beta1, beta2, eps)
    for original, widened in zip(arrays, wide):
        if widened is not original and original is not grad:
            original[...] = to_bfloat16(widened)
