# Bit-packed inference of the binary layers (deepnet.nn.binary): XNOR-popcount convolution and
# affine product.
#
# Signs are packed 64 channels to a uint64 (bit c % 64 of word c // 64 is 1 where the value
# is >= 0): images as (N, H * W, Cw) words, pixel-major, so that a window reads Cw
# contiguous words per position; filters as (kh * kw * Cw, Fp) words, one row per window
# word and the filters contiguous along it (Fp: the filters padded to DN_FILTER_BLOCK),
# which is the layout the popcount loops of src/deepnet_popcount.h want.  Bits past the
# last channel are 0 in both, so they never differ.
#
# For one output pixel with P window positions inside the image, the dot product of the
# +-1 values is C * P - 2 * (the bits that differ): positions in the zero padding are left
# out, which is what the float convolution's zeros contribute (the avx2 path counts them
# against zero words and takes their mismatches back off: the same integers).  The output is
# (float)(dot) + bias, the same arithmetic as the float path's rint(conv) + bias.
# Integer counts make every thread count give the same bits.

from cython.parallel cimport parallel, prange
from libc.stdint cimport int16_t, int32_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np

include "checks.pxi"

cdef extern from "deepnet_popcount.h" nogil:
    int DN_FILTER_BLOCK
    int dn_pop_cpu_has(int impl)
    int dn_pop_best()
    void dn_mismatches(int impl, int K, const uint64_t* a, const int32_t* krow, const uint64_t* W,
                       const uint64_t* Whi, int Fp, int32_t* counts)
    void dn_split_nibbles(const uint64_t* W, size_t n, uint64_t* Wlo, uint64_t* Whi)
    void dn_pack_planes(int avx2, const float* x, int C, int P, uint64_t* out, int Cw)
    void dn_conv_pad_image(const uint64_t* x, int Cw, int H, int W, int ph, int pw, int Hp, int Wp, uint64_t* out)
    void dn_conv_operands(const uint64_t* Wbits, int K, int Fp, int Fq, uint8_t* tables, uint8_t* Fn)
    void dn_conv_base(int C, int Cw, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw, int OH,
                      int OW, const uint64_t* Wbits, int Fp, int32_t* pop, int32_t* base, int Pb)
    void dn_conv_run(int K, int n, int p0, const uint64_t* pad, int Wp, int Cw, int sh, int sw, int OW,
                     const int32_t* koff, const uint8_t* Fn, const uint8_t* tables, int Fq, int16_t* counts)
    void dn_conv_emit(int n, const int16_t* counts, int Fq, int F, const int32_t* base, size_t Pb,
                      const float* bias, float* outf, size_t fstride, int16_t* stage, int R)
    void dn_conv_dots(int n, const int16_t* counts, int Fq, int F, const int32_t* base, size_t Pb, int32_t* outi,
                      size_t stride)

ctypedef fused in_t:
    float
    double

ctypedef fused out_t:
    float
    double

# The popcount paths by name (the numbers of deepnet_popcount.h).
IMPLEMENTATIONS = {"scalar": 1, "avx2": 2, "avx512": 3, "avx512_emu": 4}


def implementations():
    """The names of the popcount paths this CPU runs (avx512 only with AVX512 VPOPCNTDQ)."""
    return [name for name, number in IMPLEMENTATIONS.items() if dn_pop_cpu_has(number)]


def best_implementation():
    """The path "auto" chooses on this CPU: avx512, else avx2, else scalar."""
    best = dn_pop_best()
    return next(name for name, number in IMPLEMENTATIONS.items() if number == best)


cdef int resolve(str impl) except -1:
    if impl == "auto":
        return dn_pop_best()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"deepnet binary: impl must be 'auto' or one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
    if not dn_pop_cpu_has(IMPLEMENTATIONS[impl]):
        raise ValueError(f"deepnet binary: this CPU cannot run the {impl} path (it runs {implementations()})")
    return IMPLEMENTATIONS[impl]


def words(int bits):
    """uint64 words that hold ``bits`` bits."""
    return (bits + 63) // 64


def padded_filters(int filters):
    """The filters' count padded to the popcount loops' block."""
    return (filters + DN_FILTER_BLOCK - 1) // DN_FILTER_BLOCK * DN_FILTER_BLOCK


def _real(x, str name):
    """x as a C-contiguous float32 or float64 array (float16 widened: exact)."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"deepnet binary: {name} must be float16, float32 or float64, got {x.dtype}")
    return np.ascontiguousarray(x)


cdef void pack_planes(const in_t* x, int C, int P, uint64_t* out, int Cw) noexcept nogil:
    """out (P x Cw words) = the signs of C planes of P values (float64; float32 runs the
    header's dn_pack_planes)."""
    cdef int c, p, word
    cdef uint64_t acc
    for word in range(Cw):
        for p in range(P):
            acc = 0
            for c in range(word * 64, min(C, word * 64 + 64)):
                acc |= ((<uint64_t>1) << (c - word * 64)) if x[<size_t>c * P + p] >= 0 else 0
            out[<size_t>p * Cw + word] = acc


def _pack(const in_t[:, :, ::1] x, uint64_t[:, :, ::1] out, int n_threads):
    cdef int N = x.shape[0], C = x.shape[1], P = x.shape[2], Cw = out.shape[2], n
    if N == 0 or P == 0:
        return
    cdef int avx2 = dn_pop_cpu_has(2)
    with nogil, parallel(num_threads=n_threads):
        for n in prange(N, schedule="static"):
            if in_t is float:
                dn_pack_planes(avx2, &x[n, 0, 0], C, P, &out[n, 0, 0], Cw)
            else:
                pack_planes(&x[n, 0, 0], C, P, &out[n, 0, 0], Cw)


def pack_images(x, int n_threads=1):
    """The signs of images x (N, C, H, W) as (N, H * W, words(C)) uint64."""
    x = _real(x, "x")
    if x.ndim != 4:
        raise ValueError(f"deepnet binary.pack_images: x must be (N, C, H, W), got shape {x.shape}")
    N, C, H, W = x.shape
    fits_int("pack_images", "image", C * H * W)
    out = np.empty((N, H * W, words(C)), np.uint64)
    _pack(x.reshape(N, C, H * W), out, n_threads)
    return out


def pack_rows(x, int n_threads=1):
    """The signs of rows x (N, D) as (N, words(D)) uint64."""
    x = _real(x, "x")
    if x.ndim != 2:
        raise ValueError(f"deepnet binary.pack_rows: x must be (N, D), got shape {x.shape}")
    N, D = x.shape
    fits_int("pack_rows", "row", D)
    out = np.empty((N, 1, words(D)), np.uint64)
    _pack(x.reshape(N, D, 1), out, n_threads)
    return out.reshape(N, words(D))


def pack_conv_weights(W):
    """The signs of filters W (F, C, kh, kw) as (kh * kw * words(C), padded_filters(F)) uint64:
    row (i * kw + j) * words(C) + c // 64, column f, bit c % 64."""
    W = _real(W, "W")
    if W.ndim != 4:
        raise ValueError(f"deepnet binary.pack_conv_weights: W must be (F, C, kh, kw), got shape {W.shape}")
    F, C, kh, kw = W.shape
    fits_int("pack_conv_weights", "filters", W.size)
    out = np.zeros((kh * kw * words(C), padded_filters(F)), np.uint64)
    _pack_filters(W.reshape(F, C, kh * kw), out)
    return out


def _pack_filters(const in_t[:, :, ::1] W, uint64_t[:, ::1] out):
    cdef int F = W.shape[0], C = W.shape[1], S = W.shape[2], Cw = (C + 63) // 64, f, c, s
    with nogil:
        for f in range(F):
            for c in range(C):
                for s in range(S):
                    if W[f, c, s] >= 0:
                        out[s * Cw + (c >> 6), f] |= (<uint64_t>1) << (c & 63)


def pack_affine_weights(W):
    """The signs of weights W (D, O) as (words(D), padded_filters(O)) uint64: row d // 64,
    column o, bit d % 64."""
    W = _real(W, "W")
    if W.ndim != 2:
        raise ValueError(f"deepnet binary.pack_affine_weights: W must be (D, O), got shape {W.shape}")
    D, O = W.shape
    fits_int("pack_affine_weights", "weights", W.size)
    out = np.zeros((words(D), padded_filters(O)), np.uint64)
    _pack_filters(np.ascontiguousarray(W.T).reshape(O, D, 1), out)
    return out


cdef _weights_for(int number, const uint64_t[:, ::1] weights):
    """The weights as the path reads them: split into nibbles (2, rows, Fp) for avx2, else as given."""
    if number != IMPLEMENTATIONS["avx2"]:
        return np.asarray(weights)[None]
    out = np.empty((2,) + tuple(np.asarray(weights).shape), np.uint64)
    cdef uint64_t[:, :, ::1] split = out
    dn_split_nibbles(&weights[0, 0], <size_t>weights.shape[0] * weights.shape[1], &split[0, 0, 0], &split[1, 0, 0])
    return out


def conv_bits(const uint64_t[:, :, ::1] x, int C, int H, int W, const uint64_t[:, ::1] weights, int F,
              int kh, int kw, int sh, int sw, int ph, int pw, const out_t[::1] bias, out_t[:, :, :, ::1] out,
              str impl="auto", int n_threads=1):
    """out (N, F, OH, OW) = the convolution of packed filters (pack_conv_weights) over packed
    images x (pack_images of (N, C, H, W)), zero padded, + bias."""
    cdef int number = resolve(impl)
    cdef int OH, OW
    OH, OW = window_output("binary conv_bits", H, W, kh, kw, sh, sw, ph, pw)
    cdef int N = x.shape[0], Cw = words(C), Fp = weights.shape[1]
    check_shape("binary conv_bits", "x", dims(x.shape, 3), (N, H * W, Cw))
    if C < 1 or F < 1 or Fp % DN_FILTER_BLOCK or Fp < F:
        raise ValueError(f"deepnet binary conv_bits: needs C, F >= 1 and the filters padded to a multiple of "
                         f"{DN_FILTER_BLOCK} (at least {F}), got C={C}, F={F}, {Fp} columns")
    check_shape("binary conv_bits", "weights", dims(weights.shape, 2), (kh * kw * Cw, Fp))
    check_shape("binary conv_bits", "bias", dims(bias.shape, 1), (F,))
    check_shape("binary conv_bits", "out", dims(out.shape, 4), (N, F, OH, OW))
    fits_int("binary conv_bits", "window words", <object>kh * kw * Cw)
    fits_int("binary conv_bits", "row of counts", <object>OW * Fp)
    if N == 0 or OH * OW == 0:
        return
    if number == IMPLEMENTATIONS["avx2"] and kh * kw * Cw <= MAX_WORDS_AVX2:
        _conv_runs_avx2(x, C, H, W, weights, F, kh, kw, sh, sw, ph, pw, OH, OW, bias, out, n_threads)
        return
    cdef const uint64_t[:, :, ::1] split = _weights_for(number, weights)
    cdef const uint64_t* w = &split[0, 0, 0]
    cdef const uint64_t* whi = &split[1, 0, 0] if split.shape[0] == 2 else NULL
    cdef int task, n, oy, ox, ky, kx, iy, ix, cw, K, positions, f, failed = 0
    cdef int P = OH * OW
    cdef uint64_t* a
    cdef int32_t* krow
    cdef int32_t* counts
    cdef const uint64_t* image
    cdef out_t* plane
    cdef int* bits
    cdef const out_t* b = &bias[0]
    with nogil, parallel(num_threads=n_threads):
        a = <uint64_t*>malloc(<size_t>kh * kw * Cw * sizeof(uint64_t))
        krow = <int32_t*>malloc(<size_t>kh * kw * Cw * sizeof(int32_t))
        counts = <int32_t*>malloc(<size_t>OW * Fp * sizeof(int32_t))
        bits = <int*>malloc(<size_t>OW * sizeof(int))
        for task in prange(N * OH, schedule="dynamic"):
            if a == NULL or krow == NULL or counts == NULL or bits == NULL:
                failed += 1
                continue
            n = task // OH
            oy = task % OH
            image = &x[n, 0, 0]
            for ox in range(OW):
                K = 0
                positions = 0
                for ky in range(kh):
                    iy = oy * sh - ph + ky
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * sw - pw + kx
                        if ix < 0 or ix >= W:
                            continue
                        positions = positions + 1
                        for cw in range(Cw):
                            a[K] = image[(<size_t>iy * W + ix) * Cw + cw]
                            krow[K] = (ky * kw + kx) * Cw + cw
                            K = K + 1
                dn_mismatches(number, K, a, krow, w, whi, Fp, counts + <size_t>ox * Fp)
                bits[ox] = C * positions
            # a row of each output plane at a time: contiguous stores, where storing each
            # pixel's filters would touch one cache line per filter
            for f in range(F):
                plane = &out[n, f, oy, 0]
                for ox in range(OW):
                    plane[ox] = <out_t>(bits[ox] - 2 * counts[<size_t>ox * Fp + f]) + b[f]
        free(a)
        free(krow)
        free(counts)
        free(bits)
    if failed:
        raise MemoryError("deepnet binary conv_bits: out of memory for the per-thread buffers")


# Output pixels per task of the avx2 path (a multiple of 4: its runs start at whole blocks).
CHUNK = 196
# The avx2 path counts in int16: window words (K * 64 bits) below 2**15 / 64.
MAX_WORDS_AVX2 = 511


def _conv_runs_avx2(const uint64_t[:, :, ::1] x, int C, int H, int W, const uint64_t[:, ::1] weights, int F,
                    int kh, int kw, int sh, int sw, int ph, int pw, int OH, int OW, const out_t[::1] bias,
                    out_t[:, :, :, ::1] out, int n_threads):
    """conv_bits on the avx2 path: each task pads an image (dn_conv_pad_image) and runs
    dn_conv_run on up to CHUNK of its output pixels."""
    cdef int N = x.shape[0], Cw = words(C), Fp = weights.shape[1], K = kh * kw * Cw, P = OH * OW
    cdef int Fq = (Fp + 63) // 64 * 64, Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef int chunk = min((P + 3) // 4 * 4, CHUNK), runs = (P + chunk - 1) // chunk
    fits_int("binary conv_bits", "padded image words", <object>Hp * Wp * Cw)
    fits_int("binary conv_bits", "runs", <object>N * runs)
    cdef int32_t[::1] koff = np.empty(K, np.int32)
    cdef int ky, kx, cw
    for ky in range(kh):
        for kx in range(kw):
            for cw in range(Cw):
                koff[(ky * kw + kx) * Cw + cw] = (ky * Wp + kx) * Cw + cw
    cdef uint8_t[::1] tables = np.empty(256 * 32, np.uint8)
    cdef uint8_t[::1] Fn = np.empty(Fq // 64 * K * 16 * 64, np.uint8)
    dn_conv_operands(&weights[0, 0], K, Fp, Fq, &tables[0], &Fn[0])
    # base rows read up to 8 past a run's last pixel
    cdef int Pb = (P + 7) // 8 * 8 + 8
    fits_int("binary conv_bits", "base", <object>Pb * Fp)
    cdef int32_t[::1] base = np.empty(Pb * Fp, np.int32)
    cdef int32_t[::1] pop = np.empty(kh * kw * Fp, np.int32)
    dn_conv_base(C, Cw, H, W, kh, kw, sh, sw, ph, pw, OH, OW, &weights[0, 0], Fp, &pop[0], &base[0], Pb)
    cdef int rows = (chunk + 7) // 8 * 8
    cdef int n, task, p0, m, f, q, failed = 0
    cdef uint64_t* pad
    cdef int16_t* counts
    cdef int16_t* stage
    cdef int32_t* dots
    with nogil, parallel(num_threads=n_threads):
        pad = <uint64_t*>malloc(<size_t>Hp * Wp * Cw * sizeof(uint64_t))
        # zeroed: the float stores read rows up to a multiple of 8 past the pixels counted
        counts = <int16_t*>calloc(<size_t>rows * Fq, sizeof(int16_t))
        stage = <int16_t*>malloc(<size_t>rows * Fq * sizeof(int16_t))
        dots = NULL
        if out_t is double:
            dots = <int32_t*>malloc(<size_t>Fp * chunk * sizeof(int32_t))
        for task in prange(N * runs, schedule="static"):
            if pad == NULL or counts == NULL or stage == NULL or (out_t is double and dots == NULL):
                failed += 1
                continue
            n = task // runs
            p0 = task % runs * chunk
            m = min(chunk, P - p0)
            dn_conv_pad_image(&x[n, 0, 0], Cw, H, W, ph, pw, Hp, Wp, pad)
            dn_conv_run(K, m, p0, pad, Wp, Cw, sh, sw, OW, &koff[0], &Fn[0], &tables[0], Fq, counts)
            if out_t is float:
                # transposed in a staging block, then each output plane written in order
                dn_conv_emit(m, counts, Fq, F, &base[p0], <size_t>Pb, &bias[0], &out[n, 0, 0, 0] + p0, <size_t>P,
                             stage, rows)
            else:
                dn_conv_dots(m, counts, Fq, F, &base[p0], <size_t>Pb, dots, <size_t>chunk)
                for f in range(F):
                    for q in range(m):
                        (&out[n, f, 0, 0])[p0 + q] = <out_t>dots[<size_t>f * chunk + q] + bias[f]
        free(pad)
        free(counts)
        free(stage)
        free(dots)
    if failed:
        raise MemoryError("deepnet binary conv_bits: out of memory for the per-thread buffers")


def affine_bits(const uint64_t[:, ::1] x, int D, const uint64_t[:, ::1] weights, int O, const out_t[::1] bias,
                out_t[:, ::1] out, str impl="auto", int n_threads=1):
    """out (N, O) = packed rows x (pack_rows of (N, D)) times packed weights
    (pack_affine_weights), + bias."""
    cdef int number = resolve(impl)
    cdef int N = x.shape[0], Dw = words(D), Op = weights.shape[1]
    if D < 1 or O < 1 or Op % DN_FILTER_BLOCK or Op < O:
        raise ValueError(f"deepnet binary affine_bits: needs D, O >= 1 and the outputs padded to a multiple of "
                         f"{DN_FILTER_BLOCK} (at least {O}), got D={D}, O={O}, {Op} columns")
    check_shape("binary affine_bits", "x", dims(x.shape, 2), (N, Dw))
    check_shape("binary affine_bits", "weights", dims(weights.shape, 2), (Dw, Op))
    check_shape("binary affine_bits", "bias", dims(bias.shape, 1), (O,))
    check_shape("binary affine_bits", "out", dims(out.shape, 2), (N, O))
    if N == 0:
        return
    cdef int32_t[::1] rows = np.arange(Dw, dtype=np.int32)
    cdef const uint64_t[:, :, ::1] split = _weights_for(number, weights)
    cdef const uint64_t* w = &split[0, 0, 0]
    cdef const uint64_t* whi = &split[1, 0, 0] if split.shape[0] == 2 else NULL
    cdef int n, o, failed = 0
    cdef int32_t* counts
    with nogil, parallel(num_threads=n_threads):
        counts = <int32_t*>malloc(<size_t>Op * sizeof(int32_t))
        for n in prange(N, schedule="static"):
            if counts == NULL:
                failed += 1
                continue
            dn_mismatches(number, Dw, &x[n, 0], &rows[0], w, whi, Op, counts)
            for o in range(O):
                out[n, o] = <out_t>(D - 2 * counts[o]) + bias[o]
        free(counts)
    if failed:
        raise MemoryError("deepnet binary affine_bits: out of memory for the per-thread buffers")


def conv_forward(x, W, bias, out, int sh, int sw, int ph, int pw, str impl="auto", int n_threads=1, packed=None):
    """out (N, F, OH, OW, float32 or float64) = sign(W) (F, C, kh, kw) convolved over sign(x)
    (N, C, H, W), zero padded, + bias (out's dtype): packs both (``packed``: W already
    packed by pack_conv_weights), then conv_bits."""
    x = _real(x, "x")
    if x.ndim != 4 or np.ndim(W) != 4 or x.shape[1] != np.shape(W)[1]:
        raise ValueError(f"deepnet binary.conv_forward: x (N, C, H, W) and W (F, C, kh, kw) must agree, "
                         f"got shapes {x.shape} and {np.shape(W)}")
    N, C, H, Wd = x.shape
    F, _, kh, kw = np.shape(W)
    packed = pack_conv_weights(W) if packed is None else packed
    conv_bits(pack_images(x, n_threads), C, H, Wd, packed, F, kh, kw, sh, sw, ph, pw,
              bias, out, impl, n_threads)


def affine_forward(x, W, bias, out, str impl="auto", int n_threads=1, packed=None):
    """out (N, O, float32 or float64) = sign(x) (N, D) @ sign(W) (D, O) + bias (out's dtype)
    (``packed``: W already packed by pack_affine_weights)."""
    x = _real(x, "x")
    if x.ndim != 2 or np.ndim(W) != 2 or x.shape[1] != np.shape(W)[0]:
        raise ValueError(f"deepnet binary.affine_forward: x (N, D) and W (D, O) must agree, "
                         f"got shapes {x.shape} and {np.shape(W)}")
    packed = pack_affine_weights(W) if packed is None else packed
    affine_bits(pack_rows(x, n_threads), x.shape[1], packed, np.shape(W)[1], bias, out,
                impl, n_threads)
