"""The "cython" backend: thin wrappers that allocate outputs and call the compiled kernels.

Same functions and contract as deepnet.backends.reference (the contract: deepnet.backends),
and conv_pool_forward, an optional op.  (Old import path: deepnet._cpu, which re-exports
this module.)  float16 arrays are handed to the kernels viewed as uint16; their
arithmetic runs in float32 (compute_dtype).  When a convolution runs as Winograd is
decided in deepnet.backends._winograd, whose names this module re-exports.
"""

import weakref
from typing import Any

import numpy as np

from deepnet._config import get_num_threads, get_winograd
from deepnet._kernels import conv as _conv
from deepnet._kernels import elementwise as _elementwise
from deepnet._kernels import im2col as _unfold
from deepnet._kernels import plan as _plan
from deepnet._kernels import pooling as _pooling
from deepnet._dtypes import compute_dtype, is_bfloat16, output_hw
from deepnet.backends import _shared

# When a convolution runs as Winograd (deepnet.backends._winograd), part of this module's API.
from deepnet.backends._winograd import (
    SCAN_PARALLEL_SIZE as SCAN_PARALLEL_SIZE,
    WINOGRAD_G as WINOGRAD_G,
    WINOGRAD_MIN_CHANNELS as WINOGRAD_MIN_CHANNELS,
    WINOGRAD_RULE as WINOGRAD_RULE,
    _describe_winograd_rule as _describe_winograd_rule,
    _filters_in_range,
    _max_abs,
    _measured_winograd_rule as _measured_winograd_rule,
    _uses_winograd,
    _winograd_filter_gradient,
    _winograd_pass,
    uses_winograd as uses_winograd,
    winograd_in_range as winograd_in_range,
)


ELEMENTWISE_PARALLEL_SIZE = 1 << 15  # elements from which an element-wise pass is worth threading
DW_CHUNKS = 16  # partial sums of dW and db: enough chunks to keep the cores busy, few to add up


def _bits(a):
    """The array as the kernels see it: float16 as its raw uint16 bits."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def _geometry(stride, pad, images=None, **flags):
    """The trailing kernel arguments: strides, pads, any flags, the thread count (no more
    threads than images for the kernels that share out whole images)."""
    threads = get_num_threads() if images is None else max(1, min(get_num_threads(), images))
    return (stride[0], stride[1], pad[0], pad[1], *flags.values(), threads)


def _fold(cols, x_shape, kh, kw, stride, pad):
    """col2im of per-image columns (N, C*kh*kw, OH*OW) (any strides), in compute_dtype."""
    x = np.empty(x_shape, dtype=compute_dtype(cols.dtype))
    _unfold.col2im(_bits(cols), x, kh, kw, *_geometry(stride, pad))
    return x


def im2col(x, kh, kw, stride, pad):
    N, C = x.shape[:2]
    out_h, out_w = output_hw(x.shape, kh, kw, stride, pad)
    out_hw = out_h * out_w
    col = np.empty((N, out_hw, C * kh * kw), dtype=x.dtype)
    # The book's layout is the per-image layout with the last two axes swapped.
    _unfold.im2col(_bits(x), _bits(col).transpose(0, 2, 1), kh, kw, *_geometry(stride, pad))
    return col.reshape(N * out_hw, C * kh * kw)


def col2im(col, x_shape, kh, kw, stride, pad):
    out_h, out_w = output_hw(x_shape, kh, kw, stride, pad)
    per_image = col.reshape(x_shape[0], out_h * out_w, col.shape[1]).transpose(0, 2, 1)
    return _fold(per_image, x_shape, kh, kw, stride, pad).astype(col.dtype, copy=False)


def _padded_columns(n, dtype):
    """n rounded up to whole tiles of the convolutions' gather GEMM (for dtype)."""
    multiple = _conv.column_multiple(np.dtype(dtype).itemsize)
    return -(-n // multiple) * multiple


def _filter_columns(matrix, dtype):
    """A (rows, n) filter matrix in dtype with its columns zero-padded to whole GEMM tiles."""
    rows, n = matrix.shape
    padded = np.zeros((rows, _padded_columns(n, dtype)), dtype=dtype)
    padded[:, :n] = matrix
    return padded


def _forward_plan(W, stride, pad, x):
    """(winograd, filter matrix) of a forward pass: _winograd_pass("forward", ...), with the
    filters' max |W| taken from their prepared matrix's entry (computed once per value of
    the weights).  The choice never depends on the batch or the thread count, so that
    neither do the results (deepnet.compile's plans choose the same way)."""
    mode = get_winograd()
    if _uses_winograd(W.shape, stride, pad, "forward", mode):
        matrix, W_max = _prepared_entry(W, True)
        if mode == "always" or _filters_in_range("forward", W, W_max, _max_abs(x)):
            return True, matrix
    return False, _prepared_filters(W, False)


def _winograd_filters(W, acc, flipped=False):
    """The filters' Winograd transform as the kernels take it, (16*C, FN padded) in acc;
    flipped: the transposed convolution's (16*FN, C padded) for dx (conv.winograd_filters;
    NumPy operations on the 3x3 slices, with their temporaries, took 1.6 ms for 64x64
    filters, as long as the layer's batch-1 forward pass)."""
    FN, C = W.shape[:2]
    rows, columns = (16 * FN, C) if flipped else (16 * C, FN)
    out = np.zeros((rows, _padded_columns(columns, acc)), dtype=acc)
    _conv.winograd_filters(_bits(np.ascontiguousarray(W)), out, flipped)
    return out


def conv_forward(x, W, b, stride, pad, relu=False):
    N = x.shape[0]
    FN, C, kh, kw = W.shape
    y = np.empty((N, FN) + output_hw(x.shape, kh, kw, stride, pad), dtype=x.dtype)
    winograd, matrix = _forward_plan(W, stride, pad, x)
    _conv.conv_forward(
        _bits(x),
        matrix,
        _bias(b, W),
        _bits(y),
        kh,
        kw,
        *_geometry(stride, pad, relu=relu, winograd=winograd),
    )
    return y


def conv_pool_forward(x, W, b, stride, pad, relu=False, argmax=False):
    """conv_forward then 2x2 stride-2 max-pooling, fused: pooled, or (pooled, argmax) with
    argmax; None (the caller makes the two calls) with fewer images than threads, where
    the direct kernel's bands of rows keep every thread busy.  float16 inference is pooled
    in float32 and then rounded: the same values as the two calls (rounding is monotonic;
    a zero's sign can differ), and the float32 pooling kernel is the fast one
    (benches/models/fusion.py: DeepConvNet inference, batch 100, 2 threads, Zen 3, fused / layer
    by layer: float32 1.10-1.15x, float64 1.07-1.08x, float16 1.21x; pooling the halves had
    made it 0.94-1.00x).  float16 training rounds the outputs before pooling them (a tie
    after rounding goes to the first, as in the separate pass), so that its winners and
    pooled bits are those of the two calls."""
    N = x.shape[0]
    if N < get_num_threads():
        return None
    FN, C, kh, kw = W.shape
    OH, OW = output_hw(x.shape, kh, kw, stride, pad)
    pooled = np.empty((N, FN, OH // 2, OW // 2), dtype=x.dtype)
    winners = np.empty(pooled.shape, dtype=np.int32) if argmax else None
    winograd, matrix = _forward_plan(W, stride, pad, x)
    _conv.conv_pool_forward(
        _bits(x),
        matrix,
        _bias(b, W),
        _bits(pooled),
        kh,
        kw,
        *_geometry(stride, pad, relu=relu, winograd=winograd),
        argmax=winners,
    )
    return (pooled, winners) if argmax else pooled


def plan_filters(W, stride, pad):
    """What a compiled plan's convolution step needs of its filters W (deepnet.models.compiled):
    (direct filter matrix, Winograd filter matrix or None where Winograd cannot run, whether
    "auto" runs this layer as Winograd (its rule of channels), max |W|), in the compute dtype,
    as conv_forward prepares them."""
    winograd = _uses_winograd(W.shape, stride, pad, "forward", "always")
    rule = _uses_winograd(W.shape, stride, pad, "forward", "auto")
    return _filter_matrix(W, False), _filter_matrix(W, True) if winograd else None, rule, _max_abs(W)


def affine_forward(x, W, b):
    """x @ W + b (2-D x, one compute dtype): the kernel the compiled plan's affine step runs."""
    K, M = W.shape
    padded = np.zeros((K, -(-max(M, 1) // _plan.AFFINE_COLUMNS) * _plan.AFFINE_COLUMNS), dtype=W.dtype)
    padded[:, :M] = W
    out = np.empty((x.shape[0], M), dtype=x.dtype)
    _plan.affine_forward(np.ascontiguousarray(x), padded, np.ascontiguousarray(b), out, get_num_threads())
    return out


def global_average_pool(x):
    """(N, C, H, W) -> (N, C) means, each plane summed in order (the plan's mean step);
    float16 summed in float32 and rounded, as its kernels compute."""
    N, C, H, W = x.shape
    acc = compute_dtype(x.dtype)
    out = np.empty((N, C), dtype=acc)
    planes = cast(np.ascontiguousarray(x), acc).reshape(N * C, H * W)
    _plan.global_average_pool(planes, out.reshape(-1), get_num_threads())
    return cast(out, x.dtype)


def _forward_filters(W, b, winograd):
    """The filter matrix and bias as conv_forward's kernels take them, in the compute dtype
    (the filter matrix from _prepared_filters)."""
    return _prepared_filters(W, winograd), _bias(b, W)


def _bias(b, W):
    """The bias as conv_forward's kernels take it, in the compute dtype."""
    return b.astype(compute_dtype(W.dtype), copy=False)


# Each live weight array's prepared filter matrix, reused while the array's bytes are
# unchanged: at batch 1 preparing it (a transposed, padded copy, or the Winograd transform)
# cost a fifth of DeepConvNet's inference, and a fresh matrix each call is a cold one.  A
# snapshot of the weights is compared byte for byte at every reuse, so an update in place
# is always seen.  (id(W), winograd) -> (weak reference to W, snapshot, read-only matrix,
# max |W|);
# an entry goes when its array does.
_prepared: dict[Any, Any] = {}


def _prepared_filters(W, winograd):
    """W's filter matrix for the direct kernel, or with winograd for Winograd's, reused
    while W's bytes are unchanged (see _prepared)."""
    return _prepared_entry(W, winograd)[0]


def _prepared_entry(W, winograd):
    """(_prepared_filters(W, winograd), max |W|): the entry's matrix and the filters'
    largest magnitude (for winograd_in_range), both computed once per value of W."""
    key = (id(W), winograd)
    entry = _prepared.get(key)
    if entry is not None:
        reference, snapshot, matrix, W_max = entry
        if (
            reference() is W
            and snapshot.shape == W.shape
            and snapshot.dtype == W.dtype
            and _elementwise.same_bytes(_bytes(snapshot), _bytes(W))
        ):
            return matrix, W_max
    matrix = _filter_matrix(W, winograd)
    matrix.flags.writeable = False
    W_max = _max_abs(W)
    _prepared[key] = (weakref.ref(W, lambda _, key=key: _prepared.pop(key, None)), W.copy(), matrix, W_max)
    return matrix, W_max


def _bytes(a):
    """A C-contiguous array's bytes, as a flat uint8 view."""
    return a.reshape(-1).view(np.uint8)


def _filter_matrix(W, winograd):
    FN, C, kh, kw = W.shape
    acc = compute_dtype(W.dtype)
    if winograd:
        return _winograd_filters(W, acc)
    return _filter_columns(cast(W, acc).reshape(FN, C * kh * kw).T, acc)


def conv_backward(dout, x, W, stride, pad, relu_out=None, input_gradient=True, pool_argmax=None):
    FN, C, kh, kw = W.shape
    acc = compute_dtype(x.dtype)
    # With stride 1, dx is a convolution of dout with the flipped filters (needs pad <=
    # kernel - 1); for few channels the padded columns would waste more than col2im costs.
    transposed = (
        input_gradient and stride == (1, 1) and pad[0] < kh and pad[1] < kw and 2 * C >= _padded_columns(1, acc)
    )
    winograd = transposed and _winograd_pass("dx", W, stride, pad, dout)
    if not input_gradient:
        dx_filters = np.zeros((0, 0), dtype=acc)  # not read; its dtype picks the kernel
    elif winograd:
        dx_filters = _winograd_filters(W, acc, flipped=True)
    elif transposed:
        dx_filters = _filter_columns(cast(W, acc)[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(FN * kh * kw, C), acc)
    else:
        dx_filters = _filter_columns(cast(W, acc).reshape(FN, C * kh * kw), acc)  # col2im
    winograd_dW = _winograd_pass("dW", W, stride, pad, x, dout, output_hw(x.shape, kh, kw, stride, pad))
    dx = np.empty_like(x) if input_gradient else None
    # dW (or Winograd's dU) is summed per chunk of images; the chunks do not depend on the
    # thread count.
    chunks = min(x.shape[0], DW_CHUNKS)
    rows = 16 * C if winograd_dW else C * kh * kw
    dW_t_per_chunk = np.zeros((chunks, rows, _padded_columns(FN, acc)), dtype=acc)
    db_per_chunk = np.zeros((chunks, FN), dtype=acc)
    # The ReLU mask is applied as dout is read: without relu_out, dout itself is passed
    # as the (unused) mask.  With pool_argmax, dout is a following 2x2 max-pooling's
    # output gradient, scattered to the winners as it is read, and relu_out the
    # convolution's output or the pooling's (the kernel tells them by their shape).
    mask = dout if relu_out is None else relu_out
    _conv.conv_backward(
        _bits(x),
        _bits(dout),
        _bits(mask),
        dx_filters,
        transposed,
        winograd,
        winograd_dW,
        None if dx is None else _bits(dx),
        dW_t_per_chunk,
        db_per_chunk,
        kh,
        kw,
        *_geometry(stride, pad, images=chunks, relu=relu_out is not None),
        pool_argmax=pool_argmax,
    )
    db = db_per_chunk.sum(axis=0)
    dW_t = dW_t_per_chunk.sum(axis=0)[:, :FN]
    dW = _winograd_filter_gradient(dW_t, C) if winograd_dW else dW_t.T.reshape(W.shape)
    return dx, cast(dW, W.dtype), cast(db, W.dtype)


def max_pool_forward(x, pool_h, pool_w, stride, pad):
    out_shape = x.shape[:2] + output_hw(x.shape, pool_h, pool_w, stride, pad)
    out = np.empty(out_shape, dtype=x.dtype)
    argmax = np.empty(out_shape, dtype=np.int32)
    _pooling.max_pool_forward(
        _bits(x), _bits(out), argmax, pool_h, pool_w, *_geometry(stride, pad)[:-1], _elementwise_threads(x.size)
    )
    return out, argmax


def max_pool_backward(dout, argmax, x_shape, pool_h, pool_w, stride, pad):
    dx = np.empty(x_shape, dtype=dout.dtype)
    _pooling.max_pool_backward(_bits(dout), argmax, _bits(dx), _elementwise_threads(dx.size))
    return dx


def _elementwise_threads(size):
    """Threads for an element-wise pass (ReLU, pooling, casts): one for small arrays, where
    starting threads costs more than it saves."""
    return get_num_threads() if size >= ELEMENTWISE_PARALLEL_SIZE else 1


def relu_forward(x):
    y = np.empty_like(x)
    _elementwise.relu_forward(_bits(x).reshape(-1), _bits(y).reshape(-1), _elementwise_threads(x.size))
    return y


def relu_backward(dout, y):
    dx = np.empty_like(dout)
    _elementwise.relu_backward(
        _bits(dout).reshape(-1), _bits(y).reshape(-1), _bits(dx).reshape(-1), _elementwise_threads(dout.size)
    )
    return dx


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """The reference's adam_update (deepnet.backends._shared) in one pass
    (src/deepnet_adam.h), the same bits.  The gradient is read through a contiguous copy
    if it is not contiguous (the convolutions' dW are transposed views); a parameter or
    state that is not contiguous and writable float32 or float64, all of one dtype, takes
    the reference's NumPy code."""
    updated = (param, m, v)
    if (
        param.dtype in (np.float32, np.float64)
        and grad.dtype == param.dtype
        and grad.shape == param.shape
        and all(a.dtype == param.dtype and a.flags.c_contiguous and a.flags.writeable for a in updated)
    ):
        _elementwise.adam_update(
            param.reshape(-1),
            np.ascontiguousarray(grad).reshape(-1),
            m.reshape(-1),
            v.reshape(-1),
            1 - beta1,
            1 - beta2,
            lr_t,
            eps,
            _elementwise_threads(param.size),
        )
    else:
        _shared.adam_update(param, grad, m, v, lr_t, beta1, beta2, eps)


def cast(a, dtype):
    """a as dtype; float16 <-> float32 convert in the kernels (numpy's half casts are
    scalar loops, and very slow for values below float16's normal range, which small
    gradients often are)."""
    if a.dtype == np.float32 and dtype == np.float16:
        out = np.empty(a.shape, dtype=np.float16)
        _elementwise.float_to_half(
            np.ascontiguousarray(a).reshape(-1), _bits(out).reshape(-1), _elementwise_threads(a.size)
        )
        return out
    if a.dtype == np.float16 and dtype == np.float32:
        out = np.empty(a.shape, dtype=np.float32)
        _elementwise.half_to_float(
            _bits(np.ascontiguousarray(a)).reshape(-1), out.reshape(-1), _elementwise_threads(a.size)
        )
        return out
    if a.dtype == np.float32 and is_bfloat16(dtype):  # ml_dtypes' rounding, bit for bit (src/deepnet_bf16.h)
        out = np.empty(a.shape, dtype=dtype)
        _bf16_kernels().floats_to_bf16(
            np.ascontiguousarray(a).reshape(-1), out.reshape(-1).view(np.uint16), _elementwise_threads(a.size)
        )
        return out
    if is_bfloat16(a.dtype) and dtype == np.float32:
        out = np.empty(a.shape, dtype=np.float32)
        _bf16_kernels().bf16_to_floats(
            np.ascontiguousarray(a).reshape(-1).view(np.uint16), out.reshape(-1), _elementwise_threads(a.size)
        )
        return out
    return a.astype(dtype, copy=False)


def _bf16_kernels():
    """deepnet._kernels.bf16, imported on the first bfloat16 cast."""
    from deepnet._kernels import bf16

    return bf16


# -- batch normalisation (kernels/batchnorm.pyx) --------------------------------------------

from deepnet._kernels import batchnorm as _batchnorm  # noqa: E402


def batch_norm_sums(x, shift):
    sums = np.empty((2, x.shape[1]), dtype=np.float64)
    _batchnorm.batch_norm_sums(_bits(x), shift, sums, _elementwise_threads(x.size))
    return sums


def channel_affine(x, shift, scale, offset, relu=False):
    y = np.empty_like(x)
    _batchnorm.channel_affine(_bits(x), shift, scale, offset, _bits(y), relu, _elementwise_threads(x.size))
    return y


def batch_norm_backward_sums(dout, x, mean, inv_std, relu_out=None):
    sums = np.empty((2, x.shape[1]), dtype=np.float64)
    mask = dout if relu_out is None else relu_out
    _batchnorm.batch_norm_backward_sums(
        _bits(dout), _bits(x), _bits(mask), relu_out is not None, mean, inv_std, sums, _elementwise_threads(x.size)
    )
    return sums


def batch_norm_dx(dout, x, mean, inv_std, gamma, mean_dout, mean_dout_xhat, relu_out=None):
    dx = np.empty_like(x)
    mask = dout if relu_out is None else relu_out
    _batchnorm.batch_norm_dx(
        _bits(dout),
        _bits(x),
        _bits(mask),
        relu_out is not None,
        mean,
        inv_std,
        gamma,
        mean_dout,
        mean_dout_xhat,
        _bits(dx),
        _elementwise_threads(x.size),
    )
    return dx


# ---------------------------------------------------------------- image warps (augmentation)

from deepnet._kernels import warp as _warp  # noqa: E402  (kept with its section)


def _warp_threads(x):
    """No more threads than (n, c) planes (one plane per task)."""
    return max(1, min(get_num_threads(), x.shape[0] * x.shape[1]))


def affine_warp(x, theta, fill):
    out = np.empty_like(x)
    _warp.affine_warp(_bits(x), theta, fill, _bits(out), _warp_threads(x))
    return out


def elastic_warp(x, displacement, theta, fill):
    out = np.empty_like(x)
    _warp.elastic_warp(_bits(x), displacement, theta, fill, _bits(out), _warp_threads(x))
    return out
