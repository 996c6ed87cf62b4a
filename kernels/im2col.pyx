# im2col / col2im: unfold the sliding windows of a batch of images into columns, and back.
#
# The column array is addressed as cols[n, (c*kh + i)*kw + j, oy*OW + ox] through a strided
# memoryview, so one kernel writes both the book's layout, (N*OH*OW, C*kh*kw), and the
# per-image layout (N, C*kh*kw, OH*OW).

from cython.parallel cimport prange

include "dtypes.pxi"
include "checks.pxi"

ctypedef fused column_t:
    half_t
    float
    double

include "window.pxi"


cdef (int, int) checked_output(str kernel, tuple x_shape, tuple cols_shape,
                               int kh, int kw, int sh, int sw, int ph, int pw) except *:
    """(OH, OW), after checking that cols is (N, C*kh*kw, OH*OW) for images of x_shape."""
    N, C, H, W = x_shape
    OH, OW = window_output(kernel, H, W, kh, kw, sh, sw, ph, pw)
    fits_int(kernel, "number of window positions", C * kh * kw)
    check_shape(kernel, "cols", cols_shape, (N, C * kh * kw, OH * OW))
    return OH, OW


def im2col(const storage_t[:, :, :, ::1] x, column_t[:, :, :] cols,
           int kh, int kw, int sh, int sw, int ph, int pw, int n_threads):
    """Fill cols (N, C*kh*kw, OH*OW), any strides.  Element types: the same as x, or
    float32 columns for float16 images."""
    cdef int OH, OW
    OH, OW = checked_output("im2col", dims(x.shape, 4), dims(cols.shape, 3),
                            kh, kw, sh, sw, ph, pw)
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int rows = C * kh * kw
    cdef Py_ssize_t step = cols.strides[2] // sizeof(column_t)
    cdef Py_ssize_t task, n
    cdef int row
    # One task per (image, window offset): enough tasks for any thread count, also at N=1.
    for task in prange(x.shape[0] * rows, nogil=True, schedule="static", num_threads=n_threads):
        n = task // rows
        row = task % rows
        unfold_row(&x[n, row // (kh * kw), 0, 0], &cols[n, row, 0], step,
                   (row // kw) % kh, row % kw, H, W, OH, OW, sh, sw, ph, pw)


def col2im(const column_t[:, :, :] cols, compute_t[:, :, :, ::1] x,
           int kh, int kw, int sh, int sw, int ph, int pw, int n_threads):
    """Adjoint of im2col: x (N, C, H, W) = the columns' entries summed back over every window.

    x is the accumulator (float32 for float16 columns); the caller converts it back.
    """
    cdef int OH, OW
    OH, OW = checked_output("col2im", dims(x.shape, 4), dims(cols.shape, 3),
                            kh, kw, sh, sw, ph, pw)
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t step = cols.strides[2] // sizeof(column_t)
    cdef Py_ssize_t plane, n
    cdef int c, i, j, iy, ix
    # One task per image plane (n, c): a plane is summed by one thread, so no races.
    for plane in prange(x.shape[0] * C, nogil=True, schedule="static", num_threads=n_threads):
        n = plane // C
        c = plane % C
        for iy in range(H):
            for ix in range(W):
                x[n, c, iy, ix] = 0
        for i in range(kh):
            for j in range(kw):
                fold_row(&cols[n, (c * kh + i) * kw + j, 0], step, &x[n, c, 0, 0],
                         i, j, H, W, OH, OW, sh, sw, ph, pw)
