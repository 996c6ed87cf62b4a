# Convolution forward and backward, fused per image.
#
# Each thread takes whole images: it unfolds one image into a private column buffer (small
# enough to stay in cache), multiplies it with the filters by the GEMM of
# src/deepnet_gemm.h and writes bias (+ ReLU) into the output.  No (N*OH*OW, C*kh*kw)
# column matrix is ever allocated, and no transpose is needed: the per-image product
# (FN, C*kh*kw) @ (C*kh*kw, OH*OW) is already laid out as NCHW.
#
# Arithmetic runs in compute_t (float32 for float16 and float32 storage, double for
# float64); the caller passes the filters already in compute_t.

from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc

include "dtypes.pxi"

ctypedef compute_t column_t
include "window.pxi"

# Channels per block in the backward pass: 4 channels of 3x3 windows make 36 column rows
# (a multiple of both GEMM tile heights) and keep the block in L2 at 28x28 pixels.
DEF CHANNEL_BLOCK = 4

cdef extern from "deepnet_gemm.h" nogil:
    int dn_sgemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                 float* C, int ldc, int accumulate)
    int dn_dgemm(int M, int N, int K, const double* A, int lda, const double* B, int ldb,
                 double* C, int ldc, int accumulate)


cdef inline int gemm(int M, int N, int K, const compute_t* A, int lda, const compute_t* B, int ldb,
                     compute_t* C, int ldc, int accumulate) noexcept nogil:
    if compute_t is float:
        return dn_sgemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
    else:
        return dn_dgemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate)


def conv_forward(const storage_t[:, :, :, ::1] x, const compute_t[:, ::1] weights,
                 const compute_t[::1] bias, storage_t[:, :, :, ::1] y,
                 int kh, int kw, int sh, int sw, int ph, int pw, bint relu, int n_threads):
    """y[n] = weights (FN, C*kh*kw) @ im2col(x[n]) + bias, then max(., 0) if relu.

    A task is one image, or with fewer images than threads (small-batch inference) one
    band of output rows of an image, so that every thread has work.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int FN = weights.shape[0], K = weights.shape[1]
    cdef int OH = y.shape[2], OW = y.shape[3], P = OH * OW
    cdef int bands = 1 if N >= n_threads else min(OH, (n_threads + N - 1) // N)
    cdef int task, n, band, oy_first, oy_stop, band_size, row, f, p, failed = 0
    cdef compute_t* cols
    cdef compute_t* product
    cdef compute_t value
    cdef storage_t* out
    with nogil, parallel(num_threads=n_threads):
        cols = <compute_t*>malloc(sizeof(compute_t) * K * P)
        product = <compute_t*>malloc(sizeof(compute_t) * FN * P)
        for task in prange(N * bands, schedule="static"):
            if cols == NULL or product == NULL:
                failed += 1
                continue
            n = task // bands
            band = task % bands
            oy_first = band * OH // bands
            oy_stop = (band + 1) * OH // bands
            band_size = (oy_stop - oy_first) * OW
            for row in range(K):
                unfold_row(&x[n, row // (kh * kw), 0, 0], cols + row * band_size, 1,
                           (row // kw) % kh, row % kw, H, W, OH, OW, sh, sw, ph, pw, oy_first, oy_stop)
            if gemm(FN, band_size, K, &weights[0, 0], K, cols, band_size, product, band_size, 0) != 0:
                failed += 1
                continue
            out = &y[n, 0, 0, 0] + oy_first * OW
            for f in range(FN):
                for p in range(band_size):
                    value = product[f * band_size + p] + bias[f]
                    if relu and value < 0:  # NaN is not < 0, so it stays NaN
                        value = 0
                    if storage_t is half_t and compute_t is float:
                        product[f * band_size + p] = value  # converted a row at a time below
                    else:
                        store(&out[f * P + p], value)
                if storage_t is half_t and compute_t is float:
                    dn_floats_to_halves(product + f * band_size, out + f * P, band_size)
        free(cols)
        free(product)
    if failed:
        raise MemoryError("deepnet conv_forward: out of memory for the per-thread buffers")


def conv_backward(const storage_t[:, :, :, ::1] x, const storage_t[:, :, :, ::1] dout,
                  const storage_t[:, :, :, ::1] relu_out,
                  const compute_t[:, ::1] weights_t, storage_t[:, :, :, ::1] dx,
                  compute_t[:, :, ::1] dW_t_per_chunk, compute_t[:, ::1] db_per_chunk,
                  int kh, int kw, int sh, int sw, int ph, int pw, bint relu, int n_threads):
    """dx (in x's storage type), and dW^T and db summed per chunk of images.

    With relu, the forward pass was fused with a ReLU whose output is relu_out: dout is
    taken as 0 wherever relu_out is not positive (the ReLU's backward, fused).

    weights_t is the filter matrix transposed, (C*kh*kw, FN).  For image n, with
    cols = im2col(x[n]) as (C*kh*kw, P) and g = dout[n] as (FN, P):
      dW^T += cols @ g^T          (C*kh*kw, FN)
      dx[n] = col2im(weights_t @ g)
    The images are cut into dW_t_per_chunk.shape[0] chunks independent of the thread
    count, so the sums, and the result, do not depend on the number of threads.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = weights_t.shape[0], FN = weights_t.shape[1]
    cdef int OH = dout.shape[2], OW = dout.shape[3], P = OH * OW
    cdef int window = kh * kw
    cdef int block = min(C, CHANNEL_BLOCK) * window  # column rows per block of channels
    cdef int chunks = dW_t_per_chunk.shape[0]
    cdef int chunk, n, row, first_row, rows, f, p, q, failed = 0
    cdef compute_t* cols
    cdef compute_t* grad
    cdef compute_t* grad_t
    cdef compute_t* dcols
    cdef compute_t* dx_sum
    cdef storage_t* dx_out
    cdef const storage_t* grad_in
    cdef const storage_t* mask
    cdef compute_t total
    with nogil, parallel(num_threads=n_threads):
        cols = <compute_t*>malloc(sizeof(compute_t) * block * P)
        dcols = <compute_t*>malloc(sizeof(compute_t) * block * P)
        grad = <compute_t*>malloc(sizeof(compute_t) * FN * P)
        grad_t = <compute_t*>malloc(sizeof(compute_t) * P * FN)
        dx_sum = <compute_t*>malloc(sizeof(compute_t) * C * H * W)
        for chunk in prange(chunks, schedule="static"):
            if cols == NULL or dcols == NULL or grad == NULL or grad_t == NULL or dx_sum == NULL:
                failed += 1
                continue
            for n in range(chunk * N // chunks, (chunk + 1) * N // chunks):
                grad_in = &dout[n, 0, 0, 0]
                mask = &relu_out[n, 0, 0, 0]
                if storage_t is half_t and compute_t is float:
                    dn_halves_to_floats(grad_in, grad, FN * P)
                else:
                    for q in range(FN * P):
                        grad[q] = <compute_t>load(grad_in[q])
                if relu:  # multiply by the mask, no branch: NaN * 0 stays NaN, as in the reference
                    for q in range(FN * P):
                        grad[q] = grad[q] * is_positive(mask[q])
                for f in range(FN):
                    total = 0
                    for p in range(P):
                        total = total + grad[f * P + p]
                    db_per_chunk[chunk, f] += total
                for p in range(P):
                    for f in range(FN):
                        grad_t[p * FN + f] = grad[f * P + p]
                for q in range(C * H * W):
                    dx_sum[q] = 0
                # A few channels at a time, so that the columns stay in the core's cache.
                first_row = 0
                while first_row < K:
                    rows = min(block, K - first_row)
                    for row in range(rows):
                        unfold_row(&x[n, (first_row + row) // window, 0, 0], cols + row * P, 1,
                                   ((first_row + row) // kw) % kh, (first_row + row) % kw,
                                   H, W, OH, OW, sh, sw, ph, pw)
                    if gemm(rows, FN, P, cols, P, grad_t, FN,
                            &dW_t_per_chunk[chunk, first_row, 0], FN, 1) != 0:
                        failed += 1
                    if gemm(rows, P, FN, &weights_t[first_row, 0], FN, grad, P, dcols, P, 0) != 0:
                        failed += 1
                    for row in range(rows):
                        fold_row(dcols + row * P, 1, dx_sum + ((first_row + row) // window) * H * W,
                                 ((first_row + row) // kw) % kh, (first_row + row) % kw,
                                 H, W, OH, OW, sh, sw, ph, pw)
                    first_row = first_row + block
                # The windows were summed in compute_t; round once into dx (float16: F16C).
                dx_out = &dx[n, 0, 0, 0]
                if storage_t is half_t and compute_t is float:
                    dn_floats_to_halves(dx_sum, dx_out, C * H * W)
                else:
                    for q in range(C * H * W):
                        store(&dx_out[q], dx_sum[q])
        free(cols)
        free(dcols)
        free(grad)
        free(grad_t)
        free(dx_sum)
    if failed:
        raise MemoryError("deepnet conv_backward: out of memory for the per-thread buffers")
