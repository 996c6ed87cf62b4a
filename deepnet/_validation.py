"""Argument checks of deepnet.functional's ops: float arrays, int pairs, window and convolution geometries.

Each check raises a TypeError or ValueError that names the caller, what was expected and
what came, and returns the argument normalised as the backends take it (C-contiguous
float arrays, (vertical, horizontal) pairs of ints).  Checks of shapes alone are cached.
"""

from __future__ import annotations
import functools
import numbers
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from deepnet._array import get_array_module
from deepnet._dtypes import FLOAT_DTYPES, output_hw

# An array of any dtype on the arrays' device (a CuPy array where the inputs are CuPy's).
Array = NDArray[Any]
# Stride and pad: an int or a (vertical, horizontal) pair.
IntPair = Union[int, Tuple[int, int]]


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


def _conv_bias(b: Optional[ArrayLike], W: Array, caller: str) -> Array:
    """b as conv2d takes it: (FN,) in W's dtype; None gives zeros."""
    if b is None:
        b = get_array_module(W).zeros(W.shape[0], dtype=W.dtype)
    b = as_float_array(b, "b", caller, dtype=W.dtype).reshape(-1)
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"{caller}: b must have {W.shape[0]} entries (one per filter), got {b.shape[0]}")
    return b


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


def _per_channel(a: Any, channels: int, name: str, caller: str, dtype: DTypeLike) -> Array:
    a = get_array_module(a).ascontiguousarray(a, dtype=dtype).reshape(-1)
    if a.shape[0] != channels:
        raise ValueError(f"{caller}: {name} must have {channels} entries (one per channel), got {a.shape[0]}")
    return a


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
