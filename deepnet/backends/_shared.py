"""The code that more than one backend runs: written with the array's own module, so that
NumPy arrays (deepnet.backends.reference, and deepnet.backends.cpu where its kernels do not
apply) and CuPy arrays (deepnet.backends.cuda) compute it the same way.

Adam's update, batch normalisation's per-channel sums, affine map and input gradient, and
the element-wise ReLU they fuse.  Arguments arrive validated by deepnet.functional, as for
every backend op.  float16 is a storage format: arithmetic runs in compute_dtype (float32)
and results are rounded back once.
"""

import numpy as np

from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype


def relu_forward(x):
    """max(x, 0) (a ufunc: NumPy or CuPy arrays); NaN stays NaN."""
    return np.maximum(x, 0)


def relu_backward(dout, y):
    """dout where y > 0, else 0 (NumPy or CuPy arrays)."""
    return dout * (y > 0)


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """One Adam step in place (deepnet.optimizers.Adam): m += (1-beta1)*(g - m);
    v += (1-beta2)*(g^2 - v); param -= lr_t*m / (sqrt(v) + eps).  NumPy or CuPy arrays;
    the Python-float scalars take the arrays' dtype."""
    xp = get_array_module(param)
    m += (1 - beta1) * (grad - m)
    v += (1 - beta2) * (grad**2 - v)
    param -= lr_t * m / (xp.sqrt(v) + eps)


# -- batch normalisation ------------------------------------------------------------------
# Written with the array's own module, so CuPy arrays run these too.


def batch_norm_sums(x, shift):
    """Per channel of x (N, C, M): the sums of (x - shift) and of (x - shift)^2 over N and
    M, in float64, as a (2, C) array.  Shifting by a value near the mean (the running
    mean) keeps the variance sum_sq/n - (sum/n)^2 accurate."""
    xp = get_array_module(x)
    centred = x.astype(np.float64) - xp.asarray(shift, dtype=np.float64)[None, :, None]
    return xp.stack([centred.sum(axis=(0, 2)), (centred * centred).sum(axis=(0, 2))])


def channel_affine(x, shift, scale, offset, relu=False):
    """y[n, c, m] = (x[n, c, m] - shift[c]) * scale[c] + offset[c], computed in
    compute_dtype (the difference first: where x equals shift it is exactly 0, and y
    exactly offset); then max(y, 0) if relu."""
    acc = compute_dtype(x.dtype)
    c = lambda a: a.astype(acc)[None, :, None]  # noqa: E731  (a per-channel column)
    y = (x.astype(acc, copy=False) - c(shift)) * c(scale) + c(offset)
    y = y.astype(x.dtype, copy=False)
    return relu_forward(y) if relu else y


def batch_norm_backward_sums(dout, x, mean, inv_std, relu_out=None):
    """Per channel: sum(g) and sum(g * xhat), xhat = (x - mean) * inv_std, in float64, with
    g = dout masked by relu_out > 0 when given (the backward of a fused ReLU)."""
    xp = get_array_module(x)
    g = (dout if relu_out is None else relu_backward(dout, relu_out)).astype(np.float64)
    xhat = (x.astype(np.float64) - mean.astype(np.float64)[None, :, None]) * inv_std.astype(np.float64)[None, :, None]
    return xp.stack([g.sum(axis=(0, 2)), (g * xhat).sum(axis=(0, 2))])


def batch_norm_dx(dout, x, mean, inv_std, gamma, mean_dout, mean_dout_xhat, relu_out=None):
    """dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat)), per channel, with g as
    in batch_norm_backward_sums."""
    acc = compute_dtype(x.dtype)
    c = lambda a: a.astype(acc)[None, :, None]  # noqa: E731  (a per-channel column)
    xhat = (x.astype(acc, copy=False) - c(mean)) * c(inv_std)
    g = dout if relu_out is None else relu_backward(dout, relu_out)
    dx = c(gamma * inv_std) * (g.astype(acc, copy=False) - c(mean_dout) - xhat * c(mean_dout_xhat))
    return dx.astype(x.dtype, copy=False)
