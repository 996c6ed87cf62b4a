"""Dtype and shape arithmetic shared by every backend and layer, each rule written once.

The float dtypes arrays are stored in, the dtype arithmetic runs in, and how many
positions a window takes.  float16 and bfloat16 are storage formats only: arithmetic on
their arrays runs in float32 (``compute_dtype``) and results are rounded back once, at the
end.  NumPy has no bfloat16: it is the ``ml_dtypes`` package's (the optional extra
``deepnet-ch8[bf16]``).
This module imports nothing from deepnet.
"""

from __future__ import annotations
import sys
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "BF16_INSTALL_HINT",
    "FLOAT_DTYPES",
    "compute_dtype",
    "is_bfloat16",
    "require_bfloat16",
    "output_size",
    "output_hw",
]

BF16_INSTALL_HINT = (
    "bfloat16 needs the ml_dtypes package (NumPy has no bfloat16): pip install 'deepnet-ch8[bf16]' "
    "(or pip install 'ml_dtypes>=0.4')"
)


def _bfloat16() -> Optional[np.dtype[Any]]:
    """bfloat16 where ml_dtypes has been imported, else None: importing it takes about a
    second, so deepnet never does unasked, and without it no bfloat16 array can exist."""
    module = sys.modules.get("ml_dtypes")
    return None if module is None else np.dtype(module.bfloat16)


def is_bfloat16(dtype: Any) -> bool:
    """Whether ``dtype`` (a dtype, a name, or anything with a dtype) is bfloat16."""
    if isinstance(dtype, str):
        return dtype == "bfloat16"
    bf16 = _bfloat16()
    dtype = getattr(dtype, "dtype", dtype)
    return bf16 is not None and dtype is not None and dtype == bf16


class _FloatDtypes(Tuple[np.dtype[Any], ...]):
    """float16, float32 and float64, and (in ``in`` tests) bfloat16 once ml_dtypes is imported."""

    def __contains__(self, dtype: object) -> bool:
        return tuple.__contains__(self, dtype) or is_bfloat16(dtype)


# The dtypes arrays may be stored in, narrowest first; bfloat16 is in it (for ``in``) once
# ml_dtypes is imported.
FLOAT_DTYPES = _FloatDtypes((np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)))


def require_bfloat16() -> np.dtype[Any]:
    """The bfloat16 dtype (importing ml_dtypes); ImportError naming the extra to install
    where ml_dtypes is missing."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(BF16_INSTALL_HINT) from None
    return np.dtype(ml_dtypes.bfloat16)


def compute_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """The dtype arithmetic runs in for arrays stored as ``dtype``: float32 for float16 and
    bfloat16, else ``dtype`` itself (also the dtype of optimizer state and weight averages)."""
    return np.dtype(np.float32) if dtype == np.float16 or is_bfloat16(dtype) else np.dtype(dtype)


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def output_hw(x_shape: Sequence[int], kh: int, kw: int, stride: Sequence[int], pad: Sequence[int]) -> Tuple[int, int]:
    """(OH, OW) of a kh x kw window sliding over images of shape (N, C, H, W)."""
    return (output_size(x_shape[2], kh, stride[0], pad[0]), output_size(x_shape[3], kw, stride[1], pad[1]))
