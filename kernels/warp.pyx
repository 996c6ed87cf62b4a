# Bilinear image warps for data augmentation: affine (one 2x3 matrix per image) and elastic
# (a per-pixel displacement, then a 2x3 matrix).
#
# Output pixel (r, c) of image n samples the input at the position
#     theta[n] @ (r + d[n, 0, r, c], c + d[n, 1, r, c], 1)        (d = 0 for affine_warp)
# in pixel units with pixel centres at integers, like scipy.ndimage.affine_transform and
# map_coordinates with order=1, mode="grid-constant": the four neighbours are interpolated,
# those outside the image count as `fill`.  A position outside (-1, H) x (-1, W), or NaN,
# touches no pixel and gives `fill`; the range test comes before any float -> int
# conversion, so huge or non-finite positions can neither overflow nor read out of bounds.
#
# Positions are computed in double for every dtype (a float32 position of pixel 100 is
# off by up to 4e-6 pixels, already more than the float32 tolerance); the interpolation
# runs in compute_t.  float16 planes are widened into a per-thread float32 buffer, warped
# by the float32 code and rounded once, so float16 results are exactly the float32
# kernel's results rounded to half.  Every output pixel is computed on its own by one
# thread: results do not depend on the thread count.

from cython.parallel cimport parallel, prange
from libc.math cimport floor
from libc.stdlib cimport free, malloc

include "dtypes.pxi"


ctypedef fused field_t:  # the displacement's dtype, independent of the images'
    float
    double


cdef inline compute_t bilinear(const compute_t* plane, Py_ssize_t H, Py_ssize_t W,
                               double height, double width,
                               double y, double x, compute_t fill) noexcept nogil:
    """plane (H x W, also passed as doubles) sampled at (y, x); neighbours outside the plane
    count as fill."""
    if not (y > -1.0 and y < height and x > -1.0 and x < width):  # also catches NaN
        return fill
    cdef double row = floor(y), column = floor(x)  # in [-1, H - 1] and [-1, W - 1]
    cdef compute_t ty = <compute_t>(y - row), tx = <compute_t>(x - column)
    cdef Py_ssize_t iy = <Py_ssize_t>row, ix = <Py_ssize_t>column
    cdef const compute_t* p = plane + iy * W + ix
    cdef compute_t v00, v01, v10, v11, top, bottom
    if iy >= 0 and iy + 1 < H and ix >= 0 and ix + 1 < W:  # the common case: all inside
        v00, v01, v10, v11 = p[0], p[1], p[W], p[W + 1]
    else:
        v00 = p[0] if iy >= 0 and ix >= 0 else fill
        v01 = p[1] if iy >= 0 and ix + 1 < W else fill
        v10 = p[W] if iy + 1 < H and ix >= 0 else fill
        v11 = p[W + 1] if iy + 1 < H and ix + 1 < W else fill
    top = v00 + tx * (v01 - v00)
    bottom = v10 + tx * (v11 - v10)
    return top + ty * (bottom - top)


cdef void warp_plane(const compute_t* source, compute_t* target, Py_ssize_t H, Py_ssize_t W,
                     const double* theta, const field_t* displacement, compute_t fill) noexcept nogil:
    """One (H, W) plane; displacement is NULL (affine) or the image's (2, H, W) field."""
    cdef Py_ssize_t r, c, q
    cdef double u, v, y_row, x_row
    cdef double height = H, width = W
    for r in range(H):
        if displacement == NULL:  # positions move along the row by theta's second column
            y_row = theta[0] * r + theta[2]
            x_row = theta[3] * r + theta[5]
            for c in range(W):
                target[r * W + c] = bilinear(source, H, W, height, width, y_row + theta[1] * c,
                                             x_row + theta[4] * c, fill)
            continue
        for c in range(W):
            q = r * W + c
            u = <double>r + displacement[q]  # in double: a float32 sum would round the position
            v = <double>c + displacement[H * W + q]
            target[q] = bilinear(source, H, W, height, width, theta[0] * u + theta[1] * v + theta[2],
                                 theta[3] * u + theta[4] * v + theta[5], fill)


cdef int warp(const storage_t[:, :, :, ::1] x, const double[:, :, ::1] theta,
              const field_t* displacement, double fill, storage_t[:, :, :, ::1] out,
              int n_threads) except -1:
    """Warp every (n, c) plane of x into out (x not empty); displacement: NULL or the
    first element of an (N, 2, H, W) field."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t plane, n, c
    cdef int failed = 0
    cdef const field_t* field = NULL
    cdef float* widened = NULL  # float16 only: the plane in float32, then its result
    # One task per (n, c) plane.
    with nogil, parallel(num_threads=n_threads):
        if storage_t is half_t:
            widened = <float*>malloc(sizeof(float) * 2 * H * W)
        for plane in prange(N * C, schedule="static"):
            n = plane // C
            c = plane % C
            field = (displacement + n * 2 * H * W) if displacement != NULL else NULL
            if storage_t is half_t:
                if widened == NULL:
                    failed += 1
                    continue
                dn_halves_to_floats(&x[n, c, 0, 0], widened, H * W)
                warp_plane(<const float*>widened, widened + H * W, H, W, &theta[n, 0, 0], field, <float>fill)
                dn_floats_to_halves(widened + H * W, &out[n, c, 0, 0], H * W)
            elif storage_t is float:
                warp_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], H, W, &theta[n, 0, 0], field, <float>fill)
            else:
                warp_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], H, W, &theta[n, 0, 0], field, fill)
        if storage_t is half_t:
            free(widened)
    if failed:
        raise MemoryError("deepnet warp: out of memory for the per-thread float32 planes")
    return 0


def affine_warp(const storage_t[:, :, :, ::1] x, const double[:, :, ::1] theta, double fill,
                storage_t[:, :, :, ::1] out, int n_threads):
    """out[n, c] = x[n, c] sampled at theta[n] @ (r, c, 1)."""
    if x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3]:
        warp(x, theta, <const double*>NULL, fill, out, n_threads)


def elastic_warp(const storage_t[:, :, :, ::1] x, const field_t[:, :, :, ::1] displacement,
                 const double[:, :, ::1] theta, double fill, storage_t[:, :, :, ::1] out, int n_threads):
    """out[n, c] = x[n, c] sampled at theta[n] @ (r + d[n, 0], c + d[n, 1], 1)."""
    if x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3]:
        warp(x, theta, &displacement[0, 0, 0, 0], fill, out, n_threads)
