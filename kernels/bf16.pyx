# bfloat16 kernels (src/deepnet_bf16.h): float32 <-> bfloat16 conversion, and the GEMM of
# vdpbf16ps's dot products, with the instruction where the CPU has AVX512_BF16 and an
# emulation giving the same floats elsewhere.  bfloat16 arrays arrive viewed as uint16.

from libc.stdint cimport uint16_t, uint32_t

cdef extern from "deepnet_bf16.h" nogil:
    int DN_BF16_SCALAR, DN_BF16_AVX2, DN_BF16_AVX512
    int dn_bf16_best_isa()
    void dn_floats_to_bf16(const float* src, uint16_t* dst, long n, int isa, int threads)
    void dn_bf16_to_floats(const uint16_t* src, float* dst, long n, int isa, int threads)
    void dn_bf16_im2col_t(const uint16_t* x, uint16_t* cols_t, int N, int C, int H, int W, int kh, int kw,
                          int sh, int sw, int ph, int pw, int OH, int OW, int threads)
    int dn_bf16_im2col_pairs_t(const uint16_t* x, uint32_t* pairs, int N, int C, int H, int W, int kh, int kw,
                               int sh, int sw, int ph, int pw, int OH, int OW, int threads)
    void dn_bf16_gemm(const uint32_t* A, const uint32_t* Bp, float* C, long M, long N, long K2, int isa,
                      int threads)

ISAS = {"scalar": DN_BF16_SCALAR, "avx2": DN_BF16_AVX2, "avx512_bf16": DN_BF16_AVX512}
BEST = {value: name for name, value in ISAS.items()}[dn_bf16_best_isa()]
"""The fastest path this CPU runs: "avx512_bf16" (the instructions), "avx2" or "scalar"."""


cdef int _isa(str isa) except -1:
    """The path ``isa`` names (None: BEST); one the CPU lacks is refused."""
    if isa is None:
        return dn_bf16_best_isa()
    if isa not in ISAS:
        raise ValueError(f"deepnet bf16: isa must be one of {', '.join(ISAS)} or None, got {isa!r}")
    if ISAS[isa] > dn_bf16_best_isa():
        raise RuntimeError(f"deepnet bf16: this CPU has no {isa} (its best path is {BEST})")
    return ISAS[isa]


def floats_to_bf16(const float[::1] source, uint16_t[::1] target, int n_threads, str isa=None):
    """Round float32 to bfloat16 bits (nearest even; NaN -> quiet NaN with its sign)."""
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"deepnet floats_to_bf16: the arrays must have the same length, got "
                         f"{source.shape[0]}, {target.shape[0]}")
    cdef int path = _isa(isa)
    if source.shape[0]:
        with nogil:
            dn_floats_to_bf16(&source[0], &target[0], source.shape[0], path, n_threads)


def bf16_to_floats(const uint16_t[::1] source, float[::1] target, int n_threads, str isa=None):
    """Widen bfloat16 bits to float32 (exact)."""
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"deepnet bf16_to_floats: the arrays must have the same length, got "
                         f"{source.shape[0]}, {target.shape[0]}")
    cdef int path = _isa(isa)
    if source.shape[0]:
        with nogil:
            dn_bf16_to_floats(&source[0], &target[0], source.shape[0], path, n_threads)


def dot_gemm(const uint32_t[:, ::1] a_pairs, const uint32_t[:, ::1] b_pairs, float[:, ::1] c, int n_threads,
             str isa=None):
    """c += A B in vdpbf16ps's dot products: a_pairs (M, K2) holds A's rows as bfloat16
    pairs (A[m, 2k] low, A[m, 2k+1] high), b_pairs (K2, N) B's columns packed likewise
    (B[2k, n] low, B[2k+1, n] high); c is (M, N) float32, accumulated in place."""
    cdef Py_ssize_t M = a_pairs.shape[0], K2 = a_pairs.shape[1], N = b_pairs.shape[1]
    if b_pairs.shape[0] != K2 or c.shape[0] != M or c.shape[1] != N:
        raise ValueError(f"deepnet dot_gemm: shapes ({M}, {K2}) x ({b_pairs.shape[0]}, {N}) -> "
                         f"({c.shape[0]}, {c.shape[1]}) do not match: expected c of ({M}, {N})")
    cdef int path = _isa(isa)
    if M and N and K2:
        with nogil:
            dn_bf16_gemm(&a_pairs[0, 0], &b_pairs[0, 0], &c[0, 0], M, N, K2, path, n_threads)


cdef (int, int) _output_hw(str name, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw) except *:
    """The windows' output height and width, after checking the geometry."""
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"deepnet {name}: bad geometry kh={kh} kw={kw} stride=({sh}, {sw}) pad=({ph}, {pw})")
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def im2col_t(const uint16_t[:, :, :, ::1] x, uint16_t[:, ::1] cols_t, int kh, int kw, int sh, int sw,
                   int ph, int pw, int n_threads):
    """cols_t (C*kh*kw, N*OH*OW rounded up to even) = the im2col columns transposed: row
    (c, i, j) holds that tap of every window in (n, oy, ox) order, zero outside x (and in
    the odd count's extra column): the dot GEMM's A of the filters' gradient."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH, OW
    OH, OW = _output_hw("im2col_t", H, W, kh, kw, sh, sw, ph, pw)
    cdef Py_ssize_t M = <Py_ssize_t>N * OH * OW
    if OH < 1 or OW < 1 or cols_t.shape[0] != <Py_ssize_t>C * kh * kw or cols_t.shape[1] != M + M % 2:
        raise ValueError(f"deepnet im2col_t: cols_t must be ({C * kh * kw}, {M + M % 2}), got "
                         f"({cols_t.shape[0]}, {cols_t.shape[1]})")
    if cols_t.shape[0] and M:
        with nogil:
            dn_bf16_im2col_t(&x[0, 0, 0, 0], &cols_t[0, 0], N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW, n_threads)


def im2col_pairs_t(const uint16_t[:, :, :, ::1] x, uint32_t[:, ::1] pairs, int kh, int kw, int sh, int sw, int ph,
                   int pw, int n_threads):
    """pairs (ceil(C*kh*kw / 2), N*OH*OW) = the windows as the dot GEMM's B of filters times
    windows: row k2 holds taps 2*k2 (low half) and 2*k2+1 (high) of every window in
    (n, oy, ox) order, taps in (c, i, j) order, zero outside x and for an odd count's last."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH, OW
    OH, OW = _output_hw("im2col_pairs_t", H, W, kh, kw, sh, sw, ph, pw)
    cdef Py_ssize_t K = C * kh * kw
    if OH < 1 or OW < 1 or pairs.shape[0] != (K + 1) // 2 or pairs.shape[1] != <Py_ssize_t>N * OH * OW:
        raise ValueError(f"deepnet im2col_pairs_t: pairs must be ({(K + 1) // 2}, {N * OH * OW}), got "
                         f"({pairs.shape[0]}, {pairs.shape[1]})")
    cdef int status = 0
    if pairs.shape[0] and pairs.shape[1]:
        with nogil:
            status = dn_bf16_im2col_pairs_t(&x[0, 0, 0, 0], &pairs[0, 0], N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW,
                                            n_threads)
    if status:
        raise MemoryError("deepnet im2col_pairs_t: no memory for the scratch lines")
