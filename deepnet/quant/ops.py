"""The int8 operations as the int8 model calls them: checked arguments, run by the compiled kernel or the NumPy reference.

``deepnet._kernels.int8`` (the compiled module) is used when it is built, else
deepnet.quant.reference; both give the same bits.  ``available()`` names the backends this
installation has and ``using(name)`` runs a block on one of them (tests compare them).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from . import reference
from .._config import get_num_threads

__all__ = [
    "available",
    "using",
    "current",
    "pack_filters",
    "conv_int8",
    "quantize_uint8",
    "dequantize_uint8",
    "plan",
]

_forced: Optional[str] = None
_kernel: Any = None
_kernel_looked = False


def _compiled() -> Any:
    """The compiled module deepnet._kernels.int8, or None where it is not built."""
    global _kernel, _kernel_looked
    if not _kernel_looked:
        try:
            _kernel = importlib.import_module("deepnet._kernels.int8")
        except ImportError:
            _kernel = None
        _kernel_looked = True
    return _kernel


def available() -> List[str]:
    """The backends this installation has: "reference" always, "kernel" where the compiled module is built."""
    return ["reference"] + (["kernel"] if _compiled() is not None else [])


def current() -> str:
    """The backend the operations run on now: "kernel" where built (unless ``using`` says otherwise)."""
    if _forced is not None:
        return _forced
    return "kernel" if _compiled() is not None else "reference"


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Run the block's int8 operations on backend ``name`` ("reference" or "kernel")."""
    global _forced
    if name not in available():
        raise ValueError(f"int8 backend {name!r} is not available here; available: {available()}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def _module() -> Any:
    return _compiled() if current() == "kernel" else reference


def pack_filters(w_q: np.ndarray[Any, Any]) -> Any:
    """The int8 filters (FN, C, KH, KW) in the layout the backend's conv_int8 takes."""
    if not isinstance(w_q, np.ndarray) or w_q.dtype != np.int8 or w_q.ndim != 4:
        raise ValueError(f"pack_filters: expected int8 filters (FN, C, KH, KW), got {_describe(w_q)}")
    if int(np.prod(w_q.shape[1:])) > reference.MAX_K:
        raise ValueError(
            f"pack_filters: C*KH*KW = {int(np.prod(w_q.shape[1:]))} is more than {reference.MAX_K} "
            "(the int32 accumulators could overflow)"
        )
    return _module().pack_filters(np.ascontiguousarray(w_q))


def output_shape(
    x_shape: Tuple[int, ...], kernel: Tuple[int, int], stride: Tuple[int, int], pad: Tuple[int, int], pool: bool
) -> Tuple[int, int]:
    """(OH, OW) of conv_int8's output (after the 2x2 pooling with ``pool``)."""
    oh = (x_shape[2] + 2 * pad[0] - kernel[0]) // stride[0] + 1
    ow = (x_shape[3] + 2 * pad[1] - kernel[1]) // stride[1] + 1
    return (oh // 2, ow // 2) if pool else (oh, ow)


def conv_int8(
    x: np.ndarray[Any, Any],
    x_zero: int,
    filters: Any,
    w_shape: Tuple[int, int, int, int],
    stride: Tuple[int, int],
    pad: Tuple[int, int],
    bias_q: np.ndarray[Any, Any],
    scale: np.ndarray[Any, Any],
    out_zero: int,
    relu: bool,
    pool: bool,
    out_dtype: Any,
) -> np.ndarray[Any, Any]:
    """The int8 convolution of uint8 ``x`` (N, C, H, W) with its fused epilogue: a new uint8
    (requantized, ``pool``: 2x2 max-pooled) or float32 (``scale`` times the accumulators) array."""
    FN, C, KH, KW = w_shape
    out_dtype = np.dtype(out_dtype)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv_int8: expected uint8 images (N, {C}, H, W), got {_describe(x)}")
    if out_dtype not in (np.dtype(np.uint8), np.dtype(np.float32)) or (pool and out_dtype != np.uint8):
        raise ValueError(f"conv_int8: the output is uint8 (pooled or not) or float32 (not pooled), got {out_dtype}")
    if not (0 <= x_zero <= 255 and 0 <= out_zero <= 255):
        raise ValueError(f"conv_int8: zero points must be in 0..255, got {x_zero} and {out_zero}")
    if bias_q.dtype != np.int32 or bias_q.shape != (FN,) or scale.dtype != np.float32 or scale.shape != (FN,):
        raise ValueError(
            f"conv_int8: expected int32 bias_q and float32 scale of shape ({FN},), "
            f"got {_describe(bias_q)} and {_describe(scale)}"
        )
    oh, ow = output_shape(x.shape, (KH, KW), stride, pad, pool)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_int8: a {KH}x{KW} window gives no output for images of shape {x.shape}")
    out = np.empty((x.shape[0], FN, oh, ow), out_dtype)
    # The compiled kernel takes its thread count (deepnet.set_num_threads, else OMP_NUM_THREADS).
    threads = {"n_threads": get_num_threads()} if current() == "kernel" else {}
    return _module().conv_int8(  # type: ignore[no-any-return]
        np.ascontiguousarray(x),
        int(x_zero),
        filters,
        (int(stride[0]), int(stride[1])),
        (int(pad[0]), int(pad[1])),
        np.ascontiguousarray(bias_q),
        np.ascontiguousarray(scale),
        int(out_zero),
        bool(relu),
        bool(pool),
        out,
        **threads,
    )


def quantize_uint8(x: np.ndarray[Any, Any], scale: float, zero: int) -> np.ndarray[Any, Any]:
    """uint8 values of float ``x`` for the scale and zero point (rounded half to even, clamped); NaN refused."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    if np.isnan(x32).any():
        raise ValueError("quantize_uint8: the input holds NaN; expected finite values")
    out = np.empty(x32.shape, np.uint8)
    return _module().quantize_uint8(x32, np.float32(1 / scale), int(zero), out)  # type: ignore[no-any-return]


def dequantize_uint8(q: np.ndarray[Any, Any], scale: float, zero: int) -> np.ndarray[Any, Any]:
    """float32 values of uint8 ``q``: (q - zero) * scale."""
    if q.dtype != np.uint8:
        raise ValueError(f"dequantize_uint8: expected uint8 values, got {_describe(q)}")
    return _module().dequantize_uint8(  # type: ignore[no-any-return]
        np.ascontiguousarray(q), np.float32(scale), int(zero)
    )


def plan(x_scale: float, x_zero: int, specs: List[Tuple[Any, ...]], in_shape: Tuple[int, ...]) -> Optional[Any]:
    """The compiled kernel's Int8Plan of a quantization and the convolutions ``specs`` (Int8Plan's
    steps) on inputs of ``in_shape`` (C, H, W), or None on the reference backend."""
    if current() != "kernel":
        return None
    return _compiled().Int8Plan(x_scale, x_zero, specs, in_shape)


def _describe(a: Any) -> str:
    return f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
