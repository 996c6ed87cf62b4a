# Int8 inference kernels of INT8_SPEC: the int8 convolution with its fused requantization,
# ReLU and 2x2 max-pool, and uint8 (de)quantization (C in src/deepnet_int8.h).
#
# Every path (scalar C, AVX2, AVX-VNNI, AVX512-VNNI and the emulations of the VNNI loops)
# computes the same integers; the default is the best path this CPU runs, and `path=` picks
# another one (tests).  Tasks are groups of images, or bands of output rows of an image when
# there are fewer images than threads; integers make the result the same for any thread
# count.  The avx2 path runs 3x3, stride-1 layers of 8 channels or more as integer Winograd
# (exact too): F(4x4, 3x3) where winograd4_fits, else F(2x2, 3x3).

from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np

include "checks.pxi"

cdef extern from "deepnet_openmp.h" nogil:
    int omp_get_max_threads()

cdef extern from "deepnet_int8.h" nogil:
    ctypedef struct dn8_conv:
        int C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, Hp, Wp
        int K, K4, FN, FNpad
        const int32_t* w4
        const int32_t* w16
        const int32_t* offsets
        const int32_t* wino
        int winograd4
        const int32_t* bias
        const int32_t* wsum
        const float* scale
        int x_zero, out_zero, relu, pool, out_float
    int DN8_CHANNEL_PAD
    size_t DN8_COLS(int K4, int pixels)
    size_t DN8_SUMS(int FNpad, int pixels)
    size_t DN8_WINOGRAD_V(int count, int C, int tiles)
    size_t DN8_WINOGRAD_M(int count, int FNpad, int tiles)
    void dn8_winograd_task(const dn8_conv* cv, const uint8_t* x, int n0, int n1, uint8_t* padded, int32_t* V,
                           int32_t* M, int32_t* sums, void* out)
    int dn8_supported(int path)
    void dn8_task(const dn8_conv* cv, int path, const uint8_t* x, int n0, int n1, int r0, int r1,
                  uint8_t* padded, uint32_t* cols, int32_t* sums, void* out)
    void dn8_quantize(const float* x, size_t n, float inv_scale, int zero, uint8_t* out)
    void dn8_dequantize(const uint8_t* q, size_t n, float scale, int zero, float* out)

# The paths, in the order of their C numbers (deepnet_int8.h's DN8_SCALAR ...).
PATHS = ("scalar", "avx2", "avxvnni-emulated", "avx512vnni-emulated", "avxvnni", "avx512vnni")
MAX_K = 65536          # 255 * 127 * K stays below 2**31
DEF TASK_BYTES = 262144  # a task's im2col and sums (at most, unless one image needs more): they stay in L2
DEF WINOGRAD_MIN_C = 8    # fewer input channels: the transforms cost more than the products saved
DEF WINOGRAD_MIN_PIXELS = 16   # smaller outputs likewise
DEF WINOGRAD4_SUM_LIMIT = 33554432   # F(4x4, 3x3) recovers the sums mod 2**26: |sum| < 2**25


def paths():
    """The paths this build and CPU run, by name (PATHS order)."""
    return [name for i, name in enumerate(PATHS) if dn8_supported(i)]


def best_path():
    """The path conv_int8 takes by default: the fastest real instruction set this CPU has."""
    for name in ("avx512vnni", "avxvnni", "avx2"):
        if dn8_supported(PATHS.index(name)):
            return name
    return "scalar"


cdef int path_number(path) except -1:
    if path is None:
        path = best_path()
    if path not in PATHS:
        raise ValueError(f"deepnet conv_int8: path must be one of {PATHS} or None, got {path!r}")
    cdef int number = PATHS.index(path)
    if not dn8_supported(number):
        raise ValueError(f"deepnet conv_int8: path {path!r} is not available on this CPU or build "
                         f"(available: {paths()})")
    return number


cdef class PackedFilters:
    """int8 filters (FN, C, KH, KW) in the layout of the compiled conv_int8 (opaque)."""
    cdef readonly int FN, C, KH, KW, K, K4, FNpad
    cdef readonly object w4       # int32 (FNpad, K4): 4 weights a word
    cdef readonly object w16      # int32 (FNpad, K4, 2): the int16 pairs (w0, w2), (w1, w3)
    cdef readonly object wino     # 3x3 only, int32 (16, FNpad, C2): U = (2G) g (2G)^T, int16 channel pairs
    cdef readonly object wino4    # 3x3 only, int32 (36, FNpad, C2): F(4x4, 3x3)'s U = G_L g G_R^T, likewise
    cdef readonly object sums     # int32 (FN,): sum of each filter's weights
    cdef readonly object max_abs_sum  # the largest sum of a filter's absolute values
    cdef dict offsets             # (H, W, ph, pw): where each k of the im2col starts in a padded image

    @property
    def shape(self):
        return (self.FN, self.C, self.KH, self.KW)

    def __repr__(self):
        return f"PackedFilters(shape={self.shape})"


def pack_filters(w_q):
    """The int8 filters w_q (FN, C, KH, KW) packed for conv_int8."""
    w = check_array("pack_filters", "w_q", w_q, np.int8, 4)
    FN, C, KH, KW = w.shape
    K = C * KH * KW
    if FN < 1 or K < 1:
        raise ValueError(f"deepnet pack_filters: w_q must have no empty axis, got shape {w.shape}")
    if K > MAX_K:
        raise ValueError(f"deepnet pack_filters: C*KH*KW must be at most {MAX_K} (int32 sums), got {K}")
    if (w == -128).any():
        raise ValueError("deepnet pack_filters: w_q must lie in [-127, 127], got -128")
    cdef PackedFilters packed = PackedFilters.__new__(PackedFilters)
    K4 = (K + 3) // 4
    FNpad = (FN + DN8_CHANNEL_PAD - 1) // DN8_CHANNEL_PAD * DN8_CHANNEL_PAD
    rows = np.zeros((FNpad, 4 * K4), dtype=np.int8)
    rows[:FN, :K] = w.reshape(FN, K)
    packed.w4 = np.ascontiguousarray(rows.view("<i4"))
    wide = rows.astype(np.int16).reshape(FNpad, K4, 4)
    packed.w16 = np.ascontiguousarray(wide[:, :, [0, 2, 1, 3]]).view("<i4").reshape(FNpad, K4, 2)
    flat = w.reshape(FN, K).astype(np.int64)
    packed.sums = flat.sum(axis=1).astype(np.int32)   # |sum| <= 127 * MAX_K
    packed.max_abs_sum = int(np.abs(flat).sum(axis=1).max())
    packed.offsets = {}
    packed.wino = packed.wino4 = None
    if KH == 3 and KW == 3:
        G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]])
        packed.wino = winograd_filters(w, G2, G2, FNpad)   # |U| <= 9 * 127
        # F(4x4, 3x3)'s G_L = 24 G and G_R = diag(24, 12, 12, 24, 24, 1) G (deepnet_int8_winograd4.h)
        GL = np.array([[6, 0, 0], [-4, -4, -4], [-4, 4, -4], [1, 2, 4], [1, -2, 4], [0, 0, 24]])
        GR = np.array([[6, 0, 0], [-2, -2, -2], [-2, 2, -2], [1, 2, 4], [1, -2, 4], [0, 0, 1]])
        packed.wino4 = winograd_filters(w, GL, GR, FNpad)   # |U| <= 24 * 7 * 127
    packed.FN, packed.C, packed.KH, packed.KW, packed.K, packed.K4, packed.FNpad = FN, C, KH, KW, K, K4, FNpad
    return packed


cdef object winograd_filters(w, GL, GR, int FNpad):
    """U = GL g GR^T of each 3x3 filter g of w (FN, C, 3, 3), as int32 (GL rows * GR rows, FNpad,
    C2) holding int16 channel pairs (zero past FN and C): the packing of deepnet_int8_winograd*.h."""
    FN, C = w.shape[:2]
    U = np.einsum("iu,fcuv,jv->ijfc", GL.astype(np.int64), w.astype(np.int64), GR.astype(np.int64))
    pairs = np.zeros((len(GL) * len(GR), FNpad, 2 * ((C + 1) // 2)), dtype=np.int16)
    pairs[:, :FN, :C] = U.reshape(len(GL) * len(GR), FN, C)
    return np.ascontiguousarray(pairs.view("<i4"))


cdef check_array(str kernel, str name, value, dtype, int ndim):
    """value as a C-contiguous ndarray, after checking its type, dtype and rank."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"deepnet {kernel}: {name} must be a numpy.ndarray of {np.dtype(dtype)}, "
                        f"got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"deepnet {kernel}: {name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
    if ndim >= 0 and value.ndim != ndim:
        raise ValueError(f"deepnet {kernel}: {name} must have {ndim} dimensions, got shape {value.shape}")
    return np.ascontiguousarray(value)


cdef check_output(str kernel, out, dtypes, tuple shape):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"deepnet {kernel}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype not in dtypes:
        raise TypeError(f"deepnet {kernel}: out must have dtype {' or '.join(str(np.dtype(d)) for d in dtypes)}, "
                        f"got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"deepnet {kernel}: out must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"deepnet {kernel}: out must be C-contiguous and writeable")


cdef int check_int(str kernel, str name, value, int low, int high) except? -1:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"deepnet {kernel}: {name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"deepnet {kernel}: {name} must lie in [{low}, {high}], got {value}")
    return value


cdef tuple check_pair(str kernel, str name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"deepnet {kernel}: {name} must be a pair of ints, got {value!r}")
    return (check_int(kernel, name, value[0], 0, INT_LIMIT - 1), check_int(kernel, name, value[1], 0, INT_LIMIT - 1))


cdef bint winograd_fits(int number, PackedFilters packed, int sh, int sw, bint out_float):
    """The avx2 path can run the layer as integer Winograd: 3x3, stride 1, uint8 output, and
    4 times the largest sum fits int32 (Y = 4 * the sums)."""
    return (number == 1 and packed.wino is not None and sh == 1 and sw == 1 and not out_float
            and 4 * 255 * packed.max_abs_sum < INT_LIMIT)


cdef bint winograd_pays(int C, int OH, int OW):
    """Winograd is faster than the direct loop for the layer (where it fits)."""
    return C >= WINOGRAD_MIN_C and OH * OW >= WINOGRAD_MIN_PIXELS


cdef inline int winograd4_tiles(int size, bint pool) noexcept nogil:
    """F(4x4, 3x3)'s tiles along an output side (4 outputs, or pooled 2 pooled pixels, a tile)."""
    return (size // 2 + 1) // 2 if pool else (size + 3) // 4


cdef bint winograd4_fits(PackedFilters packed, int OH, int OW, bint pool):
    """Where Winograd fits, F(4x4, 3x3) runs the layer: tile rows of 2, 4 or 5 and more tiles
    (deepnet_int8_winograd4.h's steps), and sums that it recovers exactly."""
    cdef int tile_row = winograd4_tiles(OW, pool)
    return (tile_row == 2 or tile_row == 4 or tile_row >= 5) and 255 * packed.max_abs_sum < WINOGRAD4_SUM_LIMIT


def winograd_tile(filters, int OH, int OW, pool):
    """The output tile of the avx2 path's Winograd convolution, where it runs a 3x3, stride-1
    layer of these filters into an OH x OW output (pooled or not): 4 for F(4x4, 3x3), else 2."""
    if not isinstance(filters, PackedFilters):
        raise TypeError(f"deepnet winograd_tile: filters must be what pack_filters returned, got {type(filters).__name__}")
    return 4 if winograd4_fits(filters, OH, OW, bool(pool)) else 2


cdef inline int winograd_tiles(const dn8_conv* cv) noexcept nogil:
    """An image's Winograd tiles: 4x4 outputs for F(4x4, 3x3), else 2x2 (pooled: the pooled pixels)."""
    if cv.winograd4:
        return winograd4_tiles(cv.OH, cv.pool) * winograd4_tiles(cv.OW, cv.pool)
    return ((cv.OH // 2) * (cv.OW // 2)) if cv.pool else (((cv.OH + 1) // 2) * ((cv.OW + 1) // 2))


cdef inline int winograd_matrices(const dn8_conv* cv) noexcept nogil:
    return 36 if cv.winograd4 else 16


def conv_int8(x, x_zero, filters, stride, pad, bias_q, scale, out_zero, relu, pool, out, *, path=None,
              n_threads=None, winograd=None):
    """The int8 convolution of INT8_SPEC into out (uint8: requantized, + ReLU and 2x2 max-pool
    if asked; float32: scaled, + ReLU if asked); returns out.

    path: None (the best for this CPU, best_path()) or one of paths().  n_threads: None for
    OpenMP's current maximum (OMP_NUM_THREADS), else the number of threads.  winograd: None
    lets the avx2 path run 3x3, stride-1 layers with a uint8 output as exact integer Winograd
    (F(4x4, 3x3) or F(2x2, 3x3), winograd_tile) where that is faster (8 input channels or more,
    16 output pixels or more; whole images a task, at least as many as threads); True wherever
    it can, False never (tests: every choice gives the same bits).
    """
    cdef str kernel = "conv_int8"
    if not isinstance(filters, PackedFilters):
        raise TypeError(f"deepnet conv_int8: filters must be what pack_filters returned, got {type(filters).__name__}")
    cdef PackedFilters packed = filters
    xa = check_array(kernel, "x", x, np.uint8, 4)
    cdef int z = check_int(kernel, "x_zero", x_zero, 0, 255)
    cdef int oz = check_int(kernel, "out_zero", out_zero, 0, 255)
    cdef int sh, sw, ph, pw
    sh, sw = check_pair(kernel, "stride", stride)
    ph, pw = check_pair(kernel, "pad", pad)
    if xa.shape[1] != packed.C:
        raise ValueError(f"deepnet conv_int8: x must have {packed.C} channels (the filters'), got shape {xa.shape}")
    fits_int(kernel, "image", xa.shape[1] * xa.shape[2] * xa.shape[3])
    fits_int(kernel, "batch", xa.shape[0])
    cdef int N = xa.shape[0], C = xa.shape[1], H = xa.shape[2], W = xa.shape[3]
    cdef int OH, OW
    OH, OW = window_output(kernel, H, W, packed.KH, packed.KW, sh, sw, ph, pw)
    cdef int FN = packed.FN
    bias = check_array(kernel, "bias_q", bias_q, np.int32, 1)
    scales = check_array(kernel, "scale", scale, np.float32, 1)
    check_shape(kernel, "bias_q", bias.shape, (FN,))
    check_shape(kernel, "scale", scales.shape, (FN,))
    if not np.isfinite(scales).all():
        raise ValueError("deepnet conv_int8: scale must be finite")
    largest_bias = max(-int(bias.min()), int(bias.max()))
    if largest_bias + 255 * packed.max_abs_sum >= INT_LIMIT:
        raise ValueError(f"deepnet conv_int8: bias_q could overflow the int32 sums: max|bias_q| + 255 * "
                         f"max sum|w_q| must stay below {INT_LIMIT}, got {largest_bias} + 255 * {packed.max_abs_sum}")
    relu, pool = bool(relu), bool(pool)
    if pool:
        if OH < 2 or OW < 2:
            raise ValueError(f"deepnet conv_int8: 2x2 pooling needs a 2x2 output at least, got {OH}x{OW}")
        check_output(kernel, out, (np.uint8,), (N, FN, OH // 2, OW // 2))
    else:
        check_output(kernel, out, (np.uint8, np.float32), (N, FN, OH, OW))
    cdef int threads = omp_get_max_threads() if n_threads is None else check_int(kernel, "n_threads", n_threads, 1, 4096)
    cdef int number = path_number(path)
    fits_int(kernel, "output", FN * OH * OW)
    if N == 0:
        return out

    cdef const uint8_t[:, :, :, ::1] xv = xa
    cdef const int32_t[:, ::1] w4 = packed.w4
    cdef const int32_t[:, :, ::1] w16 = packed.w16
    cdef const int32_t[::1] biasv = bias
    cdef const int32_t[::1] wsumv = packed.sums
    fits_int(kernel, "padded image", C * (H + 2 * <object>ph) * (W + 2 * <object>pw))
    offsets = packed.offsets.get((H, W, ph, pw))
    if offsets is None:
        # where each k = (c, u, v) of the im2col starts in a padded image; k >= K (zero weights): 0
        k = np.arange(4 * packed.K4)
        k[k >= packed.K] = 0
        c, u, v = k // (packed.KH * packed.KW), k // packed.KW % packed.KH, k % packed.KW
        offsets = ((c * (H + 2 * ph) + u) * (W + 2 * pw) + v).astype(np.int32)
        if len(packed.offsets) < 16:
            packed.offsets[(H, W, ph, pw)] = offsets
    cdef const int32_t[::1] offsetv = offsets
    cdef const float[::1] scalev = scales
    cdef dn8_conv cv
    cv.C, cv.H, cv.W, cv.KH, cv.KW = C, H, W, packed.KH, packed.KW
    cv.sh, cv.sw, cv.ph, cv.pw, cv.OH, cv.OW = sh, sw, ph, pw, OH, OW
    cv.Hp, cv.Wp = H + 2 * ph, W + 2 * pw
    cv.K, cv.K4, cv.FN, cv.FNpad = packed.K, packed.K4, FN, packed.FNpad
    cv.w4, cv.w16, cv.scale, cv.offsets = &w4[0, 0], &w16[0, 0, 0], &scalev[0], &offsetv[0]
    cv.bias, cv.wsum, cv.wino, cv.winograd4 = &biasv[0], &wsumv[0], NULL, 0
    cv.x_zero, cv.out_zero, cv.relu, cv.pool, cv.out_float = z, oz, relu, pool, out.dtype == np.float32

    # Tasks: groups of whole images, as many as TASK_BYTES of buffers hold (and at least one
    # task a thread), or with fewer images than threads, bands of `unit` rows of one image
    # (2 when pooling, whose rows past 2 (OH // 2) are not needed).
    cdef int unit = 2 if pool else 1
    cdef int units = (OH // 2) if pool else OH
    cdef int image_pixels = unit * units * OW
    cdef int group = max(1, min(TASK_BYTES // ((4 * packed.K4 + 4 * packed.FNpad) * image_pixels),
                                (N + threads - 1) // threads))
    cdef int groups = (N + group - 1) // group
    cdef int bands = 1
    if N < threads:
        bands = min(units, (threads + N - 1) // N)
    cdef int task_pixels = unit * ((units + bands - 1) // bands) * OW * group
    fits_int(kernel, "task's im2col", <object>DN8_COLS(cv.K4, task_pixels))
    fits_int(kernel, "task's sums", <object>DN8_SUMS(cv.FNpad, task_pixels))
    cdef size_t padded_bytes = <size_t>C * cv.Hp * cv.Wp + 64
    cdef size_t cols_bytes = DN8_COLS(cv.K4, task_pixels) * sizeof(uint32_t)
    cdef size_t sums_bytes = DN8_SUMS(cv.FNpad, task_pixels) * sizeof(int32_t)
    cdef char* out_base = <char*><size_t>out.ctypes.data
    if winograd is not None and not isinstance(winograd, (bool, np.bool_)):
        raise TypeError(f"deepnet conv_int8: winograd must be None, True or False, got {winograd!r}")
    cdef bint use_winograd = (winograd is not False and bands == 1
                              and winograd_fits(number, packed, sh, sw, out.dtype == np.float32)
                              and (winograd or winograd_pays(C, OH, OW)))
    cdef const int32_t[:, :, ::1] winov
    if use_winograd:
        cv.winograd4 = winograd4_fits(packed, OH, OW, pool)
        winov = packed.wino4 if cv.winograd4 else packed.wino
        cv.wino = &winov[0, 0, 0]
        winograd_images(&cv, &xv[0, 0, 0, 0], N, threads, out_base)
        return out
    cdef int task, n, band, failed = 0
    cdef uint8_t* padded
    cdef uint32_t* cols
    cdef int32_t* sums
    with nogil, parallel(num_threads=threads):
        padded = <uint8_t*>malloc(padded_bytes)
        cols = <uint32_t*>malloc(cols_bytes)
        sums = <int32_t*>malloc(sums_bytes)
        for task in prange(groups * bands, schedule="dynamic"):
            if padded == NULL or cols == NULL or sums == NULL:
                failed += 1
                continue
            n = task // bands * group
            band = task % bands
            if bands == 1:
                dn8_task(&cv, number, &xv[0, 0, 0, 0], n, min(n + group, N), 0, unit * units, padded, cols,
                         sums, out_base)
            else:
                dn8_task(&cv, number, &xv[0, 0, 0, 0], n, n + 1, unit * (band * units // bands),
                         unit * ((band + 1) * units // bands), padded, cols, sums, out_base)
        free(padded)
        free(cols)
        free(sums)
    if failed:
        raise MemoryError("deepnet conv_int8: out of memory for a thread's buffers")
    return out


cdef object winograd_images(dn8_conv* cv, const uint8_t* x, int N, int threads, char* out):
    """conv_int8's task loop for the Winograd convolution: groups of whole images."""
    cdef int tiles = winograd_tiles(cv), count = winograd_matrices(cv)
    cdef int group = winograd_group(cv, N, threads)
    cdef int groups = (N + group - 1) // group
    fits_int("conv_int8", "task's Winograd input", <object>DN8_WINOGRAD_V(count, cv.C, group * tiles))
    fits_int("conv_int8", "task's Winograd products", <object>DN8_WINOGRAD_M(count, cv.FNpad, group * tiles))
    # two padded images (F(4x4, 3x3) pairs small ones), and Winograd's reads past them
    cdef size_t padded_bytes = 2 * <size_t>cv.C * cv.Hp * cv.Wp + 4 * cv.Wp + 64
    cdef size_t V_bytes = DN8_WINOGRAD_V(count, cv.C, group * tiles) * sizeof(int32_t)
    cdef size_t M_bytes = DN8_WINOGRAD_M(count, cv.FNpad, group * tiles) * sizeof(int32_t)
    # F(2x2, 3x3)'s: the sums of its fallback paths, or the staging bytes of an unpooled plane
    # (4 tiles + 32); F(4x4, 3x3) takes none
    cdef size_t sums_bytes = 64
    if not cv.winograd4:
        sums_bytes += <size_t>cv.FNpad * cv.OH * cv.OW * sizeof(int32_t) + 4 * <size_t>tiles
    cdef int task, n, failed = 0
    cdef uint8_t* padded
    cdef int32_t* V
    cdef int32_t* M
    cdef int32_t* sums
    with nogil, parallel(num_threads=threads):
        padded = <uint8_t*>malloc(padded_bytes)
        V = <int32_t*>malloc(V_bytes)
        M = <int32_t*>malloc(M_bytes)
        sums = <int32_t*>malloc(sums_bytes)
        for task in prange(groups, schedule="dynamic"):
            if padded == NULL or V == NULL or M == NULL or sums == NULL:
                failed += 1
                continue
            n = task * group
            dn8_winograd_task(cv, x, n, min(n + group, N), padded, V, M, sums, out)
        free(padded)
        free(V)
        free(M)
        free(sums)
    if failed:
        raise MemoryError("deepnet conv_int8: out of memory for a thread's buffers")


def quantize_uint8(x, inv_scale, zero, out):
    """out = uint8(clip(clip(rint(x * inv_scale), -512, 512) + zero, 0, 255)) in float32
    arithmetic (INT8_SPEC; NaN gives 0); returns out."""
    xa = check_array("quantize_uint8", "x", x, np.float32, -1)
    cdef int z = check_int("quantize_uint8", "zero", zero, 0, 255)
    check_output("quantize_uint8", out, (np.uint8,), xa.shape)
    cdef float inv = np.float32(inv_scale)
    cdef const float[::1] source = xa.reshape(-1)
    cdef uint8_t[::1] target = out.reshape(-1)
    if source.shape[0]:
        with nogil:
            dn8_quantize(&source[0], source.shape[0], inv, z, &target[0])
    return out


def dequantize_uint8(q, scale, zero, out=None):
    """float32(int32(q) - zero) * scale (INT8_SPEC), into out if given (float32, q's shape)."""
    qa = check_array("dequantize_uint8", "q", q, np.uint8, -1)
    cdef int z = check_int("dequantize_uint8", "zero", zero, 0, 255)
    if out is None:
        out = np.empty(qa.shape, dtype=np.float32)
    check_output("dequantize_uint8", out, (np.float32,), qa.shape)
    cdef float s = np.float32(scale)
    cdef const uint8_t[::1] source = qa.reshape(-1)
    cdef float[::1] target = out.reshape(-1)
    if source.shape[0]:
        with nogil:
            dn8_dequantize(&source[0], source.shape[0], s, z, &target[0])
    return out


cdef inline int direct_group(const dn8_conv* cv, int image_pixels, int N, int threads) noexcept nogil:
    """Images per task of the direct kernel: as many as TASK_BYTES of buffers hold, and at
    least one task a thread (conv_int8's groups)."""
    cdef size_t per_image = (4 * <size_t>cv.K4 + 4 * <size_t>cv.FNpad) * image_pixels
    cdef size_t fit = TASK_BYTES // per_image if per_image else 1
    return <int>max(1, min(fit, <size_t>((N + threads - 1) // threads)))


cdef inline int winograd_group(const dn8_conv* cv, int N, int threads) noexcept nogil:
    """Images per task of the Winograd kernel (conv_int8's winograd_images): F(2x2, 3x3), as many
    as TASK_BYTES of V and M hold; F(4x4, 3x3), as few as make a block of 16 tiles (its V and M
    stay in L2); at least one task a thread."""
    cdef size_t tiles = winograd_tiles(cv)
    cdef size_t per_image = 4 * <size_t>winograd_matrices(cv) * ((cv.C + 1) // 2 + cv.FNpad) * tiles
    cdef size_t fit = TASK_BYTES // per_image if per_image else 1
    if cv.winograd4:
        fit = (16 + tiles - 1) // tiles if tiles else 1
    return <int>max(1, min(fit, <size_t>((N + threads - 1) // threads)))


cdef class Int8Plan:
    """A whole int8 model in compiled steps (deepnet.compile of an Int8Model): quantize the
    float input, then each int8 convolution (or affine layer) into buffers the plan owns, the
    last one giving float32 scores, or with dequantize=(scale, zero) uint8 values that the
    plan dequantizes (an int8 run that a DequantizeStep ends).  Integers make every task
    split give the same values, so the plan equals the model's predict bit for bit.  steps:
    (packed filters, stride, pad, bias_q, scale, out_zero, relu, pool, affine, float output)
    per convolution."""

    cdef dn8_conv* convs
    cdef int count, path
    cdef list keep
    cdef float inv_scale
    cdef int x_zero
    cdef bint dequantizes
    cdef float out_scale
    cdef int out_zero
    cdef readonly long in_size, out_size
    cdef list sizes          # elements of one image's output, per step
    cdef list winograd       # per step: the Winograd task applies (with whole images)
    cdef int threads
    cdef uint8_t** padded
    cdef uint32_t** cols
    cdef int32_t** sums
    cdef int32_t** V
    cdef int32_t** M
    cdef size_t padded_bytes, cols_bytes, sums_bytes, V_bytes, M_bytes
    cdef object buffers
    cdef int capacity

    def __cinit__(self):
        self.convs = NULL
        self.threads = 0
        self.padded = self.cols = self.sums = self.V = self.M = NULL

    def __init__(self, x_scale, int x_zero, list steps, tuple in_shape, path=None, dequantize=None):
        if not steps:
            raise ValueError("deepnet Int8Plan: needs at least one convolution")
        self.path = path_number(path)
        self.inv_scale = np.float32(1 / x_scale)
        self.x_zero = check_int("Int8Plan", "x_zero", x_zero, 0, 255)
        self.dequantizes = dequantize is not None
        if self.dequantizes:
            self.out_scale = np.float32(dequantize[0])
            self.out_zero = check_int("Int8Plan", "dequantize's zero", dequantize[1], 0, 255)
        self.keep = []
        self.sizes = []
        self.winograd = []
        self.convs = <dn8_conv*>malloc(len(steps) * sizeof(dn8_conv))
        if self.convs == NULL:
            raise MemoryError("deepnet Int8Plan: out of memory for the steps")
        self.count = len(steps)
        self.in_size = int(np.prod(in_shape))
        self.padded_bytes = self.cols_bytes = self.sums_bytes = self.V_bytes = self.M_bytes = 64
        shape = tuple(in_shape)
        zero = x_zero
        for s, step in enumerate(steps):
            shape, zero = self._set_step(&self.convs[s], step, shape, zero,
                                         s == self.count - 1 and not self.dequantizes)
            self.sizes.append(int(np.prod(shape)))
        self.out_size = self.sizes[len(self.sizes) - 1]
        self.capacity = 0
        self.buffers = None

    cdef tuple _set_step(self, dn8_conv* cv, tuple step, tuple shape, int x_zero, bint last):
        cdef PackedFilters packed
        packed, stride, pad, bias_q, scale, out_zero, relu, pool, affine, out_float = step
        if out_float != last:
            raise ValueError("deepnet Int8Plan: only the last convolution gives float scores, and only "
                             "where the plan does not dequantize")
        if affine:
            shape = (int(np.prod(shape)), 1, 1)
        C, H, W = shape
        if C != packed.C:
            raise ValueError(f"deepnet Int8Plan: a convolution of {packed.C} channels after one of {C}")
        sh, sw = check_pair("Int8Plan", "stride", stride)
        ph, pw = check_pair("Int8Plan", "pad", pad)
        OH, OW = window_output("Int8Plan", H, W, packed.KH, packed.KW, sh, sw, ph, pw)
        bias = check_array("Int8Plan", "bias_q", bias_q, np.int32, 1)
        scales = check_array("Int8Plan", "scale", scale, np.float32, 1)
        check_shape("Int8Plan", "bias_q", bias.shape, (packed.FN,))
        check_shape("Int8Plan", "scale", scales.shape, (packed.FN,))
        if max(-int(bias.min()), int(bias.max())) + 255 * packed.max_abs_sum >= INT_LIMIT:
            raise ValueError("deepnet Int8Plan: bias_q could overflow the int32 sums")
        if pool and (OH < 2 or OW < 2 or out_float):
            raise ValueError(f"deepnet Int8Plan: 2x2 pooling needs a 2x2 uint8 output, got {OH}x{OW}")
        fits_int("Int8Plan", "padded image", C * (H + 2 * <object>ph) * (W + 2 * <object>pw))
        fits_int("Int8Plan", "output", packed.FN * OH * OW)
        k = np.arange(4 * packed.K4)
        k[k >= packed.K] = 0
        c, u, v = k // (packed.KH * packed.KW), k // packed.KW % packed.KH, k % packed.KW
        offsets = np.ascontiguousarray(((c * (H + 2 * ph) + u) * (W + 2 * pw) + v).astype(np.int32))
        self.keep += [packed, bias, scales, offsets]
        cv.C, cv.H, cv.W, cv.KH, cv.KW = C, H, W, packed.KH, packed.KW
        cv.sh, cv.sw, cv.ph, cv.pw, cv.OH, cv.OW = sh, sw, ph, pw, OH, OW
        cv.Hp, cv.Wp = H + 2 * ph, W + 2 * pw
        cv.K, cv.K4, cv.FN, cv.FNpad = packed.K, packed.K4, packed.FN, packed.FNpad
        cv.w4 = <const int32_t*><size_t>packed.w4.ctypes.data
        cv.w16 = <const int32_t*><size_t>packed.w16.ctypes.data
        cv.scale = <const float*><size_t>scales.ctypes.data
        cv.offsets = <const int32_t*><size_t>offsets.ctypes.data
        cv.bias = <const int32_t*><size_t>bias.ctypes.data
        cv.wsum = <const int32_t*><size_t>packed.sums.ctypes.data
        cv.wino = NULL
        cv.winograd4 = 0
        cv.x_zero, cv.out_zero, cv.relu, cv.pool, cv.out_float = x_zero, out_zero, relu, pool, out_float
        cdef int unit = 2 if pool else 1
        cdef int image_pixels = unit * ((OH // 2) if pool else OH) * OW
        # a task's buffers hold a group of images, as conv_int8's (TASK_BYTES)
        cdef int pixels = direct_group(cv, image_pixels, 1 << 30, 1) * image_pixels
        fits_int("Int8Plan", "task's im2col", <object>DN8_COLS(cv.K4, pixels))
        fits_int("Int8Plan", "task's sums", <object>DN8_SUMS(cv.FNpad, pixels))
        self.padded_bytes = max(self.padded_bytes, 2 * <size_t>C * cv.Hp * cv.Wp + 4 * cv.Wp + 64)
        self.cols_bytes = max(self.cols_bytes, DN8_COLS(cv.K4, pixels) * sizeof(uint32_t))
        # conv_int8's rule for its Winograd task (the same integers as the direct one)
        winograd = winograd_fits(self.path, packed, sh, sw, out_float) and winograd_pays(C, OH, OW)
        self.winograd.append(winograd)
        image_tiles = ((OH // 2) * (OW // 2)) if pool else (((OH + 1) // 2) * ((OW + 1) // 2))
        self.sums_bytes = max(self.sums_bytes, DN8_SUMS(cv.FNpad, pixels) * sizeof(int32_t),
                              <size_t>cv.FNpad * OH * OW * sizeof(int32_t) + 4 * <size_t>image_tiles + 64)
        if winograd:
            cv.winograd4 = winograd4_fits(packed, OH, OW, pool)
            cv.wino = <const int32_t*><size_t>(packed.wino4 if cv.winograd4 else packed.wino).ctypes.data
            tiles = winograd_tiles(cv) * winograd_group(cv, 1 << 30, 1)
            count = winograd_matrices(cv)
            fits_int("Int8Plan", "task's Winograd input", <object>DN8_WINOGRAD_V(count, C, tiles))
            fits_int("Int8Plan", "task's Winograd products", <object>DN8_WINOGRAD_M(count, cv.FNpad, tiles))
            self.V_bytes = max(self.V_bytes, DN8_WINOGRAD_V(count, C, tiles) * sizeof(int32_t))
            self.M_bytes = max(self.M_bytes, DN8_WINOGRAD_M(count, cv.FNpad, tiles) * sizeof(int32_t))
        out_shape = (packed.FN, OH // 2, OW // 2) if pool else (packed.FN, OH, OW)
        return out_shape, out_zero

    cdef _free_scratch(self):
        cdef int t
        for t in range(self.threads):
            free(self.padded[t])
            free(self.cols[t])
            free(self.sums[t])
            free(self.V[t])
            free(self.M[t])
        free(self.padded)
        free(self.cols)
        free(self.sums)
        free(self.V)
        free(self.M)
        self.padded = self.cols = self.sums = self.V = self.M = NULL
        self.threads = 0

    def reserve(self, int batch, int threads):
        """Allocate now what a call on `batch` images with `threads` threads needs."""
        if batch < 0 or threads < 1:
            raise ValueError(f"deepnet Int8Plan.reserve: batch >= 0 and threads >= 1, got {batch} and {threads}")
        cdef int t
        if threads > self.threads:
            self._free_scratch()
            self.padded = <uint8_t**>calloc(threads, sizeof(void*))
            self.cols = <uint32_t**>calloc(threads, sizeof(void*))
            self.sums = <int32_t**>calloc(threads, sizeof(void*))
            self.V = <int32_t**>calloc(threads, sizeof(void*))
            self.M = <int32_t**>calloc(threads, sizeof(void*))
            if self.padded == NULL or self.cols == NULL or self.sums == NULL or self.V == NULL or self.M == NULL:
                self._free_scratch()
                raise MemoryError("deepnet Int8Plan: out of memory for the per-thread buffers")
            self.threads = threads
            for t in range(threads):
                self.padded[t] = <uint8_t*>malloc(self.padded_bytes)
                self.cols[t] = <uint32_t*>malloc(self.cols_bytes)
                self.sums[t] = <int32_t*>malloc(self.sums_bytes)
                self.V[t] = <int32_t*>malloc(self.V_bytes)
                self.M[t] = <int32_t*>malloc(self.M_bytes)
                if (self.padded[t] == NULL or self.cols[t] == NULL or self.sums[t] == NULL or self.V[t] == NULL
                        or self.M[t] == NULL):
                    self._free_scratch()
                    raise MemoryError("deepnet Int8Plan: out of memory for the per-thread buffers")
        if batch > self.capacity:
            largest = max([self.in_size] + self.sizes)
            fits_int("Int8Plan", "batch's activations", <object>batch * largest)
            self.buffers = (np.empty(batch * largest, np.uint8), np.empty(batch * largest, np.uint8))
            self.capacity = batch

    def run(self, const float[:, ::1] x, float[:, ::1] out, int threads, winograd_mode=None):
        """out (N, out_size) = the plan on float32 x (N, in_size); winograd_mode is unused
        (the int8 Winograd gives the direct kernel's integers)."""
        cdef int N = x.shape[0]
        check_shape("Int8Plan.run", "x", dims(x.shape, 2), (N, self.in_size))
        check_shape("Int8Plan.run", "out", dims(out.shape, 2), (N, self.out_size))
        if N == 0:
            return
        self.reserve(N, threads)
        cdef uint8_t[::1] buffer0 = self.buffers[0]
        cdef uint8_t[::1] buffer1 = self.buffers[1]
        cdef uint8_t* source = &buffer0[0]
        cdef uint8_t* target = &buffer1[0]
        cdef uint8_t* swap
        cdef void* destination
        cdef int s, task, n, band, bands, unit, units, thread, group, groups
        cdef bint winograd
        with nogil:
            dn8_quantize(&x[0, 0], <size_t>N * self.in_size, self.inv_scale, self.x_zero, source)
        for s in range(self.count):
            destination = <void*>&out[0, 0] if s == self.count - 1 and not self.dequantizes else <void*>target
            unit = 2 if self.convs[s].pool else 1
            units = (self.convs[s].OH // 2) if self.convs[s].pool else self.convs[s].OH
            bands = 1 if N >= threads else min(units, (threads + N - 1) // N)
            winograd = self.winograd[s] and bands == 1
            if winograd:
                group = winograd_group(&self.convs[s], N, threads)
            else:
                group = direct_group(&self.convs[s], unit * units * self.convs[s].OW, N, threads)
            groups = (N + group - 1) // group
            with nogil, parallel(num_threads=threads):
                thread = threadid()
                for task in prange(groups * bands, schedule="dynamic"):
                    n = task // bands * group
                    band = task % bands
                    if winograd:
                        dn8_winograd_task(&self.convs[s], source, n, min(n + group, N), self.padded[thread],
                                          self.V[thread], self.M[thread], self.sums[thread], destination)
                    else:
                        dn8_task(&self.convs[s], self.path, source, n, min(n + group, N),
                                 unit * (band * units // bands), unit * ((band + 1) * units // bands),
                                 self.padded[thread], self.cols[thread], self.sums[thread], destination)
            swap = source
            source = target
            target = swap
        if self.dequantizes:  # as DequantizeStep: (q - zero) * scale
            with nogil:
                dn8_dequantize(source, <size_t>N * self.out_size, self.out_scale, self.out_zero, &out[0, 0])

    def __dealloc__(self):
        self._free_scratch()
        free(self.convs)
