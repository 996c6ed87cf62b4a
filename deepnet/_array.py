"""Which array module (NumPy or CuPy) holds an array, and moving arrays between host and GPU.

Its one job: the NumPy/CuPy plumbing that layers, optimizers, nets, the trainer and the
backends all need, without importing the CUDA backend.  Importing this module never
imports CuPy; CuPy is imported on first use, so it works on machines without CuPy.
This module imports nothing from deepnet.
"""

from __future__ import annotations
import functools
from typing import Any, Optional

import numpy as np

__all__ = ["cupy_or_none", "require_cupy", "is_cupy_array", "get_array_module", "to_gpu", "to_cpu"]


@functools.lru_cache(maxsize=None)
def cupy_or_none() -> Any:
    """Return the ``cupy`` module, or None if it is missing or fails to import."""
    try:
        import cupy
    except Exception:  # ImportError, but also broken CUDA libraries and the like
        return None
    return cupy


def require_cupy() -> Any:
    """Return the ``cupy`` module; RuntimeError (saying how to install it) if it is unusable."""
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError(
            "the CUDA backend needs CuPy, which is not installed or failed to import "
            "(install deepnet[cuda], or a cupy-cudaXXx wheel matching your CUDA)"
        )
    return cp


def is_cupy_array(a: object) -> bool:
    """True for CuPy arrays; never imports CuPy."""
    kind = type(a)
    return kind is not np.ndarray and kind.__module__.startswith("cupy")


def get_array_module(*arrays: object, name: Optional[str] = None) -> Any:
    """Return ``numpy`` or ``cupy`` for the given arrays (non-arrays are ignored).

    Raises TypeError when NumPy and CuPy arrays are mixed; ``name`` (the calling
    function's name) is put in the message.
    """
    # The common case, NumPy arrays only, answered by one plain loop (batch-1 latency).
    for a in arrays:
        if type(a) is not np.ndarray and is_cupy_array(a):
            break
    else:
        return np
    on_gpu = [i for i, a in enumerate(arrays) if is_cupy_array(a)]
    on_cpu = [i for i, a in enumerate(arrays) if isinstance(a, np.ndarray)]
    if on_cpu:
        where = name or "deepnet"
        raise TypeError(
            f"{where}: cannot mix NumPy and CuPy arrays (NumPy arrays at argument "
            f"positions {on_cpu}, CuPy arrays at {on_gpu}); move them all to one "
            f"device first with deepnet._array.to_gpu() or to_cpu()"
        )
    return require_cupy()


def to_gpu(a: Any) -> Any:
    """Copy ``a`` to the current GPU (no copy if it is already a CuPy array)."""
    return require_cupy().asarray(a)


def to_cpu(a: Any) -> np.ndarray[Any, Any]:
    """Return ``a`` as a NumPy array (copied from the GPU if it is a CuPy array)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)
