# Max-pooling forward (with the argmax backward needs) and backward.
#
# argmax[n, c, oy, ox] is the flat index iy*W + ix, into the unpadded (H, W) plane, of the
# element that won the window, so backward is a scatter that needs no pool geometry.
# Padding positions are skipped, so padding never wins; ties go to the first element in
# row-major window order and NaN wins (the first NaN), as with numpy's max/argmax.

from cython.parallel cimport prange
from libc.stdint cimport int32_t

include "dtypes.pxi"


def max_pool_forward(const storage_t[:, :, :, ::1] x, storage_t[:, :, :, ::1] out,
                     int32_t[:, :, :, ::1] argmax,
                     int pool_h, int pool_w, int sh, int sw, int ph, int pw, int n_threads):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int plane, n, c, oy, ox, iy, ix, y0, x0, winner
    cdef double best, value
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
        n = plane // C
        c = plane % C
        for oy in range(OH):
            y0 = oy * sh - ph
            for ox in range(OW):
                x0 = ox * sw - pw
                winner = -1
                best = 0
                for iy in range(max(y0, 0), min(y0 + pool_h, H)):
                    for ix in range(max(x0, 0), min(x0 + pool_w, W)):
                        value = load(x[n, c, iy, ix])
                        if winner < 0 or value > best or (value != value and best == best):
                            best = value
                            winner = iy * W + ix
                out[n, c, oy, ox] = x[n, c, winner // W, winner % W]
                argmax[n, c, oy, ox] = winner


def max_pool_backward(const storage_t[:, :, :, ::1] dout, const int32_t[:, :, :, ::1] argmax,
                      compute_t[:, :, :, ::1] dx, int n_threads):
    """dx (the accumulator: float32 for float16 dout) += dout at each window's argmax."""
    cdef int N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int OH = dout.shape[2], OW = dout.shape[3]
    cdef int plane, n, c, oy, ox, iy, ix, winner
    # One plane per task: overlapping windows of one plane add up in one thread, no races.
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
        n = plane // C
        c = plane % C
        for iy in range(H):
            for ix in range(W):
                dx[n, c, iy, ix] = 0
        for oy in range(OH):
            for ox in range(OW):
                winner = argmax[n, c, oy, ox]
                dx[n, c, winner // W, winner % W] = (
                    dx[n, c, winner // W, winner % W] + <compute_t>load(dout[n, c, oy, ox]))
