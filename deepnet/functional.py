"""Public kernel functions: validate the arguments once, then dispatch to a backend.

The backend is chosen by the array type (a CuPy array runs the CUDA kernels) and, for
NumPy arrays, by deepnet.set_backend ("cython": compiled kernels, "numpy": reference).
Every backend module exposes the same functions with the same contract (deepnet.backends
states it: the required ops, and the optional ones, which are asked for through
backends.supports), so each function here is written once for all of them.

Stride and pad are an int or a (vertical, horizontal) pair.  Errors name the caller
(``caller=`` lets a layer put its own name in the message).  The checks live in
deepnet._validation, batch normalisation's ops in deepnet._batchnorm_ops and the image
warps in deepnet._warp_ops; this module re-exports them.
"""

from __future__ import annotations
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from deepnet import _config, backends
from deepnet._array import is_cupy_array
from deepnet._dtypes import compute_dtype

# The argument checks (deepnet._validation) and the ops of batch normalisation and of the
# image warps (their own modules) are part of this module's API.
from deepnet._batchnorm_ops import batch_norm_backward, batch_norm_statistics, channel_affine
from deepnet._validation import (
    CONV_SIZES as CONV_SIZES,
    GEMM_TILE as GEMM_TILE,
    INT_LIMIT as INT_LIMIT,
    WINDOW_SIZES as WINDOW_SIZES,
    Array,
    IntPair,
    _channels_last_hint as _channels_last_hint,
    _check_argmax,
    _check_x_shape,
    _conv_arguments,
    _conv_bias,
    _pool_window,
    _window,
    as_float_array,
)
from deepnet._warp_ops import affine_warp, elastic_warp

__all__ = [
    "Array",
    "IntPair",
    "as_float_array",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_max_pool2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "matmul",
    "cast",
    "adam_update",
    "batch_norm_statistics",
    "channel_affine",
    "batch_norm_backward",
    "affine_warp",
    "elastic_warp",
]

# _backend(caller, *arrays): the backend module that computes for these arrays, picked by
# deepnet.backends' registry (a mix of NumPy and CuPy arrays is refused, naming caller).
_backend = backends.for_arrays


def im2col(
    x: ArrayLike, kh: int, kw: int, stride: IntPair = 1, pad: IntPair = 0, *, caller: str = "deepnet.im2col"
) -> Array:
    """(N, C, H, W) -> columns (N*OH*OW, C*kh*kw) in the book's order.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        Float16, float32 or float64 images.
    kh, kw : int
        The window's height and width.
    stride, pad : int or (int, int)
        Stride and zero padding, vertical and horizontal.
    caller : str
        The name errors are reported under.

    Returns
    -------
    array of shape (N*OH*OW, C*kh*kw)
        One row per window position.

    Raises
    ------
    TypeError, ValueError
        A non-float array, a wrong rank, or a window that does not fit.
    """
    x = as_float_array(x, "x", caller, ndim=4)
    kh, kw, stride, pad, _ = _window(x.shape, kh, kw, stride, pad, caller)
    return _backend(caller, x).im2col(x, kh, kw, stride, pad)


def col2im(
    col: ArrayLike,
    x_shape: Sequence[int],
    kh: int,
    kw: int,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    caller: str = "deepnet.col2im",
) -> Array:
    """Adjoint of im2col: columns (N*OH*OW, C*kh*kw) -> (N, C, H, W), overlaps summed.

    Parameters
    ----------
    col : array_like of shape (N*OH*OW, C*kh*kw)
        The columns.
    x_shape : sequence of int
        (N, C, H, W) of the images.
    kh, kw : int
        The window's height and width.
    stride, pad : int or (int, int)
        Stride and zero padding, vertical and horizontal.
    caller : str
        The name errors are reported under.

    Returns
    -------
    array of shape x_shape
        The images, each pixel the sum of its windows' entries.

    Raises
    ------
    TypeError, ValueError
        A non-float array, or a shape that does not match the geometry.
    """
    col = as_float_array(col, "col", caller, ndim=2)
    x_shape = _check_x_shape(x_shape, caller)
    N, C = x_shape[:2]
    kh, kw, stride, pad, (out_h, out_w) = _window(x_shape, kh, kw, stride, pad, caller)
    expected = (N * out_h * out_w, C * kh * kw)
    if tuple(col.shape) != expected:
        raise ValueError(
            f"{caller}: col must have shape {expected} for x_shape {x_shape}, "
            f"kernel {kh}x{kw}, stride {stride}, pad {pad}; got {tuple(col.shape)}"
        )
    return _backend(caller, col).col2im(col, x_shape, kh, kw, stride, pad)


def conv2d(
    x: ArrayLike,
    W: ArrayLike,
    b: Optional[ArrayLike],
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    relu: bool = False,
    caller: str = "deepnet.conv2d",
) -> Array:
    """Convolution (cross-correlation, like the book): (N, C, H, W) -> (N, FN, OH, OW).

    Computed in W's dtype; x is converted to it if needed; b is (FN,) or None (no bias).
    relu=True applies max(y, 0) in the same pass (conv + ReLU fused).

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        The images.
    W : array_like of shape (FN, C, kh, kw)
        The filters.
    b : array_like of shape (FN,), or None
        The biases.
    stride, pad : int or (int, int)
        Stride and zero padding, vertical and horizontal.
    relu : bool
        Apply max(y, 0) in the same pass.
    caller : str
        The name errors are reported under.

    Returns
    -------
    array of shape (N, FN, OH, OW)
        The output, in W's dtype.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays, shapes that do not match, or a geometry that does not fit.
    """
    x, W, stride, pad, _ = _conv_arguments(x, W, stride, pad, caller)
    b = _conv_bias(b, W, caller)
    return _backend(caller, x, W, b).conv_forward(x, W, b, stride, pad, relu=bool(relu))


def conv2d_max_pool2d(
    x: ArrayLike,
    W: ArrayLike,
    b: Optional[ArrayLike],
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    relu: bool = False,
    argmax: bool = False,
    caller: str = "deepnet.conv2d_max_pool2d",
) -> Union[Array, Tuple[Array, Array]]:
    """max_pool2d(conv2d(x, W, b, stride, pad, relu=relu), 2, 2, 2): DeepConvNet's
    convolution and 2x2 pooling.  Returns the pooled output, or with argmax=True (for
    training) (pooled, argmax) as max_pool2d does; conv2d_backward takes that argmax as
    pool_argmax and the pooled output as relu_out.  The compiled CPU backend runs it as one
    pass whose convolution output never reaches memory, equal bit for bit to the two calls
    in float32 and float64 and equal in value in float16 (pooled before rounding; a zero's
    sign could differ), and with argmax equal bit for bit in all three (float16 then rounds
    before pooling); other backends and batches smaller than the thread count make the two
    calls.  (Where a NaN bias meets a NaN sum, which NaN's bits come out can differ.)"""
    x, W, stride, pad, out_hw = _conv_arguments(x, W, stride, pad, caller)
    b = _conv_bias(b, W, caller)
    backend = _backend(caller, x, W, b)
    if min(out_hw) >= 2 and backends.supports(backend, "conv_pool_forward"):
        fused = backend.conv_pool_forward(x, W, b, stride, pad, relu=bool(relu), argmax=bool(argmax))
        if fused is not None:
            return fused
    y = backend.conv_forward(x, W, b, stride, pad, relu=bool(relu))
    pooled, winners = max_pool2d(y, 2, 2, 2, caller=f"{caller} (pooling the convolution's output)")
    return (pooled, winners) if argmax else pooled


def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    W: ArrayLike,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    relu_out: Optional[ArrayLike] = None,
    input_gradient: bool = True,
    pool_argmax: Optional[ArrayLike] = None,
    caller: str = "deepnet.conv2d_backward",
) -> Tuple[Optional[Array], Array, Array]:
    """Gradients (dx, dW, db) of conv2d given dout = dL/dy.

    For a conv2d(..., relu=True), pass its output as relu_out: the ReLU's backward (dout
    kept where relu_out > 0) is then fused into this pass.  input_gradient=False skips dx
    (returned as None), which a network's first layer never needs.  With pool_argmax (the
    argmax of a 2x2, stride-2, unpadded max_pool2d of the output), dout is that pooling's
    output gradient and its backward pass (max_pool2d_backward) is fused too; relu_out may
    then be the pooling's output instead of the convolution's (conv2d_max_pool2d keeps only
    that): its entries are the ReLU's output at the winners, the only pixels masked.

    Parameters
    ----------
    dout : array_like
        dL/dy (of the pooled output's shape with pool_argmax).
    x, W : array_like
        conv2d's input and filters.
    stride, pad : int or (int, int)
        conv2d's stride and padding.
    relu_out : array_like, optional
        The output of a conv2d(..., relu=True) (or its pooled output), to fuse the ReLU's backward.
    input_gradient : bool
        Compute dx (False returns None for it).
    pool_argmax : array_like, optional
        The winners of a 2x2, stride-2 max_pool2d of the output, to fuse its backward.
    caller : str
        The name errors are reported under.

    Returns
    -------
    dx : array or None
        The input's gradient (None with input_gradient=False).
    dW, db : array
        The filters' and biases' gradients.

    Raises
    ------
    TypeError, ValueError
        Arrays that do not match the geometry.
    """
    x, W, stride, pad, out_hw = _conv_arguments(x, W, stride, pad, caller)
    dout = as_float_array(dout, "dout", caller, ndim=4, dtype=W.dtype)
    out_shape = (x.shape[0], W.shape[0]) + out_hw
    expected = out_shape if pool_argmax is None else out_shape[:2] + (out_hw[0] // 2, out_hw[1] // 2)
    if tuple(dout.shape) != expected:
        raise ValueError(
            f"{caller}: dout must have shape {expected}"
            + ("" if pool_argmax is None else " (the 2x2-pooled output's)")
            + f", got {tuple(dout.shape)}"
        )
    arrays: Tuple[Array, ...] = (dout, x, W)
    if pool_argmax is not None:
        pool_argmax = _check_argmax(pool_argmax, expected, out_hw[0] * out_hw[1], caller)
        arrays += (pool_argmax,)
    if relu_out is not None:
        relu_out = as_float_array(relu_out, "relu_out", caller, dtype=W.dtype)
        if tuple(relu_out.shape) != out_shape and (pool_argmax is None or tuple(relu_out.shape) != expected):
            raise ValueError(
                f"{caller}: relu_out must have the output's shape {out_shape}"
                + ("" if pool_argmax is None else f" or the pooled output's {expected}")
                + f", got {tuple(relu_out.shape)}"
            )
        arrays += (relu_out,)
    return _backend(caller, *arrays).conv_backward(
        dout, x, W, stride, pad, relu_out=relu_out, input_gradient=bool(input_gradient), pool_argmax=pool_argmax
    )


def max_pool2d(
    x: ArrayLike,
    pool_h: int,
    pool_w: int,
    stride: Optional[IntPair] = None,
    pad: IntPair = 0,
    *,
    caller: str = "deepnet.max_pool2d",
) -> Tuple[Array, Array]:
    """Max-pooling: returns (y, argmax); argmax (int32) holds the flat index iy*W + ix of
    each winner.

    stride defaults to the window size.  Padding never wins a window.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        The images.
    pool_h, pool_w : int
        The window's height and width.
    stride : int or (int, int), optional
        The stride (default: the window size).
    pad : int or (int, int)
        Padding of each side, smaller than the window.
    caller : str
        The name errors are reported under.

    Returns
    -------
    y : array of shape (N, C, OH, OW)
        The maxima.
    argmax : int32 array of shape (N, C, OH, OW)
        The flat index iy*W + ix of each winner.

    Raises
    ------
    TypeError, ValueError
        A non-float array or a geometry that does not fit.
    """
    x = as_float_array(x, "x", caller, ndim=4)
    pool_h, pool_w, stride, pad, _ = _pool_window(x.shape, pool_h, pool_w, stride, pad, caller)
    return _backend(caller, x).max_pool_forward(x, pool_h, pool_w, stride, pad)


def max_pool2d_backward(
    dout: ArrayLike,
    argmax: ArrayLike,
    x_shape: Sequence[int],
    pool_h: int,
    pool_w: int,
    stride: Optional[IntPair] = None,
    pad: IntPair = 0,
    *,
    caller: str = "deepnet.max_pool2d_backward",
) -> Array:
    """Gradient of max_pool2d: dout scattered to the argmax positions (overlaps add up).

    dout and argmax must have the shape max_pool2d gives for x_shape and this geometry.
    """
    dout = as_float_array(dout, "dout", caller, ndim=4)
    x_shape = _check_x_shape(x_shape, caller)
    pool_h, pool_w, stride, pad, out_hw = _pool_window(x_shape, pool_h, pool_w, stride, pad, caller)
    expected = x_shape[:2] + out_hw
    if tuple(dout.shape) != expected:
        raise ValueError(
            f"{caller}: dout must have shape {expected} (max_pool2d's output for x_shape "
            f"{x_shape}, pool window {pool_h}x{pool_w}, stride {stride}, pad {pad}), "
            f"got {tuple(dout.shape)}"
        )
    argmax = _check_argmax(argmax, expected, x_shape[2] * x_shape[3], caller)
    return _backend(caller, dout, argmax).max_pool_backward(dout, argmax, x_shape, pool_h, pool_w, stride, pad)


def relu(x: ArrayLike, *, caller: str = "deepnet.relu") -> Array:
    """max(x, 0); NaN stays NaN.

    Parameters
    ----------
    x : array_like
        A float16, float32 or float64 array.
    caller : str
        The name errors are reported under.

    Returns
    -------
    array
        max(x, 0), of x's shape and dtype.

    Raises
    ------
    TypeError
        A non-float array.
    """
    x = as_float_array(x, "x", caller)
    return _backend(caller, x).relu_forward(x)


def relu_backward(dout: ArrayLike, y: ArrayLike, *, caller: str = "deepnet.relu_backward") -> Array:
    """dout where the ReLU's output y was positive, else 0.

    Parameters
    ----------
    dout : array_like
        dL/dy.
    y : array_like
        The ReLU's output.
    caller : str
        The name errors are reported under.

    Returns
    -------
    array
        dL/dx, in y's dtype.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays or different shapes.
    """
    y = as_float_array(y, "y", caller)
    dout = as_float_array(dout, "dout", caller, dtype=y.dtype)
    if dout.shape != y.shape:
        raise ValueError(f"{caller}: dout shape {tuple(dout.shape)} differs from y shape {tuple(y.shape)}")
    return _backend(caller, dout, y).relu_backward(dout, y)


# Below this many multiply-adds OpenBLAS computes on the calling thread by itself (its own
# threshold is 4x higher), so limiting its threads would only cost the switch (~20 us).
SMALL_PRODUCT = 1 << 16


def matmul(a: Array, b: Array) -> Array:
    """a @ b for the layers' small products (affine).  NumPy arrays with the compiled
    backend run BLAS single-threaded, so its spinning threads do not compete with the
    kernels' OpenMP threads; the NumPy reference backend leaves BLAS as configured."""
    if is_cupy_array(a) or _config.get_backend() != "cython" or a.shape[0] * a.shape[-1] * b.shape[-1] < SMALL_PRODUCT:
        return a @ b
    with _config.single_threaded_blas():
        return a @ b


def affine(x: Array, W: Array, b: Array) -> Array:
    """x @ W + b for the Affine layer: x (N, K), W (K, M) and b (M,) in one compute dtype
    (float32 or float64).  A backend with the optional op affine_forward computes it (the
    compiled one: the kernel that deepnet.compile's plans run too, so that a plan gives the
    layer's bits); the others as matmul(x, W) + b."""
    backend = _backend("deepnet.affine", x, W, b)
    if backends.supports(backend, "affine_forward"):
        return backend.affine_forward(x, W, b)
    return matmul(x, W) + b


def global_average_pool(x: Array) -> Array:
    """(N, C, H, W) -> (N, C), the mean of every plane, in x's dtype (float16 computed in
    float32).  A backend with the optional op global_average_pool computes it (the compiled
    one: the kernel of deepnet.compile's plans); the others as x.mean(axis=(2, 3))."""
    backend = _backend("deepnet.global_average_pool", x)
    if backends.supports(backend, "global_average_pool"):
        pooled = backend.global_average_pool(x)
        if pooled is not None:
            return pooled
    return x.mean(axis=(2, 3), dtype=compute_dtype(x.dtype)).astype(x.dtype, copy=False)


def cast(a: Array, dtype: DTypeLike) -> Array:
    """a.astype(dtype, copy=False) on the array's backend: the layers' conversions between
    a storage dtype and the compute dtype (float16 <-> float32)."""
    if a.dtype == dtype:
        return a
    return _backend("deepnet.cast", a).cast(a, np.dtype(dtype))


def adam_update(
    param: Array, grad: Array, m: Array, v: Array, lr_t: float, beta1: float, beta2: float, eps: float
) -> None:
    """One Adam step in place, as the book's (deepnet.optimizers.Adam): m += (1-beta1) *
    (grad - m); v += (1-beta2) * (grad^2 - v); param -= lr_t * m / (sqrt(v) + eps).  The
    compiled backend does it in one pass with the same bits as the NumPy reference."""
    return _backend("deepnet.adam_update", param, grad, m, v).adam_update(param, grad, m, v, lr_t, beta1, beta2, eps)
