"""Public kernel functions: validate the arguments once, then dispatch to a backend.

The backend is chosen by the array type (a CuPy array runs the CUDA kernels) and, for
NumPy arrays, by deepnet.set_backend ("cython": compiled kernels, "numpy": reference).
Every backend module exposes the same functions with the same contract (deepnet.backends
states it: the required ops, and the optional ones, which are asked for through
backends.supports), so each function here is written once for all of them.

Stride and pad are an int or a (vertical, horizontal) pair.  Errors name the caller
(``caller=`` lets a layer put its own name in the message).
"""

from __future__ import annotations
import functools
import numbers
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from deepnet import _config, backends
from deepnet._array import get_array_module, is_cupy_array
from deepnet._dtypes import FLOAT_DTYPES, compute_dtype, output_hw

# An array of any dtype on the arrays' device (a CuPy array where the inputs are CuPy's).
Array = NDArray[Any]
# Stride and pad: an int or a (vertical, horizontal) pair.
IntPair = Union[int, Tuple[int, int]]

# _backend(caller, *arrays): the backend module that computes for these arrays, picked by
# deepnet.backends' registry (a mix of NumPy and CuPy arrays is refused, naming caller).
_backend = backends.for_arrays


def as_float_array(
    a: ArrayLike, name: str, caller: str, ndim: Optional[int] = None, dtype: Optional[DTypeLike] = None
) -> Array:
    """``a`` as a C-contiguous float16/32/64 array (a copy only when needed).

    Non-contiguous, Fortran-ordered or sliced inputs are copied; read-only ones are not.
    With ``dtype`` the array is converted to that dtype (layers compute in their parameters').
    """
    xp = get_array_module(a)
    arr: Any = a if hasattr(a, "dtype") else np.asarray(a)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{caller}: {name} must be float16, float32 or float64, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{caller}: {name} must be {ndim}-D, got {arr.ndim}-D array of shape {tuple(arr.shape)}")
    return xp.ascontiguousarray(arr, dtype=dtype if dtype is not None else arr.dtype)


def _pair(value: Any, name: str, caller: str, minimum: int) -> Tuple[int, int]:
    """(vertical, horizontal) ints from an int or a pair; each must be >= minimum."""
    # The common cases first, answered quickly (batch-1 latency): an int, a pair of ints.
    if type(value) is int and value >= minimum:
        return (value, value)
    if (
        type(value) is tuple
        and len(value) == 2
        and type(value[0]) is int
        and type(value[1]) is int
        and value[0] >= minimum
        and value[1] >= minimum
    ):
        return value
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(type(v) is int or _is_integer(v) for v in pair):
        raise TypeError(f"{caller}: {name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ValueError(f"{caller}: {name} must be >= {minimum}, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def _is_integer(v: object) -> bool:
    # The slower, general check, for numpy integers and the like (never bool).
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


# The kernels (compiled and CUDA) index within one image with C ints; the compiled
# convolutions also pad filter and channel counts to whole GEMM tiles (of at most
# GEMM_TILE columns, see deepnet._kernels.conv.column_multiple).
INT_LIMIT = 2**31
GEMM_TILE = 16
# What _window and _conv_arguments check against INT_LIMIT (in this order).
WINDOW_SIZES = (
    "padded height + stride",
    "padded width + stride",
    "padded image plane",
    "number of window positions (channels x window)",
)
CONV_SIZES = ("padded input", "output", "padded output gradient", "input gradient", "weight gradient")


def _check_int_range(caller: str, names: Sequence[str], sizes: Sequence[int], geometry: Callable[[], str]) -> None:
    """Refuse a geometry whose index arithmetic would not fit the kernels' C ints."""
    if max(sizes) >= INT_LIMIT:
        largest = max(sizes)
        raise ValueError(
            f"{caller}: too large for the kernels' int indexes: the "
            f"{names[sizes.index(largest)]} would be {largest}, the limit is "
            f"{INT_LIMIT - 1} ({geometry()})"
        )


def _window(
    x_shape: Sequence[int], kh: int, kw: int, stride: IntPair, pad: IntPair, caller: str, what: str = "kernel"
) -> Tuple[int, int, Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
    """Validate a kh x kw window sliding over images of shape x_shape.

    Returns (kh, kw, stride, pad, (OH, OW)) as ints and pairs of ints.
    """
    stride = _pair(stride, "stride", caller, minimum=1)
    pad = _pair(pad, "pad", caller, minimum=0)
    kh, kw = _pair((kh, kw), what + " size", caller, minimum=1)
    return kh, kw, stride, pad, _window_output(tuple(x_shape), kh, kw, stride, pad, caller, what)


# The checks of shapes alone are cached: a network calls each layer with the same shapes
# again and again, and at batch 1 these checks cost as much as the kernels.  Only results
# are cached, never errors; the arguments are ints and tuples of ints (typed: 1 and True
# are different keys).
_shape_checks_cache = functools.lru_cache(maxsize=1024, typed=True)


@_shape_checks_cache
def _window_output(
    x_shape: Sequence[int], kh: int, kw: int, stride: Tuple[int, int], pad: Tuple[int, int], caller: str, what: str
) -> Tuple[int, int]:
    """(OH, OW) of _window's validated geometry."""
    C, H, W = x_shape[1:]
    padded_h, padded_w = H + 2 * pad[0], W + 2 * pad[1]
    if kh > padded_h or kw > padded_w:
        raise ValueError(
            f"{caller}: {what} {kh}x{kw} is larger than the padded input "
            f"{padded_h}x{padded_w} (input {H}x{W}, pad {pad})"
        )
    # The kernels step from one window to the next and from padding into the image.
    _check_int_range(
        caller,
        WINDOW_SIZES,
        (padded_h + stride[0], padded_w + stride[1], padded_h * padded_w, C * kh * kw),
        lambda: f"x shape {tuple(x_shape)}, {what} {kh}x{kw}, stride {stride}, pad {pad}",
    )
    return output_hw(x_shape, kh, kw, stride, pad)


def _check_x_shape(x_shape: Sequence[int], caller: str) -> Tuple[int, ...]:
    x_shape = tuple(x_shape)
    if len(x_shape) != 4 or not all(_is_integer(s) and s >= 0 for s in x_shape):
        raise ValueError(f"{caller}: x_shape must be 4 non-negative ints (N, C, H, W), got {x_shape!r}")
    return tuple(int(s) for s in x_shape)


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


def _tiles(n: int) -> int:
    """n columns rounded up to whole GEMM tiles."""
    return -(-n // GEMM_TILE) * GEMM_TILE


def _conv_arguments(
    x: ArrayLike, W: ArrayLike, stride: IntPair, pad: IntPair, caller: str
) -> Tuple[Array, Array, Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
    """Validate a convolution of x with the filters W; returns (x, W, stride, pad, (OH, OW)).

    x is converted to W's dtype.  Besides the window, one image's buffers in the compiled
    kernels must fit their int offsets.
    """
    W = as_float_array(W, "W", caller, ndim=4)
    x = as_float_array(x, "x", caller, ndim=4, dtype=W.dtype)
    stride = _pair(stride, "stride", caller, minimum=1)
    pad = _pair(pad, "pad", caller, minimum=0)
    return (x, W, stride, pad, _conv_output(tuple(x.shape), tuple(W.shape), stride, pad, caller))


def _channels_last_hint(x_shape: Sequence[int], channels: int) -> str:
    """For an error about x's channels: a hint when x looks channels-last (N, H, W, C)."""
    if len(x_shape) == 4 and x_shape[3] == channels and x_shape[1] != channels:
        return (
            f"; its last axis has the {channels} channel{'s' if channels != 1 else ''} expected, "
            "so it looks channels-last "
            "(N, H, W, C): pass x.transpose(0, 3, 1, 2)"
        )
    return ""


@_shape_checks_cache
def _conv_output(
    x_shape: Sequence[int], W_shape: Sequence[int], stride: Tuple[int, int], pad: Tuple[int, int], caller: str
) -> Tuple[int, int]:
    """(OH, OW) of _conv_arguments' validated geometry."""
    if x_shape[1] != W_shape[1]:
        raise ValueError(
            f"{caller}: x has {x_shape[1]} channels but W expects {W_shape[1]} "
            f"(x shape {x_shape}, W shape {W_shape}); x must be laid out (N, C, H, W), "
            "channels first" + _channels_last_hint(x_shape, W_shape[1])
        )
    FN, C, kh, kw = W_shape
    _, _, stride, pad, (out_h, out_w) = _window(x_shape, kh, kw, stride, pad, caller)
    H, Wd = x_shape[2:]
    _check_int_range(
        caller,
        CONV_SIZES,
        (
            C * (H + 2 * pad[0]) * (Wd + 2 * pad[1]),
            _tiles(FN) * out_h * out_w,
            FN * (out_h + 2 * kh) * (out_w + 2 * kw),
            _tiles(C) * H * Wd,
            C * kh * kw * _tiles(FN),
        ),
        lambda: f"per image; x shape {x_shape}, W shape {W_shape}, stride {stride}, pad {pad}",
    )
    return out_h, out_w


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


def _conv_bias(b: Optional[ArrayLike], W: Array, caller: str) -> Array:
    """b as conv2d takes it: (FN,) in W's dtype; None gives zeros."""
    if b is None:
        b = get_array_module(W).zeros(W.shape[0], dtype=W.dtype)
    b = as_float_array(b, "b", caller, dtype=W.dtype).reshape(-1)
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"{caller}: b must have {W.shape[0]} entries (one per filter), got {b.shape[0]}")
    return b


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


def _pool_window(
    x_shape: Sequence[int], pool_h: int, pool_w: int, stride: Optional[IntPair], pad: IntPair, caller: str
) -> Tuple[int, int, Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
    """Validate a pooling geometry (stride None: the window size), as _window does."""
    stride = (pool_h, pool_w) if stride is None else stride
    pool_h, pool_w, stride, pad, out_hw = _window(x_shape, pool_h, pool_w, stride, pad, caller, what="pool window")
    if pad[0] >= pool_h or pad[1] >= pool_w:
        raise ValueError(
            f"{caller}: pad {pad} must be smaller than the pool window {pool_h}x{pool_w} "
            "(a window of padding alone has no maximum)"
        )
    if 0 in x_shape[2:]:
        raise ValueError(
            f"{caller}: images of {x_shape[2]}x{x_shape[3]} pixels have no maximum (x shape {tuple(x_shape)})"
        )
    return pool_h, pool_w, stride, pad, out_hw


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


def _check_argmax(argmax: Any, shape: Tuple[int, ...], plane_size: int, caller: str) -> Array:
    """max_pool2d's argmax of the given shape, as int32: integers in [0, plane_size), never cast
    before they are checked."""
    xp = get_array_module(argmax)
    if not hasattr(argmax, "dtype"):
        argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"{caller}: argmax must hold integers (max_pool2d's int32 argmax), got dtype {argmax.dtype}")
    if tuple(argmax.shape) != shape:
        raise ValueError(f"{caller}: argmax must have shape {shape} (as dout), got {tuple(argmax.shape)}")
    if argmax.size and (int(argmax.min()) < 0 or int(argmax.max()) >= plane_size):
        raise ValueError(
            f"{caller}: argmax entries must lie in [0, {plane_size}) (flat indexes into "
            f"the input plane), got [{int(argmax.min())}, {int(argmax.max())}]"
        )
    return xp.ascontiguousarray(argmax, dtype=np.int32)


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


# -- batch normalisation ------------------------------------------------------------------


def _per_channel(a: Any, channels: int, name: str, caller: str, dtype: DTypeLike) -> Array:
    a = get_array_module(a).ascontiguousarray(a, dtype=dtype).reshape(-1)
    if a.shape[0] != channels:
        raise ValueError(f"{caller}: {name} must have {channels} entries (one per channel), got {a.shape[0]}")
    return a


def batch_norm_statistics(
    x: ArrayLike,
    shift: Optional[ArrayLike] = None,
    sum_across: Optional[Callable[[Array], Array]] = None,
    *,
    caller: str = "deepnet.batch_norm_statistics",
) -> Tuple[Array, Array, int]:
    """Per-channel mean and biased variance of x (N, C, M) over its axes 0 and 2, and the
    number of values per channel, as (mean, var, count) in x's compute dtype.

    ``shift``: a value near each channel's mean (e.g. the running mean, or a value of the
    channel), subtracted before the squares are summed, for accuracy.  A shift that is one
    of the channel's values (BatchNormalization takes the first) makes a channel constant
    over the batch come out exact: mean its value, variance 0.  ``sum_across(array)``: sums an array over all
    ranks of a data-parallel run (one call: count and sums go in one buffer), so that the
    statistics are those of the global batch.
    """
    x = as_float_array(x, "x", caller, ndim=3)
    xp = get_array_module(x)
    acc = compute_dtype(x.dtype)
    shift = xp.zeros(x.shape[1], acc) if shift is None else _per_channel(shift, x.shape[1], "shift", caller, acc)
    sums = _backend(caller, x, shift).batch_norm_sums(x, shift)
    count = x.shape[0] * x.shape[2]
    if sum_across is not None:
        packed = sum_across(xp.concatenate([xp.asarray([float(count)]), sums.reshape(-1)]))
        count, sums = int(round(float(packed[0]))), packed[1:].reshape(2, -1)
    if count == 0:
        return xp.zeros(x.shape[1], acc), xp.zeros(x.shape[1], acc), 0
    mean_shifted = sums[0] / count
    var = xp.maximum(sums[1] / count - mean_shifted * mean_shifted, 0)
    return (shift.astype(np.float64) + mean_shifted).astype(acc), var.astype(acc), count


def channel_affine(
    x: ArrayLike,
    scale: ArrayLike,
    offset: ArrayLike,
    *,
    shift: Optional[ArrayLike] = None,
    relu: bool = False,
    caller: str = "deepnet.channel_affine",
) -> Array:
    """y[n, c, m] = (x[n, c, m] - shift[c]) * scale[c] + offset[c] for x (N, C, M) (batch
    normalisation's output, shift its mean and offset its beta; shift None: 0), then
    max(y, 0) if relu (a ReLU fused into the same pass).  The difference is taken first
    and then scaled, so that where x equals shift (a channel constant over the batch) y is
    exactly offset: folding the shift into the offset, x * scale + (offset - shift *
    scale), would miss it by rounding errors of x * scale."""
    x = as_float_array(x, "x", caller, ndim=3)
    acc = compute_dtype(x.dtype)
    xp = get_array_module(x)
    scale = _per_channel(scale, x.shape[1], "scale", caller, acc)
    offset = _per_channel(offset, x.shape[1], "offset", caller, acc)
    shift = xp.zeros(x.shape[1], acc) if shift is None else _per_channel(shift, x.shape[1], "shift", caller, acc)
    return _backend(caller, x, shift, scale, offset).channel_affine(x, shift, scale, offset, relu=bool(relu))


def batch_norm_backward(
    dout: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    inv_std: ArrayLike,
    gamma: Array,
    count: int,
    sum_across: Optional[Callable[[Array], Array]] = None,
    *,
    relu_out: Optional[ArrayLike] = None,
    caller: str = "deepnet.batch_norm_backward",
) -> Tuple[Array, Array, Array]:
    """(dx, dgamma, dbeta) of a training-mode batch normalisation of x (N, C, M).

    ``mean``, ``inv_std`` and ``count`` are what batch_norm_statistics gave (with
    inv_std = 1 / sqrt(var + eps)); with ``sum_across`` the two sums that dx needs are
    those of the global batch (dgamma and dbeta stay this rank's, as every gradient).
    ``relu_out``: the output of a channel_affine(..., relu=True); dout is masked by it first.
    """
    x = as_float_array(x, "x", caller, ndim=3)
    dout = as_float_array(dout, "dout", caller, ndim=3, dtype=x.dtype)
    if dout.shape != x.shape:
        raise ValueError(f"{caller}: dout shape {tuple(dout.shape)} differs from x shape {tuple(x.shape)}")
    acc = compute_dtype(x.dtype)
    C = x.shape[1]
    mean, inv_std = (_per_channel(a, C, n, caller, acc) for a, n in ((mean, "mean"), (inv_std, "inv_std")))
    gamma_acc = _per_channel(gamma, C, "gamma", caller, acc)
    if relu_out is not None:
        relu_out = as_float_array(relu_out, "relu_out", caller, ndim=3, dtype=x.dtype)
        if relu_out.shape != x.shape:
            raise ValueError(f"{caller}: relu_out shape {tuple(relu_out.shape)} differs from x shape {tuple(x.shape)}")
    backend = _backend(caller, dout, x, mean, inv_std)
    sums = backend.batch_norm_backward_sums(dout, x, mean, inv_std, relu_out=relu_out)
    global_sums = sums if sum_across is None else sum_across(sums.reshape(-1)).reshape(2, -1)
    scale = 1.0 / count if count else 0.0
    dx = backend.batch_norm_dx(
        dout,
        x,
        mean,
        inv_std,
        gamma_acc,
        (global_sums[0] * scale).astype(acc),
        (global_sums[1] * scale).astype(acc),
        relu_out=relu_out,
    )
    return dx, sums[1].astype(gamma.dtype), sums[0].astype(gamma.dtype)


# ---------------------------------------------------------------- image warps (augmentation)


def affine_warp(x: ArrayLike, theta: ArrayLike, fill: float = 0.0, *, caller: str = "deepnet.affine_warp") -> Array:
    """Bilinear affine warp of a batch of images x (N, C, H, W), one 2x3 matrix per image.

    Output pixel (row, col) of image n samples x[n] at ``theta[n, :, :2] @ (row, col) +
    theta[n, :, 2]``, in pixel units with pixel centres at integers.  Neighbours outside
    the image count as ``fill``, interpolation included: for each image and channel this is
    scipy.ndimage.affine_transform(x[n, c], theta[n, :, :2], offset=theta[n, :, 2], order=1,
    mode="grid-constant", cval=fill).  A position that is NaN or infinite gives fill.
    theta is float or integer, used in float64; the result has x's dtype (float16 is
    interpolated in float32 and rounded once).
    """
    x = as_float_array(x, "x", caller, ndim=4)
    theta = _as_theta(theta, x.shape[0], caller)
    fill = _as_fill(fill, caller)
    return _backend(caller, x, theta).affine_warp(x, theta, fill)


def elastic_warp(
    x: ArrayLike,
    displacement: ArrayLike,
    fill: float = 0.0,
    *,
    theta: Optional[ArrayLike] = None,
    caller: str = "deepnet.elastic_warp",
) -> Array:
    """Bilinear remap of a batch of images x (N, C, H, W) by a displacement field (N, 2, H, W).

    Output pixel (row, col) of image n samples x[n] at (row + displacement[n, 0, row, col],
    col + displacement[n, 1, row, col]), neighbours outside the image counting as ``fill``:
    scipy.ndimage.map_coordinates(x[n, c], positions, order=1, mode="grid-constant",
    cval=fill).  With ``theta`` (N, 2, 3) the displaced position p is mapped on to
    theta[n, :, :2] @ p + theta[n, :, 2], i.e. an affine warp followed by the elastic one,
    with a single interpolation.  Positions that are NaN or infinite give fill.
    displacement is float32 or float64 (float16 is widened), used in float64.
    """
    x = as_float_array(x, "x", caller, ndim=4)
    N, _, H, W = x.shape
    xp = get_array_module(displacement)
    field_dtype = np.float32 if getattr(displacement, "dtype", None) == np.float16 else None
    displacement = as_float_array(displacement, "displacement", caller, ndim=4, dtype=field_dtype)
    if tuple(displacement.shape) != (N, 2, H, W):
        raise ValueError(
            f"{caller}: displacement must have shape {(N, 2, H, W)} (a (row, col) "
            f"offset per pixel of each image of x), got {tuple(displacement.shape)}"
        )
    if theta is None:
        identity = xp.zeros((N, 2, 3), dtype=np.float64)
        identity[:, 0, 0] = identity[:, 1, 1] = 1
        theta = identity
    else:
        theta = _as_theta(theta, N, caller)
    fill = _as_fill(fill, caller)
    return _backend(caller, x, displacement, theta).elastic_warp(x, displacement, theta, fill)


def _as_theta(theta: Any, n_images: int, caller: str) -> Array:
    """theta as a C-contiguous float64 (n_images, 2, 3) array (float or integer input)."""
    xp = get_array_module(theta)
    if not hasattr(theta, "dtype"):
        theta = np.asarray(theta)
    if theta.dtype.kind not in "fiu":
        raise TypeError(f"{caller}: theta must hold floats or integers, got dtype {theta.dtype}")
    if tuple(theta.shape) != (n_images, 2, 3):
        raise ValueError(
            f"{caller}: theta must have shape {(n_images, 2, 3)} (a 2x3 matrix per "
            f"image of x), got {tuple(theta.shape)}"
        )
    return xp.ascontiguousarray(theta, dtype=np.float64)


def _as_fill(fill: float, caller: str) -> float:
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"{caller}: fill must be a real number, got {fill!r}")
    if not np.isfinite(fill):
        raise ValueError(f"{caller}: fill must be finite, got {fill!r}")
    return float(fill)
