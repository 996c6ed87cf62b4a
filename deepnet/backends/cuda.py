"""Optional CUDA backend: CuPy RawModule kernels plus cuBLAS GEMMs.

This module implements the same backend contract (``deepnet.backends``) as
``deepnet.backends.reference`` (NumPy) and ``deepnet.backends.cpu`` (Cython), for
CuPy arrays.  (Old import path: ``deepnet._cuda``, which re-exports this module.)  Arguments arrive
validated and normalised: ``stride=(sh, sw)`` and ``pad=(ph, pw)`` are tuples
of ints, arrays are C-contiguous float16/float32/float64, and every output has
the input's dtype.

Importing this module never imports CuPy; CuPy is imported on first use, so
the module also works on machines without CuPy.  The array helpers
(``get_array_module``, ``to_cpu``, ``to_gpu``, ...) live in ``deepnet._array``
and are re-exported here under their old names.

Kernel sources live in ``kernels/cuda`` (installed as the package
``deepnet._cuda_src``).  Each ``.cu`` file becomes one ``cupy.RawModule``,
compiled once on first use and cached.  The kernels are C++ templates over the
storage type (``__half``, ``float``, ``double``) and are fetched with
``name_expressions`` such as ``"im2col<float>"``.

Precision (as in deepnet.backends.reference): float16 is a storage format only.
Kernels load float16 values as float, compute in float and round once on
store.  GEMMs on float16 data run on float32 copies, so cuBLAS accumulates in
float32 whatever CuPy's compute-type settings; their float32 results are
rounded to float16 only after the bias add (forward) or after col2im
(backward).  float32 GEMMs follow CuPy's settings (TF32 only if the user sets
``CUPY_TF32=1``).
"""

import functools
import importlib.resources
import re
from pathlib import Path

import numpy as np

from deepnet._array import cupy_or_none, get_array_module, is_cupy_array, to_cpu, to_gpu
from deepnet._array import require_cupy as _cupy
from deepnet._dtypes import compute_dtype, output_size

# Batch normalisation and Adam's update: the reference's, written with the array's module
# (CuPy here).
from deepnet.backends._shared import (
    adam_update,
    batch_norm_backward_sums,
    batch_norm_dx,
    batch_norm_sums,
    channel_affine,
)

__all__ = [
    "KERNELS",
    "cupy_or_none",
    "gpu_available",
    "is_cupy_array",
    "get_array_module",
    "to_gpu",
    "to_cpu",
    "cuda_sources",
    "load_cuda_source",
    "im2col",
    "col2im",
    "conv_forward",
    "conv_backward",
    "max_pool_forward",
    "max_pool_backward",
    "relu_forward",
    "relu_backward",
    "dropout_mask",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "cast",
    "adam_update",
    "batch_norm_sums",
    "channel_affine",
    "batch_norm_backward_sums",
    "batch_norm_dx",
]

# Which kernel templates each source file defines.
KERNELS = {
    "conv.cu": ("im2col", "col2im", "add_bias_nchw"),
    "pooling.cu": ("max_pool_forward", "max_pool_backward"),
    "activation.cu": ("relu_forward", "relu_backward"),
    "softmax.cu": ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
}
_SOURCE_OF = {kernel: source for source, kernels in KERNELS.items() for kernel in kernels}

# NumPy dtype -> C++ storage type used as the template argument.
_CUDA_TYPES = {
    np.dtype(np.float16): "__half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}

_THREADS_PER_BLOCK = 256
_MAX_BLOCKS = 65536  # kernels use grid-stride loops, so larger inputs still work


# ---------------------------------------------------------------- CuPy helpers


def gpu_available():
    """True when CuPy imports and at least one CUDA device can run a kernel."""
    cp = cupy_or_none()
    if cp is None:
        return False
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return False
        cp.arange(4).sum().item()  # compiles and launches a kernel, copies back
        return True
    except Exception:
        return False


# ------------------------------------------------------------- kernel sources


def _source_dir():
    try:
        return importlib.resources.files("deepnet._cuda_src")
    except ImportError:  # running from a source tree: <repo>/kernels/cuda
        return Path(__file__).resolve().parents[2] / "kernels" / "cuda"


def cuda_sources():
    """The ``.cu`` files, sorted by name (``pathlib.Path`` objects for a normal install)."""
    return sorted((p for p in _source_dir().iterdir() if p.name.endswith(".cu")), key=lambda p: p.name)


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


def load_cuda_source(filename):
    """Text of one ``.cu`` file with its ``#include "..."`` headers pasted in.

    This is exactly what NVRTC compiles.  Pasting the headers in (instead of
    passing ``-I``) keeps NVRTC independent of where the package is installed,
    and lets CuPy's kernel cache, keyed on the source text, notice header edits.
    """
    directory = _source_dir()
    text = (directory / filename).read_text(encoding="utf-8")
    return _LOCAL_INCLUDE.sub(lambda m: (directory / m.group(1)).read_text(encoding="utf-8"), text)


@functools.lru_cache(maxsize=None)
def _module(filename):
    cp = _cupy()
    names = [f"{kernel}<{ctype}>" for kernel in KERNELS[filename] for ctype in _CUDA_TYPES.values()]
    return cp.RawModule(code=load_cuda_source(filename), name_expressions=names)


@functools.lru_cache(maxsize=None)
def _kernel(name, dtype):
    ctype = _CUDA_TYPES.get(np.dtype(dtype))
    if ctype is None:
        raise TypeError(f"deepnet CUDA kernels support float16/32/64 arrays, not {np.dtype(dtype)}")
    return _module(_SOURCE_OF[name]).get_function(f"{name}<{ctype}>")


def _launch(name, dtype, n_items, args):
    """Run kernel ``name<dtype>`` over ``n_items`` items (grid-stride loop inside)."""
    if n_items == 0:
        return
    blocks = min((n_items + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK, _MAX_BLOCKS)
    _kernel(name, dtype)((blocks,), (_THREADS_PER_BLOCK,), args)


def _ints(*values):
    """Kernel ``int`` arguments: CuPy does not check types, so pass exact int32s."""
    return tuple(np.int32(v) for v in values)


def _matmul(a, b):
    """``a @ b`` with cuBLAS, returned in the accumulator dtype (float32 for float16)."""
    cp = _cupy()
    acc = compute_dtype(a.dtype)
    return cp.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False))


# ------------------------------------------------------------------ convolution


def im2col(x, kh, kw, stride, pad):
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw) in the book's row/column order."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size(H, kh, sh, ph), output_size(W, kw, sw, pw)
    col = cp.empty((N * OH * OW, C * kh * kw), dtype=x.dtype)
    _launch("im2col", x.dtype, col.size, (x, col) + _ints(N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW))
    return col


def col2im(col, x_shape, kh, kw, stride, pad):
    """Adjoint of im2col: sums overlapping window entries back into (N, C, H, W)."""
    cp = _cupy()
    col = cp.ascontiguousarray(col)
    N, C, H, W = (int(s) for s in x_shape)
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size(H, kh, sh, ph), output_size(W, kw, sw, pw)
    x = cp.empty((N, C, H, W), dtype=col.dtype)
    _launch("col2im", col.dtype, x.size, (col, x) + _ints(N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW))
    return x


def conv_forward(x, W, b, stride, pad, relu=False):
    """y (N, FN, OH, OW) = im2col(x) @ W.reshape(FN, -1).T + b, as NCHW (then ReLU if relu)."""
    cp = _cupy()
    W = cp.ascontiguousarray(W)
    b = cp.ascontiguousarray(b)
    FN, C, kh, kw = W.shape
    N, _, H, width = x.shape
    OH, OW = output_size(H, kh, stride[0], pad[0]), output_size(width, kw, stride[1], pad[1])
    col = im2col(x, kh, kw, stride, pad)
    y2d = _matmul(col, W.reshape(FN, C * kh * kw).T)  # (N*OH*OW, FN), accumulator dtype
    y = cp.empty((N, FN, OH, OW), dtype=x.dtype)
    _launch("add_bias_nchw", x.dtype, y.size, (y2d, b, y) + _ints(N, FN, OH * OW))
    return relu_forward(y) if relu else y


def conv_backward(dout, x, W, stride, pad, relu_out=None, input_gradient=True, pool_argmax=None):
    """Gradients (dx, dW, db) of conv_forward for the upstream gradient ``dout`` (dx None
    unless input_gradient; with pool_argmax, dout is a following 2x2, stride-2 max-pooling's
    output gradient and that pooling's backward pass comes first).

    With relu_out (the output of a conv_forward with relu=True) dout is first masked by it;
    with pool_argmax it may be the pooling's output instead (the mask at the winners).
    """
    cp = _cupy()
    FN, C, kh, kw = W.shape
    if pool_argmax is not None:
        out_shape = (
            dout.shape[0],
            FN,
            output_size(x.shape[2], kh, stride[0], pad[0]),
            output_size(x.shape[3], kw, stride[1], pad[1]),
        )
        dout = max_pool_backward(dout, pool_argmax, out_shape, 2, 2, (2, 2), (0, 0))
        if relu_out is not None and relu_out.shape != dout.shape:  # the pooling's output:
            relu_out = max_pool_backward(relu_out, pool_argmax, out_shape, 2, 2, (2, 2), (0, 0))  # at its winners
    if relu_out is not None:
        dout = relu_backward(dout, relu_out)
    N, _, OH, OW = dout.shape
    W2d = cp.ascontiguousarray(W).reshape(FN, C * kh * kw)
    dout2d = cp.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(N * OH * OW, FN)
    db = dout.sum(axis=(0, 2, 3), dtype=compute_dtype(dout.dtype)).astype(W.dtype)
    col = im2col(x, kh, kw, stride, pad)
    dW = _matmul(dout2d.T, col).astype(W.dtype, copy=False).reshape(W.shape)  # (col.T @ dout2d).T
    if not input_gradient:
        return None, dW, db
    dcol = _matmul(dout2d, W2d)  # accumulator dtype: float16 rounds once,
    dx = col2im(dcol, x.shape, kh, kw, stride, pad)  # after col2im has summed the windows
    return dx.astype(x.dtype, copy=False), dW, db


# ------------------------------------------------------------------ max pooling


def max_pool_forward(x, pool_h, pool_w, stride, pad):
    """Return (y, argmax): window maxima and the int32 flat index h*W + w of each winner."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size(H, pool_h, sh, ph), output_size(W, pool_w, sw, pw)
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = cp.empty((N, C, OH, OW), dtype=np.int32)
    _launch(
        "max_pool_forward", x.dtype, y.size, (x, y, argmax) + _ints(N, C, H, W, pool_h, pool_w, sh, sw, ph, pw, OH, OW)
    )
    return y, argmax


def max_pool_backward(dout, argmax, x_shape, pool_h, pool_w, stride, pad):
    """dx of shape x_shape: dout summed into the argmax pixel of each window."""
    cp = _cupy()
    dout = cp.ascontiguousarray(dout)
    argmax = cp.ascontiguousarray(argmax, dtype=np.int32)
    N, C, H, W = (int(s) for s in x_shape)
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size(H, pool_h, sh, ph), output_size(W, pool_w, sw, pw)
    dx = cp.empty((N, C, H, W), dtype=dout.dtype)
    _launch(
        "max_pool_backward",
        dout.dtype,
        dx.size,
        (dout, argmax, dx) + _ints(N, C, H, W, pool_h, pool_w, sh, sw, ph, pw, OH, OW),
    )
    return dx


# ------------------------------------------------------------------ activations


def relu_forward(x):
    """max(x, 0); NaN stays NaN."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    y = cp.empty_like(x)
    _launch("relu_forward", x.dtype, x.size, (x, y, np.int64(x.size)))
    return y


def relu_backward(dout, y):
    """dout * (y > 0)."""
    cp = _cupy()
    dout = cp.ascontiguousarray(dout)
    y = cp.ascontiguousarray(y)
    dx = cp.empty_like(dout)
    _launch("relu_backward", dout.dtype, dout.size, (dout, y, dx, np.int64(dout.size)))
    return dx


def dropout_mask(shape, ratio, seed_or_rng=None):
    """Boolean mask, True where a uniform [0, 1) draw is > ratio (as in the book).

    ``seed_or_rng`` is None, an int seed, or a CuPy ``Generator`` /
    ``RandomState`` (anything with ``random`` or ``random_sample``).
    """
    cp = _cupy()
    rng = seed_or_rng
    if rng is None or isinstance(rng, (int, np.integer)):
        rng = cp.random.default_rng(rng)
    draw = getattr(rng, "random", None) or rng.random_sample
    return draw(size=tuple(shape), dtype=np.float32) > ratio


# ---------------------------------------------------------- softmax + CE loss


def _labels(t, shape, name):
    """Integer labels (N,) as int32 from labels or one-hot targets (book: argmax)."""
    cp = _cupy()
    N, K = shape
    if t.ndim == 2:
        if t.shape != (N, K):
            raise ValueError(f"{name}: one-hot t must have shape ({N}, {K}), not {t.shape}")
        t = t.argmax(axis=1)
    if t.shape != (N,):
        raise ValueError(f"{name}: t must have shape ({N},) or ({N}, {K}), not {t.shape}")
    labels = cp.ascontiguousarray(t, dtype=np.int32)
    if N and (int(labels.min()) < 0 or int(labels.max()) >= K):
        raise ValueError(f"{name}: labels must lie in [0, {K})")
    return labels


def softmax_cross_entropy(x, t):
    """Return (loss, y): y = softmax(x) row-wise, loss = -mean(log(y[t] + 1e-7)).

    ``t`` holds integer labels (N,) or one-hot targets (N, K).
    """
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    N, K = x.shape
    labels = _labels(t, x.shape, "softmax_cross_entropy")
    y = cp.empty_like(x)
    row_loss = cp.empty(N, dtype=np.float64)
    _launch("softmax_cross_entropy_forward", x.dtype, N, (x, labels, y, row_loss) + _ints(N, K))
    return float(row_loss.mean()), y


def softmax_cross_entropy_backward(y, t):
    """(y - onehot(t)) / N; with one-hot (or soft) targets t this is (y - t) / N."""
    cp = _cupy()
    y = cp.ascontiguousarray(y)
    N, K = y.shape
    if t.ndim == 2:
        if t.shape != y.shape:
            raise ValueError(f"softmax_cross_entropy_backward: t must have shape ({N},) or ({N}, {K}), not {t.shape}")
        acc = compute_dtype(y.dtype)
        return ((y.astype(acc) - t.astype(acc)) / N).astype(y.dtype)
    labels = _labels(t, y.shape, "softmax_cross_entropy_backward")
    dx = cp.empty_like(y)
    _launch("softmax_cross_entropy_backward", y.dtype, dx.size, (y, labels, dx) + _ints(N, K))
    return dx


def cast(a, dtype):
    """a as dtype (CuPy's own conversion)."""
    return a.astype(dtype, copy=False)


# ------------------------------------------------- image warps (augmentation)

KERNELS["warp.cu"] = ("affine_warp", "elastic_warp")
_SOURCE_OF.update(affine_warp="warp.cu", elastic_warp="warp.cu")
__all__ += ["affine_warp", "elastic_warp"]


def affine_warp(x, theta, fill):
    """x (N, C, H, W) sampled bilinearly at theta[n] @ (row, col, 1) (theta (N, 2, 3))."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    theta = cp.ascontiguousarray(theta, dtype=np.float64)
    out = cp.empty_like(x)
    _launch("affine_warp", x.dtype, x.size, (x, theta, out) + _ints(*x.shape) + (np.float64(fill),))
    return out


def elastic_warp(x, displacement, theta, fill):
    """As affine_warp, at theta[n] @ (row + d[n, 0], col + d[n, 1], 1) (d (N, 2, H, W)).

    The kernel reads d in float64, whatever its dtype: positions are computed in double,
    as in the CPU kernels."""
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    displacement = cp.ascontiguousarray(displacement, dtype=np.float64)
    theta = cp.ascontiguousarray(theta, dtype=np.float64)
    out = cp.empty_like(x)
    _launch("elastic_warp", x.dtype, x.size, (x, displacement, theta, out) + _ints(*x.shape) + (np.float64(fill),))
    return out
