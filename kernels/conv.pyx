# Convolution forward and backward, fused per image, as implicit GEMMs.
#
# A thread works on one image at a time (forward: an image, or a band of its output rows
# when there are fewer images than threads; backward: the images of a chunk).  It copies
# the image into a private zero-padded buffer (small enough to stay in the core's cache)
# and multiplies the filters with the im2col matrix of that buffer without building it:
# the gather GEMM of src/deepnet_gather_gemm.h reads the matrix's entries at precomputed
# offsets of the window positions (c, i, j) and of the output pixels.  Writing the 9x
# larger column matrix was a third of the time.  Offsets are ints: deepnet.functional
# refuses images whose buffers would not fit, and each kernel checks its own arguments.
#
# Arithmetic runs in compute_t (float32 for float16 and float32 storage, double for
# float64); the caller passes the filters already in compute_t, laid out as each
# kernel's docstring says.

from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.math cimport copysign
from libc.string cimport memcpy, memset

include "dtypes.pxi"
include "checks.pxi"
include "pool2x2.pxi"

ctypedef compute_t column_t
include "window.pxi"

# Columns of the col2im path computed per GEMM call: 64 windows (7 channels of 3x3) x the
# pixels stay in L2 at 28x28 pixels.  A multiple of every column_multiple.
DEF COLUMN_BLOCK = 64

cdef extern from "deepnet_transpose.h" nogil:
    void dn_store_transposed_float(const float* product, int ld, int rows, int columns,
                                   const float* bias, int relu, float* out, int out_ld)
    void dn_store_transposed_half(const float* product, int ld, int rows, int columns,
                                  const float* bias, int relu, half_t* out, int out_ld)
    void dn_store_transposed_double(const double* product, int ld, int rows, int columns,
                                    const double* bias, int relu, double* out, int out_ld)
    void dn_add_rows_float(const float* rows, int count, int ld, int n, float* total)
    void dn_add_rows_double(const double* rows, int count, int ld, int n, double* total)

cdef extern from "deepnet_winograd.h" nogil:
    int DN_WINOGRAD_TILES(int n)
    size_t DN_WINOGRAD_STRIDE(size_t n)
    size_t DN_WINOGRAD_ROWS_SCRATCH(int Cp, int Hp, int Wp)
    void dn_winograd_sconv(const float* padded, int C, int OH, int OW, const float* U, int ld,
                           float* rows, float* V, float* M, int* row_offset, int* step_offset,
                           float* product)
    void dn_winograd_dconv(const double* padded, int C, int OH, int OW, const double* U, int ld,
                           double* rows, double* V, double* M, int* row_offset, int* step_offset,
                           double* product)
    void dn_winograd_sconv_filter_gradient(const float* padded, int C, int OH, int OW,
                                           const float* grad_t, int ld, float* rows, float* V,
                                           float* Z, int* row_offset, int* step_offset, float* dU)
    void dn_winograd_dconv_filter_gradient(const double* padded, int C, int OH, int OW,
                                           const double* grad_t, int ld, double* rows, double* V,
                                           double* Z, int* row_offset, int* step_offset, double* dU)

cdef extern from "deepnet_gather_gemm.h" nogil:
    int DN_GATHER_PAD_BYTES
    int DN_MAX_VBYTES
    void dn_gather_sgemm(int M, int N, int steps, const float* base, const int* row_offset,
                         const int* step_offset, const float* B, int ldb, float* C, int ldc,
                         int accumulate)
    void dn_gather_dgemm(int M, int N, int steps, const double* base, const int* row_offset,
                         const int* step_offset, const double* B, int ldb, double* C, int ldc,
                         int accumulate)


def column_multiple(int itemsize):
    """The filter matrices' columns must be padded to a multiple of this (in compute_t)."""
    return DN_GATHER_PAD_BYTES // itemsize  # the same for every variant of a dispatch build


cdef check_columns(str kernel, columns, needed, int itemsize):
    """The gather GEMM loads whole tiles of columns: refuse a matrix not padded to them, or
    narrower than the needed columns."""
    if columns % column_multiple(itemsize) or columns < needed:
        raise ValueError(f"deepnet {kernel}: filter matrices need columns padded to a multiple of "
                         f"{column_multiple(itemsize)} (at least {needed}), got {columns}")


cdef inline void* uninitialised(size_t count, size_t size) noexcept nogil:
    """malloc for count items; never NULL for an empty buffer (no channels, no filters)."""
    return malloc((count if count else 1) * size)


cdef inline void* zeroed(size_t count, size_t size) noexcept nogil:
    """calloc for count items; never NULL for an empty buffer."""
    return calloc(count if count else 1, size)


cdef inline void gather_gemm(int M, int N, int steps, const compute_t* base, const int* row_offset,
                             const int* step_offset, const compute_t* B, int ldb,
                             compute_t* C, int ldc, int accumulate) noexcept nogil:
    if compute_t is float:
        dn_gather_sgemm(M, N, steps, base, row_offset, step_offset, B, ldb, C, ldc, accumulate)
    else:
        dn_gather_dgemm(M, N, steps, base, row_offset, step_offset, B, ldb, C, ldc, accumulate)


cdef struct WinogradScratch:
    # one thread's buffers for dn_winograd_*conv (src/deepnet_winograd.h)
    void* rows
    void* V
    void* M
    int* row_offset
    int* step_offset


cdef inline bint winograd_scratch(WinogradScratch* s, int C, int OH, int OW, int ld,
                                  size_t size) noexcept nogil:
    """Allocate s for a C-channel image with OH x OW outputs; False when out of memory."""
    cdef int TH = DN_WINOGRAD_TILES(OH), TW = DN_WINOGRAD_TILES(OW)
    cdef size_t tiles = <size_t>TH * TW
    cdef int lanes = DN_MAX_VBYTES // size  # enough for the widest variant's vectors
    cdef int Cp = (C + lanes - 1) // lanes * lanes  # at least DN_WINOGRAD_CHANNELS
    s.rows = uninitialised(DN_WINOGRAD_ROWS_SCRATCH(Cp, OH + 2, OW + 2), size)
    s.V = uninitialised(16 * DN_WINOGRAD_STRIDE(Cp * tiles), size)
    s.M = uninitialised(16 * DN_WINOGRAD_STRIDE(tiles * ld), size)
    # the forward's rows are tiles and steps channels, the filter gradient's the other way
    s.row_offset = <int*>uninitialised(max(tiles, <size_t>C), sizeof(int))
    s.step_offset = <int*>uninitialised(max(tiles, <size_t>C), sizeof(int))
    return (s.rows != NULL and s.V != NULL and s.M != NULL and s.row_offset != NULL
            and s.step_offset != NULL)


cdef inline void free_winograd_scratch(WinogradScratch* s) noexcept nogil:
    free(s.rows)
    free(s.V)
    free(s.M)
    free(s.row_offset)
    free(s.step_offset)


cdef inline void winograd_conv(const compute_t* padded, int C, int OH, int OW, const compute_t* U,
                               int ld, WinogradScratch* s, compute_t* product) noexcept nogil:
    """product (OH*OW x ld) = the 3x3 stride-1 convolution of the padded C-channel image."""
    if compute_t is float:
        dn_winograd_sconv(padded, C, OH, OW, U, ld, <float*>s.rows, <float*>s.V, <float*>s.M,
                          s.row_offset, s.step_offset, product)
    else:
        dn_winograd_dconv(padded, C, OH, OW, U, ld, <double*>s.rows, <double*>s.V, <double*>s.M,
                          s.row_offset, s.step_offset, product)


cdef inline void winograd_filter_gradient(const compute_t* padded, int C, int OH, int OW,
                                          const compute_t* grad_t, int ld, WinogradScratch* s,
                                          compute_t* dU) noexcept nogil:
    """dU (16*C x ld) += the Winograd-domain weight gradient of one padded C-channel image
    with output gradients grad_t (OH*OW x ld); dW = G^T dU G (the caller's, once)."""
    if compute_t is float:
        dn_winograd_sconv_filter_gradient(padded, C, OH, OW, grad_t, ld, <float*>s.rows, <float*>s.V,
                                          <float*>s.M, s.row_offset, s.step_offset, dU)
    else:
        dn_winograd_dconv_filter_gradient(padded, C, OH, OW, grad_t, ld, <double*>s.rows, <double*>s.V,
                                          <double*>s.M, s.row_offset, s.step_offset, dU)


cdef int* window_offsets(int C, int kh, int kw, int Hp, int Wp) noexcept nogil:
    """Offset of window position (c, i, j) in a C x Hp x Wp padded image, for c, i, j in order."""
    cdef int* offsets = <int*>uninitialised(<size_t>C * kh * kw, sizeof(int))
    cdef int c, i, j
    if offsets != NULL:
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    offsets[(c * kh + i) * kw + j] = (c * Hp + i) * Wp + j
    return offsets


cdef int* pixel_offsets(int OH, int OW, int sh, int sw, int Wp) noexcept nogil:
    """Offset of the top-left corner of output pixel (oy, ox)'s window in a padded image."""
    cdef int* offsets = <int*>uninitialised(<size_t>OH * OW, sizeof(int))
    cdef int oy, ox
    if offsets != NULL:
        for oy in range(OH):
            for ox in range(OW):
                offsets[oy * OW + ox] = oy * sh * Wp + ox * sw
    return offsets


cdef int* strided_offsets(int count, int stride) noexcept nogil:
    """i * stride for i < count: the rows (or steps) of a dense matrix for the gather GEMM."""
    cdef int* offsets = <int*>uninitialised(count, sizeof(int))
    cdef int i
    if offsets != NULL:
        for i in range(count):
            offsets[i] = i * stride
    return offsets


cdef inline void pad_image(const storage_t* image, compute_t* padded, int C, int H, int W,
                           int ph, int pw) noexcept nogil:
    """Copy a C x H x W image into the interior of a zeroed C x (H+2ph) x (W+2pw) buffer."""
    cdef int c, y, x
    cdef int Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef const storage_t* source
    cdef compute_t* target
    for c in range(C):
        for y in range(H):
            source = image + (c * H + y) * W
            target = padded + (c * Hp + y + ph) * Wp + pw
            if storage_t is half_t and compute_t is float:
                dn_halves_to_floats(source, target, W)
            elif (storage_t is float and compute_t is float) or (storage_t is double and compute_t is double):
                memcpy(target, source, W * sizeof(compute_t))
            else:
                for x in range(W):
                    target[x] = <compute_t>load(source[x])


cdef inline void store_transposed(const compute_t* product, int ld, int rows, int columns,
                                  const compute_t* bias, bint relu, storage_t* out, int out_ld) noexcept nogil:
    """out[f, p] = product[p, f] (+ bias[f], then max(., 0) if relu) for p < rows, f < columns
    (src/deepnet_transpose.h; bias may be NULL)."""
    cdef int p, f
    cdef double value
    if storage_t is half_t and compute_t is float:
        dn_store_transposed_half(product, ld, rows, columns, bias, relu, out, out_ld)
    elif storage_t is float and compute_t is float:
        dn_store_transposed_float(product, ld, rows, columns, bias, relu, out, out_ld)
    elif storage_t is double and compute_t is double:
        dn_store_transposed_double(product, ld, rows, columns, bias, relu, out, out_ld)
    else:  # pairings the wrappers never pass
        for p in range(rows):
            for f in range(columns):
                value = product[p * ld + f] + (bias[f] if bias != NULL else 0)
                store(&out[f * out_ld + p], 0 if relu and value < 0 else value)


cdef check_forward_arguments(str kernel, const storage_t[:, :, :, ::1] x, const compute_t[:, ::1] weights_t,
                             const compute_t[::1] bias, int FN,
                             int kh, int kw, int ph, int pw, int OH, int OW, bint winograd):
    """The arrays of a conv_forward call fit together, and one image's buffers fit int offsets."""
    N, C, H, W, ld = x.shape[0], x.shape[1], x.shape[2], x.shape[3], weights_t.shape[1]
    if winograd:
        if (kh, kw) != (3, 3) or (OH, OW) != (H + 2 * ph - 2, W + 2 * pw - 2):
            raise ValueError(f"deepnet {kernel}: Winograd needs a 3x3 kernel with stride 1, "
                             f"got kernel ({kh}, {kw}) and output {OH}x{OW} from {H}x{W}")
        check_shape(kernel, "weights_t (Winograd's)", (weights_t.shape[0],), (16 * C,))
    else:
        check_shape(kernel, "weights_t", (weights_t.shape[0],), (C * kh * kw,))
    check_columns(kernel, ld, FN, sizeof(compute_t))
    if bias.shape[0] < FN:
        raise ValueError(f"deepnet {kernel}: bias needs {FN} entries, got {bias.shape[0]}")
    fits_int(kernel, "padded image", C * (H + 2 * ph) * (W + 2 * pw))
    fits_int(kernel, "product", <object>OH * OW * ld)


def winograd_filters(const storage_t[:, :, :, ::1] W, compute_t[:, ::1] out, bint flipped):
    """Each 3x3 filter's Winograd F(2x2, 3x3) transform G W[f, c] G^T (W in any storage
    type), computed in double and rounded once, into out as the Winograd kernels take it:
    entry xi = 4 i + j of the 4x4 tile at row xi*C + c, column f.  flipped (for dx, the transposed convolution): the
    filters W[f, c, ::-1, ::-1] of input channel f and output channel c, at row xi*FN + f,
    column c.  out's columns past FN (C flipped) are left as they are (the GEMM padding)."""
    cdef int FN = W.shape[0], C = W.shape[1]
    cdef int channels = FN if flipped else C, filters = C if flipped else FN
    check_shape("winograd_filters", "W", dims(W.shape, 4)[2:], (3, 3))
    if out.shape[0] != 16 * channels or out.shape[1] < filters:
        raise ValueError(f"deepnet winograd_filters: out must have {16 * channels} rows and at least "
                         f"{filters} columns, got {dims(out.shape, 2)}")
    cdef int f, c, k, b, i, row, column
    cdef double g0, g1, g2, half_sum, half_middle
    cdef compute_t *out0, *out1, *out2, *out3   # out's rows 4 i + j, j = 0..3
    cdef const storage_t* source                # W[f, c]
    # One row's filters at a time, each step a loop over the filters that the compiler
    # vectorises (filter by filter, the scalar steps took 17 ns a filter): g[k * filters
    # + column], entry k = 3 a + b of the 3x3 filter; Gg[(3 i + b) * filters + column].
    if channels == 0 or filters == 0:
        return
    cdef double* g = <double*>uninitialised(21 * <size_t>filters, sizeof(double))
    cdef double* Gg = g + 9 * <size_t>filters
    if g == NULL:
        raise MemoryError("deepnet winograd_filters: out of memory")
    with nogil:
        for row in range(channels):
            for column in range(filters):
                f, c = (row, column) if flipped else (column, row)
                source = &W[f, c, 0, 0]
                for k in range(9):
                    g[k * filters + column] = load(source[8 - k]) if flipped else load(source[k])
            for b in range(3):   # G g, one column b of g at a time; G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
                for column in range(filters):
                    g0, g1, g2 = g[b * filters + column], g[(3 + b) * filters + column], g[(6 + b) * filters + column]
                    half_sum, half_middle = 0.5 * (g0 + g2), 0.5 * g1
                    Gg[b * filters + column] = g0
                    Gg[(3 + b) * filters + column] = half_sum + half_middle
                    Gg[(6 + b) * filters + column] = half_sum - half_middle
                    Gg[(9 + b) * filters + column] = g2
            for i in range(4):   # (G g) G^T, one row i at a time, straight into out's rows 4 i + j
                out0, out1 = &out[4 * i * channels + row, 0], &out[(4 * i + 1) * channels + row, 0]
                out2, out3 = &out[(4 * i + 2) * channels + row, 0], &out[(4 * i + 3) * channels + row, 0]
                for column in range(filters):
                    g0, g1, g2 = Gg[3 * i * filters + column], Gg[(3 * i + 1) * filters + column], Gg[(3 * i + 2) * filters + column]
                    half_sum, half_middle = 0.5 * (g0 + g2), 0.5 * g1
                    out0[column] = <compute_t>g0
                    out1[column] = <compute_t>(half_sum + half_middle)
                    out2[column] = <compute_t>(half_sum - half_middle)
                    out3[column] = <compute_t>g2
    free(g)


def conv_forward(const storage_t[:, :, :, ::1] x, const compute_t[:, ::1] weights_t,
                 const compute_t[::1] bias, storage_t[:, :, :, ::1] y,
                 int kh, int kw, int sh, int sw, int ph, int pw, bint relu, bint winograd,
                 int n_threads):
    """y[n] = (im2col(x[n])^T @ weights_t)^T + bias, then max(., 0) if relu.

    weights_t is the filter matrix transposed, (C*kh*kw, FN padded to column_multiple).
    A task is one image, or with fewer images than threads (small-batch inference) one
    band of output rows of an image, so that every thread has work.
    With winograd (3x3 kernels, stride 1), weights_t holds the filters transformed for
    Winograd F(2x2, 3x3) instead, (16*C, FN padded), row xi*C + c = (G g[c] G^T)[xi]
    (src/deepnet_winograd.h), and a task is always a whole image.
    """
    cdef int OH, OW
    OH, OW = window_output("conv_forward", x.shape[2], x.shape[3], kh, kw, sh, sw, ph, pw)
    check_forward_arguments("conv_forward", x, weights_t, bias, y.shape[1], kh, kw, ph, pw, OH, OW, winograd)
    check_shape("conv_forward", "y", dims(y.shape, 4), (x.shape[0], y.shape[1], OH, OW))
    if x.shape[0]:
        forward_images("conv_forward", x, weights_t, bias, &y[0, 0, 0, 0], NULL, NULL, y.shape[1], OH, OW,
                       kh, kw, sh, sw, ph, pw, relu, winograd, n_threads)


def conv_pool_forward(const storage_t[:, :, :, ::1] x, const compute_t[:, ::1] weights_t,
                      const compute_t[::1] bias, storage_t[:, :, :, ::1] pooled,
                      int kh, int kw, int sh, int sw, int ph, int pw, bint relu, bint winograd,
                      int n_threads, int32_t[:, :, :, ::1] argmax=None):
    """conv_forward, then 2x2 max-pooling with stride 2 (DeepConvNet's) into pooled,
    (N, FN, OH // 2, OW // 2).  Each image's convolution output stays in a per-thread
    buffer, in the core's cache, and only the pooled planes reach memory.  The result
    equals max_pool_forward of conv_forward's, bit for bit in float32 and float64; float16
    is pooled before it is rounded, which gives the same values (a zero's sign could
    differ).  argmax (pooled's shape; for training) receives the winners as
    max_pool_forward gives them, and pooled the same bits, in all three dtypes: float16
    then rounds every output before pooling, so that a tie after rounding goes to the
    first, as there.  One exception to the bits: where a NaN bias meets a NaN sum, which of
    the two NaNs comes out is the compiler's choice of operand order in each kernel.  A
    task is always a whole image."""
    cdef int OH, OW
    OH, OW = window_output("conv_pool_forward", x.shape[2], x.shape[3], kh, kw, sh, sw, ph, pw)
    cdef int FN = pooled.shape[1]
    check_forward_arguments("conv_pool_forward", x, weights_t, bias, FN, kh, kw, ph, pw, OH, OW, winograd)
    check_shape("conv_pool_forward", "pooled", dims(pooled.shape, 4), (x.shape[0], FN, OH // 2, OW // 2))
    if OH < 2 or OW < 2:
        raise ValueError(f"deepnet conv_pool_forward: 2x2 pooling needs a 2x2 output at least, got {OH}x{OW}")
    fits_int("conv_pool_forward", "one image's output", <object>FN * OH * OW)
    if argmax is not None:
        check_shape("conv_pool_forward", "argmax", dims(argmax.shape, 4), dims(pooled.shape, 4))
    if x.shape[0]:
        forward_images("conv_pool_forward", x, weights_t, bias, NULL, &pooled[0, 0, 0, 0],
                       &argmax[0, 0, 0, 0] if argmax is not None else NULL, FN, OH, OW,
                       kh, kw, sh, sw, ph, pw, relu, winograd, n_threads)


cdef void forward_images(str kernel, const storage_t[:, :, :, ::1] x, const compute_t[:, ::1] weights_t,
                         const compute_t[::1] bias, storage_t* y, storage_t* pooled, int32_t* argmax,
                         int FN, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw,
                         bint relu, bint winograd, int n_threads) except *:
    """The task loop of conv_forward (y) and conv_pool_forward (pooled, argmax or NULL; y
    is NULL)."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = weights_t.shape[0], ld = weights_t.shape[1]
    cdef int P = OH * OW, PH = OH // 2, PW = OW // 2
    cdef int Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef int bands = 1 if N >= n_threads or winograd or pooled != NULL else min(OH, (n_threads + N - 1) // N)
    cdef int task, n, band, first, band_size, failed = 0
    cdef int* steps = window_offsets(C, kh, kw, Hp, Wp)
    cdef int* pixels = pixel_offsets(OH, OW, sh, sw, Wp)
    cdef compute_t* padded
    cdef compute_t* product
    # conv_pool_forward: one image's pooled output, pooled pixels x filters, in compute_t:
    # pooled before it is rounded to float16 (rounding is monotonic, so the maxima are the
    # same values, and the float kernel is the fast one)
    cdef compute_t* pooled_rows
    cdef int32_t* winner_rows
    # float16 training pools the rounded outputs with this bias of -0 (pool_image)
    cdef compute_t* minus_zeros = NULL
    cdef int f
    if storage_t is half_t and argmax != NULL:
        minus_zeros = <compute_t*>uninitialised(FN, sizeof(compute_t))
        if minus_zeros == NULL:
            free(steps)
            free(pixels)
            raise MemoryError(f"deepnet {kernel}: out of memory for the float16 pooling's bias")
        for f in range(FN):
            minus_zeros[f] = copysign(0.0, -1.0)
    cdef WinogradScratch scratch
    cdef bint have_scratch
    with nogil, parallel(num_threads=n_threads):
        padded = <compute_t*>zeroed(<size_t>C * Hp * Wp, sizeof(compute_t))  # the border stays zero
        product = <compute_t*>uninitialised(<size_t>P * ld, sizeof(compute_t))
        pooled_rows = NULL
        winner_rows = NULL
        if pooled != NULL:
            pooled_rows = <compute_t*>uninitialised(<size_t>PH * PW * ld, sizeof(compute_t))
        if argmax != NULL:
            winner_rows = <int32_t*>uninitialised(<size_t>PH * PW * ld, sizeof(int32_t))
        scratch = WinogradScratch(rows=NULL, V=NULL, M=NULL, row_offset=NULL, step_offset=NULL)
        have_scratch = not winograd or winograd_scratch(&scratch, C, OH, OW, ld, sizeof(compute_t))
        # dynamic: on a shared machine a core that is slowed down would otherwise keep the
        # other waiting at the end of the loop (static measured 5-9% slower here)
        for task in prange(N * bands, schedule="dynamic"):
            if (steps == NULL or pixels == NULL or padded == NULL or product == NULL or not have_scratch
                    or (pooled != NULL and pooled_rows == NULL) or (argmax != NULL and winner_rows == NULL)):
                failed += 1
                continue
            n = task // bands
            band = task % bands
            first = (band * OH // bands) * OW
            band_size = ((band + 1) * OH // bands) * OW - first
            pad_image(&x[n, 0, 0, 0], padded, C, H, W, ph, pw)
            if winograd:
                winograd_conv(padded, C, OH, OW, &weights_t[0, 0], ld, &scratch, product)
            else:
                gather_gemm(band_size, ld, K, padded, pixels + first, steps, &weights_t[0, 0], ld,
                            product, ld, 0)
            if pooled == NULL:
                store_transposed(product, ld, band_size, FN, &bias[0], relu, y + <size_t>n * FN * P + first, P)
            else:
                pool_image(product, ld, &bias[0], minus_zeros, relu, pooled_rows, winner_rows,
                           pooled + <size_t>n * FN * PH * PW,
                           argmax + <size_t>n * FN * PH * PW if argmax != NULL else NULL, FN, OH, OW)
        free(padded)
        free(product)
        free(pooled_rows)
        free(winner_rows)
        free_winograd_scratch(&scratch)
    free(steps)
    free(pixels)
    free(minus_zeros)
    if failed:
        raise MemoryError(f"deepnet {kernel}: out of memory for the per-thread buffers")


cdef inline void pool_image(compute_t* product, int ld, const compute_t* bias, const compute_t* minus_zeros,
                            bint relu, compute_t* pooled_rows, int32_t* winner_rows, storage_t* pooled,
                            int32_t* argmax, int FN, int OH, int OW) noexcept nogil:
    """pooled (FN planes of OH//2 x OW//2) = the 2x2 max-pooling of the image product^T
    (+ bias, ReLU), pooled in compute_t while the image is still pixels x filters
    (src/deepnet_pool.h), then transposed (and float16 rounded) a quarter of the size;
    pooled_rows: (OH//2 * OW//2) x ld scratch.  With argmax (training), the winners too,
    through winner_rows, the same size; float16 then rounds the outputs in product first
    and pools them with minus_zeros (FN of -0) as the bias, so that its winners are those
    of the separate pooling pass."""
    cdef int PH = OH // 2, PW = OW // 2, count = PH * PW
    cdef int q, f
    if argmax == NULL:
        winner_rows = NULL
    if storage_t is half_t and compute_t is float and argmax != NULL:
        dn_epilogue_rounded_to_half(product, ld, bias, relu, FN, OH * OW)
        bias, relu = minus_zeros, False
    if compute_t is float:
        dn_max_pool_2x2_filters_last_float(product, ld, bias, relu, FN, OW, PH, PW, pooled_rows, winner_rows)
    else:
        dn_max_pool_2x2_filters_last_double(product, ld, bias, relu, FN, OW, PH, PW, pooled_rows, winner_rows)
    store_transposed(pooled_rows, ld, count, FN, NULL, False, pooled, count)
    if argmax != NULL:
        for q in range(count):
            for f in range(FN):
                argmax[f * count + q] = winner_rows[q * ld + f]


cdef struct Geometry:
    int C, H, W       # input planes
    int FN, OH, OW    # output planes
    int kh, kw, sh, sw, ph, pw


cdef inline void load_gradient(const storage_t* dout, const storage_t* relu_out, bint relu,
                               compute_t* grad, int count) noexcept nogil:
    """grad = dout in compute_t, times the ReLU mask (relu_out > 0) if relu: a product, not a
    branch, so NaN * 0 stays NaN as in the reference."""
    cdef int q
    if storage_t is half_t and compute_t is float:
        dn_halves_to_floats(dout, grad, count)
        if relu:
            for q in range(count):
                grad[q] = grad[q] * is_positive(relu_out[q])
    elif relu:
        for q in range(count):
            grad[q] = <compute_t>load(dout[q]) * is_positive(relu_out[q])
    else:
        for q in range(count):
            grad[q] = <compute_t>load(dout[q])


cdef inline bint load_pooled_gradient(const storage_t* dout, const int32_t* winners, int count,
                                      const storage_t* relu_out, bint relu, bint mask_pooled,
                                      compute_t* grad, int FN, int P) noexcept nogil:
    """grad = the backward pass of a max-pooling that followed the convolution, fused: each
    of dout's count gradients per filter added at its window's winner (an index into the
    filter's P pixels), zero elsewhere, then the ReLU mask as in load_gradient.  The same
    values as max_pool_backward then load_gradient: a 2x2 stride-2 pooling's windows do not
    overlap, so every pixel takes at most one gradient.  mask_pooled: relu_out is the
    pooling's output, whose entry is the ReLU's output at the winner, the same mask (what
    a fused training forward pass keeps).  False if a winner lies outside."""
    cdef int f, q
    cdef int32_t w
    cdef compute_t value
    memset(grad, 0, <size_t>FN * P * sizeof(compute_t))
    for f in range(FN):
        for q in range(count):
            w = winners[f * count + q]
            if w < 0 or w >= P:
                return False
            # masked where it lands (0 * mask is 0 everywhere else); 0 + first turns a -0
            # into +0 as the pooling's sum does
            value = grad[f * P + w] + <compute_t>load(dout[f * count + q])
            if relu:
                value = value * is_positive(relu_out[f * count + q] if mask_pooled else relu_out[f * P + w])
            grad[f * P + w] = value
    return True


cdef inline void dx_by_transposed_convolution(const compute_t* grad, compute_t* grad_padded,
                                              const int* g_steps, const int* dx_pixels,
                                              const compute_t* weights_flipped, int ld_dx,
                                              compute_t* dx_sum, storage_t* dx_out,
                                              WinogradScratch* scratch, Geometry g) noexcept nogil:
    """Stride 1: dx = the convolution of grad, padded by kernel - 1 - pad, with the flipped
    filters (with a Winograd scratch: their Winograd transform).  The padding's zeros
    multiply every weight: a weight of Inf makes NaN here where col2im would stay finite
    (a diverged network either way)."""
    pad_image(grad, grad_padded, g.FN, g.OH, g.OW, g.kh - 1 - g.ph, g.kw - 1 - g.pw)
    if scratch != NULL:
        winograd_conv(grad_padded, g.FN, g.H, g.W, weights_flipped, ld_dx, scratch, dx_sum)
    else:
        gather_gemm(g.H * g.W, ld_dx, g.FN * g.kh * g.kw, grad_padded, dx_pixels, g_steps,
                    weights_flipped, ld_dx, dx_sum, ld_dx, 0)
    store_transposed(dx_sum, ld_dx, g.H * g.W, g.C, NULL, False, dx_out, g.H * g.W)


cdef inline void dx_by_col2im(const compute_t* grad_t, int ld, const int* grad_rows,
                              const int* filter_steps, const compute_t* weights, int ld_w,
                              compute_t* columns, compute_t* dx_sum, storage_t* dx_out,
                              Geometry g) noexcept nogil:
    """Any stride: dx = col2im(weights^T @ grad), with weights the (FN, C*kh*kw padded) filter
    matrix.  The columns are computed transposed, (pixels, windows), COLUMN_BLOCK windows
    at a time so that they stay in the core's cache, and folded with a step."""
    cdef int window = g.kh * g.kw, K = g.C * window, P = g.OH * g.OW, plane = g.H * g.W
    cdef int first, count, row, q
    for q in range(g.C * plane):
        dx_sum[q] = 0
    first = 0
    while first < K:
        count = min(COLUMN_BLOCK, ld_w - first)
        gather_gemm(P, count, g.FN, grad_t, grad_rows, filter_steps, weights + first, ld_w,
                    columns, count, 0)
        for row in range(first, min(first + count, K)):
            fold_row(columns + row - first, count, dx_sum + (row // window) * plane,
                     (row // g.kw) % g.kh, row % g.kw, g.H, g.W, g.OH, g.OW, g.sh, g.sw, g.ph, g.pw)
        first += count
    # The windows were summed in compute_t; round once into dx (float16: F16C).
    if storage_t is half_t and compute_t is float:
        dn_floats_to_halves(dx_sum, dx_out, g.C * plane)
    else:
        for q in range(g.C * plane):
            store(&dx_out[q], dx_sum[q])


cdef check_backward_arguments(const storage_t[:, :, :, ::1] x, const storage_t[:, :, :, ::1] dout,
                              const storage_t[:, :, :, ::1] relu_out, bint relu,
                              const int32_t[:, :, :, ::1] pool_argmax,
                              const compute_t[:, ::1] dx_filters, bint transposed,
                              bint winograd, bint winograd_dW, storage_t[:, :, :, ::1] dx,
                              compute_t[:, :, ::1] dW_t_per_chunk, compute_t[:, ::1] db_per_chunk,
                              int kh, int kw, int ph, int pw, int OH, int OW):
    """The arrays of a conv_backward call fit together, and one image's buffers fit int offsets."""
    N, C, H, W, FN = x.shape[0], x.shape[1], x.shape[2], x.shape[3], dout.shape[1]
    chunks, ld = dW_t_per_chunk.shape[0], dW_t_per_chunk.shape[2]
    if pool_argmax is None:
        check_shape("conv_backward", "dout", dims(dout.shape, 4), (N, FN, OH, OW))
        check_shape("conv_backward", "relu_out", dims(relu_out.shape, 4), dims(dout.shape, 4))
    else:  # the gradient of a 2x2, stride-2 max-pooling's output; relu_out read only with relu
        check_shape("conv_backward", "dout (of the pooled output)", dims(dout.shape, 4), (N, FN, OH // 2, OW // 2))
        check_shape("conv_backward", "pool_argmax", dims(pool_argmax.shape, 4), dims(dout.shape, 4))
        if relu and dims(relu_out.shape, 4) != dims(dout.shape, 4):  # else the pooled output
            check_shape("conv_backward", "relu_out", dims(relu_out.shape, 4), (N, FN, OH, OW))
    if dx is not None and dx_filters is None:
        raise ValueError("deepnet conv_backward: dx needs dx_filters, got None")
    if winograd_dW and (kh, kw) != (3, 3):
        raise ValueError(f"deepnet conv_backward: dW by Winograd needs a 3x3 kernel, got ({kh}, {kw})")
    check_shape("conv_backward", "dW_t_per_chunk" + (" (Winograd's)" if winograd_dW else ""),
                dims(dW_t_per_chunk.shape, 2), (chunks, 16 * C if winograd_dW else C * kh * kw))
    check_shape("conv_backward", "db_per_chunk", (db_per_chunk.shape[0],), (chunks,))
    if chunks < 1 and N > 0 or db_per_chunk.shape[1] < FN:
        raise ValueError(f"deepnet conv_backward: needs at least one chunk and {FN} db entries per chunk, "
                         f"got {chunks} chunks of {db_per_chunk.shape[1]}")
    check_columns("conv_backward", ld, FN, sizeof(compute_t))
    fits_int("conv_backward", "padded image", C * (H + 2 * ph) * (W + 2 * pw))
    fits_int("conv_backward", "transposed output gradient", <object>OH * OW * ld)
    if dx is None:
        return
    check_shape("conv_backward", "dx", dims(dx.shape, 4), dims(x.shape, 4))
    ld_dx = dx_filters.shape[1]
    if winograd:
        if not transposed or (kh, kw) != (3, 3):
            raise ValueError("deepnet conv_backward: dx by Winograd needs the transposed path and "
                             f"a 3x3 kernel, got transposed={bool(transposed)}, kernel ({kh}, {kw})")
        check_shape("conv_backward", "dx_filters (Winograd's)", (dx_filters.shape[0],), (16 * FN,))
    if transposed:
        if not winograd:
            check_shape("conv_backward", "dx_filters", (dx_filters.shape[0],), (FN * kh * kw,))
        check_columns("conv_backward", ld_dx, C, sizeof(compute_t))
        fits_int("conv_backward", "padded output gradient",
                 FN * (<object>OH + 2 * (kh - 1 - ph)) * (<object>OW + 2 * (kw - 1 - pw)))
    else:
        check_shape("conv_backward", "dx_filters", (dx_filters.shape[0],), (FN,))
        check_columns("conv_backward", ld_dx, C * kh * kw, sizeof(compute_t))


def conv_backward(const storage_t[:, :, :, ::1] x, const storage_t[:, :, :, ::1] dout,
                  const storage_t[:, :, :, ::1] relu_out,
                  const compute_t[:, ::1] dx_filters, bint transposed, bint winograd,
                  bint winograd_dW, storage_t[:, :, :, ::1] dx,
                  compute_t[:, :, ::1] dW_t_per_chunk, compute_t[:, ::1] db_per_chunk,
                  int kh, int kw, int sh, int sw, int ph, int pw, bint relu, int n_threads,
                  const int32_t[:, :, :, ::1] pool_argmax=None):
    """dx (in x's storage type), and dW^T and db summed per chunk of images.

    With relu, the forward pass was fused with a ReLU whose output is relu_out: dout is
    taken as 0 wherever relu_out is not positive (the ReLU's backward, fused).

    For image n, with g = dout[n] as (FN, P), every product a gather GEMM:
      dW^T += im2col(x[n]) @ g^T    dW_t_per_chunk: (chunks, C*kh*kw, FN padded)
      dx[n] = col2im(dx_filters^T @ g)
                                    dx_filters: the filter matrix, (FN, C*kh*kw padded)
    or, with transposed (stride 1, pad < kernel only), the transposed convolution of g:
                                    dx_filters: (FN*kh*kw, C padded), the flipped filters
                                    [(f, i, j), c] = W[f, c, kh-1-i, kw-1-j]
    and with winograd too (3x3 only), by Winograd F(2x2, 3x3) with dx_filters the flipped
    filters' transform, (16*FN, C padded), as conv_forward's weights_t
    (padded: to a multiple of column_multiple).  With winograd_dW (3x3, stride 1), dW by
    Winograd F(2x2, 3x3) instead: dW_t_per_chunk holds dU, (chunks, 16*C, FN padded), row
    xi*C + c, and dW[f, c] = G^T dU[., c, f] G (src/deepnet_winograd.h) is the caller's.  The images are cut into
    dW_t_per_chunk.shape[0] chunks independent of the thread count, so the sums, and the
    result, do not depend on the number of threads.  With pool_argmax, dout is the gradient
    of a 2x2, stride-2 max-pooling of the output (N, FN, OH // 2, OW // 2) and pool_argmax
    its winners (max_pool_forward's), and the pooling's backward pass is fused (relu_out,
    read only with relu, is the convolution's output or the pooling's: the same mask).  With dx None no input gradient is
    computed (a network's first layer), only dW and db, and dx_filters is not read (an
    empty array of compute_t: it tells the fused types apart).
    """
    cdef bint input_gradient = dx is not None
    cdef int OH, OW
    OH, OW = window_output("conv_backward", x.shape[2], x.shape[3], kh, kw, sh, sw, ph, pw)
    if winograd_dW and (sh != 1 or sw != 1):
        raise ValueError(f"deepnet conv_backward: dW by Winograd needs stride 1, got ({sh}, {sw})")
    if transposed and (sh != 1 or sw != 1 or ph >= kh or pw >= kw):
        raise ValueError("deepnet conv_backward: dx as a transposed convolution needs stride 1 "
                         f"and pad < kernel, got stride ({sh}, {sw}), pad ({ph}, {pw}), "
                         f"kernel ({kh}, {kw})")
    check_backward_arguments(x, dout, relu_out, relu, pool_argmax, dx_filters, transposed, winograd, winograd_dW, dx, dW_t_per_chunk,
                             db_per_chunk, kh, kw, ph, pw, OH, OW)
    cdef Geometry g = Geometry(C=x.shape[1], H=x.shape[2], W=x.shape[3], FN=dout.shape[1],
                               OH=OH, OW=OW, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)
    cdef int N = x.shape[0], K = g.C * kh * kw, P = g.OH * g.OW
    cdef int ld = dW_t_per_chunk.shape[2], ld_dx = dx_filters.shape[1] if input_gradient else 0
    cdef int Hp = g.H + 2 * ph, Wp = g.W + 2 * pw
    cdef int Hg = g.OH + 2 * (kh - 1 - ph), Wg = g.OW + 2 * (kw - 1 - pw)  # padded g
    cdef int chunks = dW_t_per_chunk.shape[0]
    cdef int chunk, n, p, f, failed = 0, outside = 0
    cdef bint pooled = pool_argmax is not None
    cdef int pooled_count = (g.OH // 2) * (g.OW // 2)
    cdef bint mask_pooled = pooled and relu and relu_out.shape[2] == g.OH // 2 and relu_out.shape[3] == g.OW // 2
    if N == 0:
        return
    cdef int* steps = window_offsets(g.C, kh, kw, Hp, Wp)
    cdef int* pixels = pixel_offsets(g.OH, g.OW, sh, sw, Wp)
    # The dx GEMM's rows and steps: dx's pixels and g's windows in the padded g, or g^T's
    # pixel rows and its filters.
    cdef int* dx_rows = NULL
    cdef int* dx_steps = NULL
    if input_gradient:
        dx_rows = pixel_offsets(g.H, g.W, 1, 1, Wg) if transposed else strided_offsets(P, ld)
        dx_steps = window_offsets(g.FN, kh, kw, Hg, Wg) if transposed else strided_offsets(g.FN, 1)
    cdef compute_t* padded
    cdef compute_t* grad
    cdef compute_t* grad_t
    cdef compute_t* grad_padded
    cdef compute_t* columns
    cdef compute_t* dx_sum
    cdef compute_t* db_row
    cdef WinogradScratch scratch, dW_scratch
    cdef bint have_scratch
    with nogil, parallel(num_threads=n_threads):
        scratch = WinogradScratch(rows=NULL, V=NULL, M=NULL, row_offset=NULL, step_offset=NULL)
        dW_scratch = WinogradScratch(rows=NULL, V=NULL, M=NULL, row_offset=NULL, step_offset=NULL)
        have_scratch = ((not (winograd and input_gradient) or winograd_scratch(&scratch, g.FN, g.H, g.W, ld_dx, sizeof(compute_t)))
                        and (not winograd_dW or winograd_scratch(&dW_scratch, g.C, g.OH, g.OW, ld,
                                                                 sizeof(compute_t))))
        padded = <compute_t*>zeroed(<size_t>g.C * Hp * Wp, sizeof(compute_t))
        grad = <compute_t*>uninitialised(<size_t>g.FN * P, sizeof(compute_t))
        grad_t = <compute_t*>zeroed(<size_t>P * ld, sizeof(compute_t))  # padding columns stay zero
        if not input_gradient:
            grad_padded = columns = dx_sum = NULL
        elif transposed:
            grad_padded = <compute_t*>zeroed(<size_t>g.FN * Hg * Wg, sizeof(compute_t))
            columns = NULL
            dx_sum = <compute_t*>uninitialised(<size_t>g.H * g.W * ld_dx, sizeof(compute_t))
        else:
            grad_padded = NULL
            columns = <compute_t*>uninitialised(<size_t>P * COLUMN_BLOCK, sizeof(compute_t))
            dx_sum = <compute_t*>uninitialised(<size_t>g.C * g.H * g.W, sizeof(compute_t))
        for chunk in prange(chunks, schedule="dynamic"):  # as in conv_forward; sums stay per chunk
            if (steps == NULL or pixels == NULL or padded == NULL or grad == NULL or grad_t == NULL
                    or not have_scratch
                    or input_gradient and (dx_rows == NULL or dx_steps == NULL or dx_sum == NULL
                                           or grad_padded == NULL and columns == NULL)):
                failed += 1
                continue
            for n in range(chunk * N // chunks, (chunk + 1) * N // chunks):
                if not pooled:
                    load_gradient(&dout[n, 0, 0, 0], &relu_out[n, 0, 0, 0], relu, grad, g.FN * P)
                elif not load_pooled_gradient(&dout[n, 0, 0, 0], &pool_argmax[n, 0, 0, 0], pooled_count,
                                              &relu_out[n, 0, 0, 0] if relu else NULL, relu, mask_pooled,
                                              grad, g.FN, P):
                    outside += 1
                    break
                store_transposed(grad, P, g.FN, P, NULL, False, grad_t, ld)
                # db from the transposed rows: vectors of filters added pixel by pixel (a
                # sum along a row of grad would be one serial chain of additions).
                db_row = &db_per_chunk[chunk, 0]
                if compute_t is float:
                    dn_add_rows_float(grad_t, P, ld, g.FN, db_row)
                else:
                    dn_add_rows_double(grad_t, P, ld, g.FN, db_row)
                pad_image(&x[n, 0, 0, 0], padded, g.C, g.H, g.W, ph, pw)
                if winograd_dW:
                    winograd_filter_gradient(padded, g.C, g.OH, g.OW, grad_t, ld, &dW_scratch,
                                             &dW_t_per_chunk[chunk, 0, 0])
                else:
                    gather_gemm(K, ld, P, padded, steps, pixels, grad_t, ld,
                                &dW_t_per_chunk[chunk, 0, 0], ld, 1)
                if input_gradient and transposed:
                    dx_by_transposed_convolution(grad, grad_padded, dx_steps, dx_rows,
                                                 &dx_filters[0, 0], ld_dx, dx_sum,
                                                 &dx[n, 0, 0, 0],
                                                 &scratch if winograd else NULL, g)
                elif input_gradient:
                    dx_by_col2im(grad_t, ld, dx_rows, dx_steps, &dx_filters[0, 0], ld_dx,
                                 columns, dx_sum, &dx[n, 0, 0, 0], g)
        free(padded)
        free(grad)
        free(grad_t)
        free(grad_padded)
        free(columns)
        free(dx_sum)
        free_winograd_scratch(&scratch)
        free_winograd_scratch(&dW_scratch)
    free(steps)
    free(pixels)
    free(dx_rows)
    free(dx_steps)
    if failed:
        raise MemoryError("deepnet conv_backward: out of memory for the per-thread buffers")
    if outside:
        raise ValueError(f"deepnet conv_backward: pool_argmax entries must lie in [0, {P})")
