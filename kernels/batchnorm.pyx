# Batch normalisation of x (N, C, M) per channel c: its statistics, the per-channel affine
# map y = (x - shift[c]) * scale[c] + offset[c] (with an optional fused ReLU), and the backward pass.
#
# Each channel's sums are taken by one thread, always in the same order, so the results do
# not depend on the thread count.  Sums are accumulated in double, in four interleaved
# partial sums (independent chains the compiler can keep in one vector register); the
# element-wise passes compute in compute_t (float32 for float16 storage).

from cython.parallel cimport prange

include "dtypes.pxi"


cdef inline double weight_at(const storage_t* weight, const storage_t* mask, bint masked,
                             Py_ssize_t m) noexcept nogil:
    """weight[m], times (mask[m] > 0) if masked: a product, so NaN stays NaN."""
    if masked:
        return load(weight[m]) * is_positive(mask[m])
    return load(weight[m])


cdef inline void channel_sums(const storage_t* x, Py_ssize_t N, Py_ssize_t stride, Py_ssize_t M,
                              double shift, const storage_t* weight, bint weighted,
                              const storage_t* mask, bint masked,
                              double* first, double* second) noexcept nogil:
    """Over the N rows x[n*stride : n*stride + M]: sum(d) and sum(d * d) with d = x - shift;
    weighted: sum(w) and sum(w * d) with w the weights (dout, masked by mask > 0 if
    masked) instead."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef double d0, d1, d2, d3, w0, w1, w2, w3
    cdef Py_ssize_t n, m
    cdef const storage_t* row
    cdef const storage_t* wrow
    cdef const storage_t* mrow
    for n in range(N):
        row = x + n * stride
        wrow = weight + n * stride
        mrow = mask + n * stride
        m = 0
        while m + 4 <= M:
            d0 = load(row[m]) - shift
            d1 = load(row[m + 1]) - shift
            d2 = load(row[m + 2]) - shift
            d3 = load(row[m + 3]) - shift
            if weighted:
                w0 = weight_at(wrow, mrow, masked, m)
                w1 = weight_at(wrow, mrow, masked, m + 1)
                w2 = weight_at(wrow, mrow, masked, m + 2)
                w3 = weight_at(wrow, mrow, masked, m + 3)
            else:
                w0, w1, w2, w3 = d0, d1, d2, d3
            a0 += w0
            a1 += w1
            a2 += w2
            a3 += w3
            b0 += w0 * d0
            b1 += w1 * d1
            b2 += w2 * d2
            b3 += w3 * d3
            m += 4
        while m < M:
            d0 = load(row[m]) - shift
            w0 = weight_at(wrow, mrow, masked, m) if weighted else d0
            a0 += w0
            b0 += w0 * d0
            m += 1
    first[0] = (a0 + a1) + (a2 + a3)
    second[0] = (b0 + b1) + (b2 + b3)


def batch_norm_sums(const storage_t[:, :, ::1] x, const compute_t[::1] shift, double[:, ::1] sums,
                    int n_threads):
    """sums[0, c] = sum(x - shift[c]), sums[1, c] = sum((x - shift[c])^2) over n and m."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], M = x.shape[2]
    cdef Py_ssize_t c
    if shift.shape[0] != C or sums.shape[0] != 2 or sums.shape[1] != C:
        raise ValueError("deepnet batch_norm_sums: shift must have C entries and sums shape (2, C)")
    if N == 0 or M == 0:
        sums[:, :] = 0
        return
    for c in prange(C, nogil=True, schedule="static", num_threads=n_threads):
        channel_sums(&x[0, c, 0], N, C * M, M, shift[c], &x[0, c, 0], False, &x[0, c, 0], False,
                     &sums[0, c], &sums[1, c])


def batch_norm_backward_sums(const storage_t[:, :, ::1] dout, const storage_t[:, :, ::1] x,
                             const storage_t[:, :, ::1] relu_out, bint relu,
                             const compute_t[::1] mean, const compute_t[::1] inv_std,
                             double[:, ::1] sums, int n_threads):
    """sums[0, c] = sum(g), sums[1, c] = sum(g * (x - mean[c]) * inv_std[c]), with g = dout, or
    dout * (relu_out > 0) when relu (the backward of a fused ReLU)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], M = x.shape[2]
    cdef Py_ssize_t c
    if (dout.shape[0] != N or dout.shape[1] != C or dout.shape[2] != M or relu_out.shape[0] != N
            or relu_out.shape[1] != C or relu_out.shape[2] != M or mean.shape[0] != C
            or inv_std.shape[0] != C or sums.shape[0] != 2 or sums.shape[1] != C):
        raise ValueError("deepnet batch_norm_backward_sums: dout and relu_out must have x's shape, "
                         "mean and inv_std C entries, sums shape (2, C)")
    if N == 0 or M == 0:
        sums[:, :] = 0
        return
    for c in prange(C, nogil=True, schedule="static", num_threads=n_threads):
        channel_sums(&x[0, c, 0], N, C * M, M, mean[c], &dout[0, c, 0], True, &relu_out[0, c, 0], relu,
                     &sums[0, c], &sums[1, c])
        sums[1, c] *= inv_std[c]


def channel_affine(const storage_t[:, :, ::1] x, const compute_t[::1] shift, const compute_t[::1] scale,
                   const compute_t[::1] offset, storage_t[:, :, ::1] y, bint relu, int n_threads):
    """y = (x - shift[c]) * scale[c] + offset[c] (then max(., 0) if relu), rounded once into
    y's type.  The difference is taken first, then scaled: where x equals shift (batch
    normalisation's mean, for a channel constant over the batch) it is exactly 0 and y is
    exactly offset (beta), which x * scale + (offset - shift * scale), one fused
    multiply-add, missed by an ulp of x * scale."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], M = x.shape[2]
    cdef Py_ssize_t plane, m
    cdef compute_t a, b, s, value
    if (y.shape[0] != N or y.shape[1] != C or y.shape[2] != M or scale.shape[0] != C
            or offset.shape[0] != C or shift.shape[0] != C):
        raise ValueError("deepnet channel_affine: y must have x's shape, shift, scale and offset C entries")
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
        s = shift[plane % C]
        a = scale[plane % C]
        b = offset[plane % C]
        for m in range(M):
            value = (<compute_t>load(x[plane // C, plane % C, m]) - s) * a + b
            if relu and value < 0:  # NaN is not < 0: it stays NaN
                value = 0
            store(&y[plane // C, plane % C, m], value)


def batch_norm_dx(const storage_t[:, :, ::1] dout, const storage_t[:, :, ::1] x,
                  const storage_t[:, :, ::1] relu_out, bint relu,
                  const compute_t[::1] mean, const compute_t[::1] inv_std, const compute_t[::1] gamma,
                  const compute_t[::1] mean_dout, const compute_t[::1] mean_dout_xhat,
                  storage_t[:, :, ::1] dx, int n_threads):
    """dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * inv_std,
    with g = dout, or dout masked by relu_out > 0 when relu (the fused ReLU's backward:
    mean_dout and mean_dout_xhat must then be those of the masked gradient)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], M = x.shape[2]
    cdef Py_ssize_t plane, m, c
    cdef compute_t k, mu, s, md, mdx, g
    if (dout.shape[0] != N or dout.shape[1] != C or dout.shape[2] != M or dx.shape[0] != N
            or dx.shape[1] != C or dx.shape[2] != M or relu_out.shape[0] != N or relu_out.shape[1] != C
            or relu_out.shape[2] != M or mean.shape[0] != C or inv_std.shape[0] != C
            or gamma.shape[0] != C or mean_dout.shape[0] != C or mean_dout_xhat.shape[0] != C):
        raise ValueError("deepnet batch_norm_dx: dout, relu_out and dx must have x's shape, the "
                         "per-channel arrays C entries")
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
        c = plane % C
        k = gamma[c] * inv_std[c]
        mu = mean[c]
        s = inv_std[c]
        md = mean_dout[c]
        mdx = mean_dout_xhat[c]
        for m in range(M):
            g = <compute_t>load(dout[plane // C, c, m])
            if relu:
                g = g * is_positive(relu_out[plane // C, c, m])
            store(&dx[plane // C, c, m], k * (g - md - (<compute_t>load(x[plane // C, c, m]) - mu) * s * mdx))
