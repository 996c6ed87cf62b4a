# Max-pooling forward (with the argmax backward needs) and backward.
#
# argmax[n, c, oy, ox] is the flat index iy*W + ix, into the unpadded (H, W) plane, of the
# element that won the window, so backward is a scatter that needs no pool geometry.
# Padding positions are skipped, so padding never wins; ties go to the first element in
# row-major window order and NaN wins (the first NaN), as with numpy's max/argmax.

from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.stdint cimport int32_t

include "dtypes.pxi"


cdef inline bint wins(double value, double best) noexcept nogil:
    """value replaces best: larger, or the first NaN."""
    return value > best or (value != value and best == best)


cdef extern from "deepnet_pool.h" nogil:
    void dn_max_pool_2x2_float(const float* plane, float* out, int32_t* winners, int W, int OH, int OW)
    void dn_max_pool_2x2_double(const double* plane, double* out, int32_t* winners, int W, int OH, int OW)
    void dn_max_pool_2x2_half(const half_t* plane, half_t* out, int32_t* winners, int W, int OH, int OW)


def max_pool_forward(const storage_t[:, :, :, ::1] x, storage_t[:, :, :, ::1] out,
                     int32_t[:, :, :, ::1] argmax,
                     int pool_h, int pool_w, int sh, int sw, int ph, int pw, int n_threads):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int plane, oy, ox, iy, ix, y0, x0, y_stop, x_first, x_stop, winner
    cdef bint take
    cdef double best, value
    cdef const storage_t* source
    cdef storage_t* target
    cdef int32_t* winners
    # One task per (n, c) plane.
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
        source = &x[plane // C, plane % C, 0, 0]
        target = &out[plane // C, plane % C, 0, 0]
        winners = &argmax[plane // C, plane % C, 0, 0]
        if pool_h == 2 and pool_w == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            # DeepConvNet's pooling: a vectorised kernel (src/deepnet_pool.h)
            if storage_t is float:
                dn_max_pool_2x2_float(source, target, winners, W, OH, OW)
                continue
            elif storage_t is double:
                dn_max_pool_2x2_double(source, target, winners, W, OH, OW)
                continue
            else:
                dn_max_pool_2x2_half(source, target, winners, W, OH, OW)
                continue
        for oy in range(OH):
            y0 = oy * sh - ph
            y_stop = min(y0 + pool_h, H)
            y0 = max(y0, 0)
            for ox in range(OW):
                x0 = ox * sw - pw
                x_stop = min(x0 + pool_w, W)
                x_first = max(x0, 0)
                winner = y0 * W + x_first  # the window's first real pixel
                best = load(source[winner])
                for iy in range(y0, y_stop):
                    for ix in range(x_first, x_stop):
                        # Branch-free selects: on real data the winner is unpredictable.
                        value = load(source[iy * W + ix])
                        take = wins(value, best)
                        best = value if take else best
                        winner = (iy * W + ix) if take else winner
                target[oy * OW + ox] = source[winner]
                winners[oy * OW + ox] = winner


def max_pool_backward(const storage_t[:, :, :, ::1] dout, const int32_t[:, :, :, ::1] argmax,
                      storage_t[:, :, :, ::1] dx, int n_threads):
    """dx = dout summed at each window's argmax (in compute precision, rounded once)."""
    cdef int N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int OH = dout.shape[2], OW = dout.shape[3]
    cdef int plane, q, failed = 0
    cdef const storage_t* grad
    cdef const int32_t* winners
    cdef storage_t* target
    cdef double* plane_sum
    # One plane per task: overlapping windows of one plane add up in one thread, no races.
    with nogil, parallel(num_threads=n_threads):
        plane_sum = <double*>malloc(sizeof(double) * H * W)
        for plane in prange(N * C, schedule="static"):
            if plane_sum == NULL:
                failed += 1
                continue
            grad = &dout[plane // C, plane % C, 0, 0]
            winners = &argmax[plane // C, plane % C, 0, 0]
            target = &dx[plane // C, plane % C, 0, 0]
            for q in range(H * W):
                plane_sum[q] = 0
            for q in range(OH * OW):
                plane_sum[winners[q]] += load(grad[q])
            for q in range(H * W):
                store(&target[q], plane_sum[q])
        free(plane_sum)
    if failed:
        raise MemoryError("deepnet max_pool_backward: out of memory for the per-thread buffers")
