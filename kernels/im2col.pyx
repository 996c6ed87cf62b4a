# im2col / col2im: unfold the sliding windows of a batch of images into columns, and back.
#
# The column array is addressed as cols[n, (c*kh + i)*kw + j, oy*OW + ox] through a strided
# memoryview, so one kernel writes both the book's layout, (N*OH*OW, C*kh*kw), and the
# per-image layout (N, C*kh*kw, OH*OW) that the convolution's GEMM reads without a transpose.

from cython.parallel cimport prange

include "dtypes.pxi"


# The output positions o whose input o*stride - pad + j lies inside [0, size) form the
# range [first_inside, stop_inside).  (Returned by value: inside prange, variables written
# through a pointer would not be made thread-private by Cython.)
cdef inline int first_inside(int j, int pad, int stride) noexcept nogil:
    cdef int lo = pad - j
    return 0 if lo <= 0 else (lo + stride - 1) // stride


cdef inline int stop_inside(int j, int pad, int stride, int size, int out_size) noexcept nogil:
    cdef int hi = size - 1 + pad - j
    cdef int stop = 0 if hi < 0 else min(out_size, hi // stride + 1)
    return max(stop, first_inside(j, pad, stride))


def im2col(const storage_t[:, :, :, ::1] x, storage_t[:, :, :] cols,
           int kh, int kw, int sh, int sw, int ph, int pw, int n_threads):
    """Fill cols (N, C*kh*kw, OH*OW), any strides, same element type as x."""
    _unfold(x, cols, kh, kw, sh, sw, ph, pw, n_threads)


def im2col_to_float(const half_t[:, :, :, ::1] x, float[:, :, :] cols,
                    int kh, int kw, int sh, int sw, int ph, int pw, int n_threads):
    """im2col of float16 images into float32 columns (the float16 convolution's GEMM tile)."""
    _unfold(x, cols, kh, kw, sh, sw, ph, pw, n_threads)


ctypedef fused column_t:
    half_t
    float
    double


cdef void _unfold(const storage_t[:, :, :, ::1] x, column_t[:, :, :] cols,
                  int kh, int kw, int sh, int sw, int ph, int pw, int n_threads) noexcept:
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OW = (W + 2 * pw - kw) // sw + 1
    cdef int OH = (H + 2 * ph - kh) // sh + 1
    cdef int rows = C * kh * kw
    cdef int task, n, row, c, i, j, oy, ox, iy, ox_first, ox_stop
    cdef column_t zero = 0
    # One task per output row (n, c, i, j): enough tasks for any thread count, also at N=1.
    for task in prange(N * rows, nogil=True, schedule="static", num_threads=n_threads):
        n = task // rows
        row = task % rows
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        ox_first = first_inside(j, pw, sw)
        ox_stop = stop_inside(j, pw, sw, W, OW)
        for oy in range(OH):
            iy = oy * sh - ph + i
            if iy < 0 or iy >= H:
                for ox in range(OW):
                    cols[n, row, oy * OW + ox] = zero
                continue
            for ox in range(ox_first):
                cols[n, row, oy * OW + ox] = zero
            for ox in range(ox_first, ox_stop):
                store(&cols[n, row, oy * OW + ox], load(x[n, c, iy, ox * sw - pw + j]))
            for ox in range(ox_stop, OW):
                cols[n, row, oy * OW + ox] = zero


def col2im(const storage_t[:, :, :] cols, compute_t[:, :, :, ::1] x,
           int kh, int kw, int sh, int sw, int ph, int pw, int n_threads):
    """Adjoint of im2col: x (N, C, H, W) = sum of the columns' entries over every window.

    x is the accumulator (float32 for float16 columns); the caller converts it back.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OW = (W + 2 * pw - kw) // sw + 1
    cdef int OH = (H + 2 * ph - kh) // sh + 1
    cdef int plane, n, c, i, j, row, oy, ox, iy, ix, ox_first, ox_stop
    # One task per image plane (n, c): each plane is summed by one thread, so no races.
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
        n = plane // C
        c = plane % C
        for iy in range(H):
            for ix in range(W):
                x[n, c, iy, ix] = 0
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                ox_first = first_inside(j, pw, sw)
                ox_stop = stop_inside(j, pw, sw, W, OW)
                for oy in range(OH):
                    iy = oy * sh - ph + i
                    if iy < 0 or iy >= H:
                        continue
                    for ox in range(ox_first, ox_stop):
                        ix = ox * sw - pw + j
                        x[n, c, iy, ix] = x[n, c, iy, ix] + <compute_t>load(cols[n, row, oy * OW + ox])
