"""Batch normalisation's ops: per-channel statistics, the per-channel affine map, and the backward pass.

Part of deepnet.functional (which re-exports them): the arguments are checked here, then
the backend that deepnet.backends picks for the arrays computes.
"""

from __future__ import annotations
from typing import Callable, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from deepnet import backends
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype
from deepnet._validation import Array, _per_channel, as_float_array

_backend = backends.for_arrays


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
