"""Pure-NumPy reference of every kernel: the book's algorithms, written afresh.

Tests check the compiled kernels against these functions and benchmarks race them.  They
are also the "numpy" backend.  Arguments arrive validated by deepnet.functional:
stride and pad are (vertical, horizontal) pairs, arrays are floating point.

float16 is a storage format: arithmetic runs in float32 and results are rounded back to
float16 once, at the end.  Its ReLU, Adam's update and batch normalisation are those of
deepnet.backends._shared, which the CUDA backend runs too.  (Old import path:
deepnet.reference, which re-exports this module.)
"""

import numpy as np

from deepnet._dtypes import compute_dtype, output_hw, output_size  # noqa: F401  (output_size: its old home)
from deepnet.backends._shared import (
    adam_update,
    batch_norm_backward_sums,
    batch_norm_dx,  # noqa: F401
    batch_norm_sums,
    channel_affine,
    relu_backward,
    relu_forward,
)


def _window_views(padded, kh, kw, stride, out_h, out_w):
    """Yield (i, j, view) with view[n, c, oy, ox] = padded[n, c, oy*sh + i, ox*sw + j]."""
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            yield i, j, padded[:, :, i : i + sh * out_h : sh, j : j + sw * out_w : sw]


def _pad_hw(x, pad, value=0):
    (ph, pw) = pad
    return np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)], constant_values=value)


def im2col(x, kh, kw, stride, pad):
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw), rows ordered (n, oy, ox), columns (c, i, j)."""
    N, C = x.shape[:2]
    out_h, out_w = output_hw(x.shape, kh, kw, stride, pad)
    col = np.empty((N, C, kh, kw, out_h, out_w), dtype=x.dtype)
    for i, j, view in _window_views(_pad_hw(x, pad), kh, kw, stride, out_h, out_w):
        col[:, :, i, j] = view
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, C * kh * kw)


def col2im(col, x_shape, kh, kw, stride, pad):
    """Adjoint of im2col: every column entry is added back to the pixel it was read from."""
    N, C, H, W = x_shape
    (ph, pw) = pad
    out_h, out_w = output_hw(x_shape, kh, kw, stride, pad)
    acc = compute_dtype(col.dtype)
    windows = col.reshape(N, out_h, out_w, C, kh, kw).transpose(0, 3, 4, 5, 1, 2).astype(acc)
    padded = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=acc)
    for i, j, view in _window_views(padded, kh, kw, stride, out_h, out_w):
        view += windows[:, :, i, j]
    return padded[:, :, ph : ph + H, pw : pw + W].astype(col.dtype)


def conv_forward(x, W, b, stride, pad, relu=False):
    """y = im2col(x) @ W^T + b, as (N, FN, OH, OW); then max(y, 0) if relu."""
    N = x.shape[0]
    FN = W.shape[0]
    out_h, out_w = output_hw(x.shape, W.shape[2], W.shape[3], stride, pad)
    acc = compute_dtype(x.dtype)
    col = im2col(x, W.shape[2], W.shape[3], stride, pad).astype(acc)
    y = col @ W.reshape(FN, col.shape[1]).T.astype(acc) + b.astype(acc)
    y = y.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2).astype(x.dtype)
    return relu_forward(y) if relu else y


def conv_backward(dout, x, W, stride, pad, relu_out=None, input_gradient=True, pool_argmax=None):
    """Gradients (dx, dW, db) of conv_forward given dout = dL/dy (dx None unless
    input_gradient).

    relu_out: the output of a conv_forward(..., relu=True); dout is masked by it first.
    pool_argmax: dout is the gradient of a 2x2, stride-2 max-pooling of the output, with
    that pooling's argmax; its backward pass comes first.  relu_out may then be the
    pooling's output instead: the ReLU's output at the winners, the only pixels whose
    mask is read.
    """
    if pool_argmax is not None:
        out_shape = dout.shape[:2] + output_hw(x.shape, W.shape[2], W.shape[3], stride, pad)
        dout = max_pool_backward(dout, pool_argmax, out_shape, 2, 2, (2, 2), (0, 0))
        if relu_out is not None and relu_out.shape != dout.shape:  # the pooling's output:
            relu_out = max_pool_backward(relu_out, pool_argmax, out_shape, 2, 2, (2, 2), (0, 0))  # at its winners
    if relu_out is not None:
        dout = relu_backward(dout, relu_out)
    FN, _, kh, kw = W.shape
    acc = compute_dtype(x.dtype)
    col = im2col(x, kh, kw, stride, pad).astype(acc)
    dout2d = dout.transpose(0, 2, 3, 1).reshape(col.shape[0], FN).astype(acc)
    db = dout2d.sum(axis=0)
    dW = (col.T @ dout2d).T.reshape(W.shape)
    if not input_gradient:
        return None, dW.astype(W.dtype), db.astype(W.dtype)
    dcol = dout2d @ W.reshape(FN, col.shape[1]).astype(acc)
    dx = col2im(dcol, x.shape, kh, kw, stride, pad)
    return dx.astype(x.dtype), dW.astype(W.dtype), db.astype(W.dtype)


def max_pool_forward(x, pool_h, pool_w, stride, pad):
    """Window maxima and, per window, the flat index iy*W + ix of the winner in x's plane.

    Padding never wins; ties go to the first element in window order; NaN wins.
    """
    H, W = x.shape[2:]
    out_h, out_w = output_hw(x.shape, pool_h, pool_w, stride, pad)
    values = _pad_hw(x, pad)
    inside = _pad_hw(np.ones((1, 1, H, W), dtype=bool), pad, value=False)
    flat_index = _pad_hw(np.arange(H * W, dtype=np.int32).reshape(1, 1, H, W), pad, value=-1)
    views = zip(
        _window_views(values, pool_h, pool_w, stride, out_h, out_w),
        _window_views(inside, pool_h, pool_w, stride, out_h, out_w),
        _window_views(flat_index, pool_h, pool_w, stride, out_h, out_w),
    )
    best = np.zeros(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
    argmax = np.full(best.shape, -1, dtype=np.int32)
    for (_, _, value), (_, _, valid), (_, _, index) in views:
        takes = valid & ((argmax < 0) | (value > best) | (np.isnan(value) & ~np.isnan(best)))
        best = np.where(takes, value, best)
        argmax = np.where(takes, index, argmax)
    return best, argmax


def max_pool_backward(dout, argmax, x_shape, pool_h, pool_w, stride, pad):
    """Scatter dout to the winners recorded by max_pool_forward (overlaps add up)."""
    N, C, H, W = x_shape
    acc = compute_dtype(dout.dtype)
    dx = np.zeros((N * C, H * W), dtype=acc)
    planes = np.repeat(np.arange(N * C), argmax.shape[2] * argmax.shape[3])
    np.add.at(dx, (planes, argmax.reshape(-1)), dout.reshape(-1).astype(acc))
    return dx.reshape(x_shape).astype(dout.dtype)


def cast(a, dtype):
    return a.astype(dtype, copy=False)


# ---------------------------------------------------------------- image warps (augmentation)


def affine_warp(x, theta, fill):
    """x (N, C, H, W) sampled bilinearly at theta[n] @ (row, col, 1) for each output pixel
    (theta (N, 2, 3) float64, pixel units, pixel centres at integers).  Neighbours outside
    the image count as fill; a position outside (-1, H) x (-1, W), or NaN, gives fill."""
    H, W = x.shape[2:]
    rows, cols = np.indices((H, W), dtype=np.float64)
    return _sample(x, *_apply_theta(theta, rows, cols), fill)


def elastic_warp(x, displacement, theta, fill):
    """As affine_warp, at theta[n] @ (row + d[n, 0], col + d[n, 1], 1) for a displacement
    field d of shape (N, 2, H, W)."""
    H, W = x.shape[2:]
    rows, cols = np.indices((H, W), dtype=np.float64)
    d = displacement.astype(np.float64)
    return _sample(x, *_apply_theta(theta, rows + d[:, 0], cols + d[:, 1]), fill)


def _apply_theta(theta, rows, cols):
    """Input positions (N, H, W) of the output pixels at (rows, cols) ((H, W) or (N, H, W))."""
    t = theta[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf positions give fill
        return (t[:, 0, 0] * rows + t[:, 0, 1] * cols + t[:, 0, 2], t[:, 1, 0] * rows + t[:, 1, 1] * cols + t[:, 1, 2])


def _sample(x, at_row, at_col, fill):
    """Bilinear samples of every channel of x at the positions (at_row, at_col), each of
    shape (N, H, W), in compute_dtype, rounded once to x's dtype."""
    N, C, H, W = x.shape
    acc = compute_dtype(x.dtype)
    fill = acc.type(fill)
    inside = (at_row > -1) & (at_row < H) & (at_col > -1) & (at_col < W)  # False for NaN
    at_row, at_col = np.where(inside, at_row, 0), np.where(inside, at_col, 0)  # safe to floor
    row, col = np.floor(at_row), np.floor(at_col)
    ty, tx = (at_row - row).astype(acc)[:, None], (at_col - col).astype(acc)[:, None]
    row, col = row.astype(np.intp), col.astype(np.intp)
    planes = x.astype(acc).reshape(N, C, H * W)
    images, channels = np.arange(N)[:, None, None], np.arange(C)[None, :, None]

    def neighbour(dy, dx):
        r, c = row + dy, col + dx
        valid = ((r >= 0) & (r < H) & (c >= 0) & (c < W)).reshape(N, 1, H * W)
        flat = np.where(valid, (r * W + c).reshape(N, 1, H * W), 0)
        return np.where(valid, planes[images, channels, flat], fill).reshape(N, C, H, W)

    v00, v01, v10, v11 = neighbour(0, 0), neighbour(0, 1), neighbour(1, 0), neighbour(1, 1)
    top = v00 + tx * (v01 - v00)
    bottom = v10 + tx * (v11 - v10)
    return np.where(inside[:, None], top + ty * (bottom - top), fill).astype(x.dtype)
