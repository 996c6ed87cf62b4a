"""Dtype and shape arithmetic shared by every backend and layer, each rule written once.

The float dtypes arrays are stored in, the dtype arithmetic runs in, and how many
positions a window takes.  float16 is a storage format only: arithmetic on float16 arrays runs in
float32 (``compute_dtype``) and results are rounded back to float16 once, at the end.
This module imports nothing from deepnet.
"""

from __future__ import annotations
from typing import Any, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["FLOAT_DTYPES", "compute_dtype", "output_size", "output_hw"]

# The dtypes arrays may be stored in, narrowest first.
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def compute_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """The dtype arithmetic runs in for arrays stored as ``dtype``: float32 for float16,
    else ``dtype`` itself (also the dtype of optimizer state and weight averages)."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def output_hw(x_shape: Sequence[int], kh: int, kw: int, stride: Sequence[int], pad: Sequence[int]) -> Tuple[int, int]:
    """(OH, OW) of a kh x kw window sliding over images of shape (N, C, H, W)."""
    return (output_size(x_shape[2], kh, stride[0], pad[0]), output_size(x_shape[3], kw, stride[1], pad[1]))
