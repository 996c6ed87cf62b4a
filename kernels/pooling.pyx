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
include "checks.pxi"
include "pool2x2.pxi"


cdef inline bint wins(double value, double best) noexcept nogil:
    """value replaces best: larger, or the first NaN."""
    return value > best or (value != value and best == best)


def max_pool_forward(const storage_t[:, :, :, ::1] x, storage_t[:, :, :, ::1] out,
                     int32_t[:, :, :, ::1] argmax,
                     int pool_h, int pool_w, int sh, int sw, int ph, int pw, int n_threads):
    cdef int OH, OW
    OH, OW = window_output("max_pool_forward", x.shape[2], x.shape[3], pool_h, pool_w, sh, sw, ph, pw)
    if ph >= pool_h or pw >= pool_w or (x.shape[0] * x.shape[1] and (x.shape[2] == 0 or x.shape[3] == 0)):
        raise ValueError(f"deepnet max_pool_forward: every window needs a pixel: pad ({ph}, {pw}) must be "
                         f"smaller than the window ({pool_h}, {pool_w}), and the planes not empty")
    check_shape("max_pool_forward", "out", dims(out.shape, 4), dims(x.shape, 2) + (OH, OW))
    check_shape("max_pool_forward", "argmax", dims(argmax.shape, 4), dims(out.shape, 4))
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef bint two_by_two = pool_h == 2 and pool_w == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
    cdef Py_ssize_t plane
    cdef int oy, ox, iy, ix, y0, x0, y_stop, x_first, x_stop, winner, q, failed = 0
    cdef bint take
    cdef double best, value
    cdef const storage_t* source
    cdef storage_t* target
    cdef int32_t* winners
    # float16 2x2: each plane widened to float (F16C) and pooled by the float kernel, which
    # vectorises, and the maxima rounded back; comparing the halves as integers did not
    # vectorise and took 2.2-2.4x float32's time (now 1.1-1.4x).  Both conversions are
    # exact, so the winners and values are the halves' own (a signalling NaN comes back
    # quiet); copying the outputs from the winners instead had cost half of the gain.
    cdef float* widened
    with nogil, parallel(num_threads=n_threads):
        widened = NULL
        if storage_t is half_t:
            if two_by_two:
                widened = <float*>malloc(sizeof(float) * max(<size_t>H * W + <size_t>OH * OW, 1))
        # One task per (n, c) plane.
        for plane in prange(x.shape[0] * C, schedule="static"):
            source = &x[plane // C, plane % C, 0, 0]
            target = &out[plane // C, plane % C, 0, 0]
            winners = &argmax[plane // C, plane % C, 0, 0]
            if two_by_two:   # DeepConvNet's pooling, vectorised
                if storage_t is half_t:
                    if widened == NULL:
                        failed += 1
                        continue
                    dn_halves_to_floats(source, widened, <size_t>H * W)
                    dn_max_pool_2x2_float(widened, widened + <size_t>H * W, winners, W, OH, OW)
                    dn_floats_to_halves(widened + <size_t>H * W, target, <size_t>OH * OW)
                else:
                    max_pool_2x2(source, target, winners, W, OH, OW)
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
        free(widened)
    if failed:
        raise MemoryError("deepnet max_pool_forward: out of memory for the per-thread buffers")


cdef inline void scatter_plane(const storage_t* grad, const int32_t* winners, int count,
                               compute_t* plane_sum, int plane_size, storage_t* target) noexcept nogil:
    """target = grad summed at the winners (in compute_t, in window order, rounded once)."""
    cdef int q
    for q in range(plane_size):
        plane_sum[q] = 0
    for q in range(count):
        plane_sum[winners[q]] += <compute_t>load(grad[q])
    for q in range(plane_size):
        store(&target[q], plane_sum[q])


def max_pool_backward(const storage_t[:, :, :, ::1] dout, const int32_t[:, :, :, ::1] argmax,
                      storage_t[:, :, :, ::1] dx, int n_threads):
    """dx = dout summed at each window's argmax, in compute precision (float32 for float16 and
    float32, as the reference sums), rounded once."""
    check_shape("max_pool_backward", "argmax", dims(argmax.shape, 4), dims(dout.shape, 4))
    check_shape("max_pool_backward", "dout's images and channels", dims(dout.shape, 2), dims(dx.shape, 2))
    fits_int("max_pool_backward", "input plane", <object>dx.shape[2] * dx.shape[3])
    fits_int("max_pool_backward", "output plane", <object>dout.shape[2] * dout.shape[3])
    cdef int C = dx.shape[1], plane_size = dx.shape[2] * dx.shape[3], count = dout.shape[2] * dout.shape[3]
    cdef Py_ssize_t plane
    cdef int q, failed = 0, outside = 0
    cdef const int32_t* winners
    cdef void* plane_sum
    # One plane per task: overlapping windows of one plane add up in one thread, no races.
    with nogil, parallel(num_threads=n_threads):
        plane_sum = malloc(sizeof(double) * max(plane_size, 1))
        for plane in prange(dx.shape[0] * C, schedule="static"):
            if plane_sum == NULL:
                failed += 1
                continue
            winners = &argmax[plane // C, plane % C, 0, 0]
            for q in range(count):  # a direct call may pass any argmax: never scatter outside
                if winners[q] < 0 or winners[q] >= plane_size:
                    outside += 1
                    break
            else:
                if storage_t is double:
                    scatter_plane(&dout[plane // C, plane % C, 0, 0], winners, count, <double*>plane_sum,
                                  plane_size, &dx[plane // C, plane % C, 0, 0])
                else:
                    scatter_plane(&dout[plane // C, plane % C, 0, 0], winners, count, <float*>plane_sum,
                                  plane_size, &dx[plane // C, plane % C, 0, 0])
        free(plane_sum)
    if failed:
        raise MemoryError("deepnet max_pool_backward: out of memory for the per-thread buffers")
    if outside:
        raise ValueError(f"deepnet max_pool_backward: argmax entries must lie in [0, {plane_size})")
