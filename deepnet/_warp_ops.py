"""Image warp ops (augmentation): bilinear affine and elastic warps of batches of images.

Part of deepnet.functional (which re-exports them): the arguments are checked here, then
the backend that deepnet.backends picks for the arrays computes.
"""

from __future__ import annotations
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from deepnet import backends
from deepnet._array import get_array_module
from deepnet._validation import Array, _as_fill, _as_theta, as_float_array

_backend = backends.for_arrays


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
