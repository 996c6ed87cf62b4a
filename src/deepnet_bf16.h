/* bfloat16 kernels: float32 <-> bfloat16 conversion and the dot-product GEMM of vdpbf16ps.
 *
 * bfloat16 is float32's upper 16 bits.  Conversion:
 *   - widening is exact (the bits shifted up);
 *   - narrowing rounds to nearest even, as ml_dtypes' astype: a NaN becomes the quiet NaN
 *     0x7fc0 with its sign, float32 subnormals round to bfloat16 subnormals (no flush),
 *     overflow rounds to infinity.
 * Three paths give the same bits: scalar, AVX2 (the same bit arithmetic, 8 lanes) and
 * AVX512_BF16 (vcvtneps2bf16, which treats subnormal inputs as zero and keeps a NaN's
 * payload bits: such lanes are taken from the bit arithmetic instead).
 *
 * The GEMM: C (M x N, float32) += A (M x 2*K2, bfloat16, row-major) times B, B packed as
 * K2 x N pairs: Bp[k2*N + n] holds B[2*k2][n] in its low half, B[2*k2+1][n] in its high
 * half.  Each element follows vdpbf16ps's order: for each pair, odd element first,
 *     c = fma(a[2k+1], b[2k+1], c);  c = fma(a[2k], b[2k], c)
 * as float32 FMAs rounding to nearest even, subnormal inputs (the bfloat16 operands and
 * the accumulator) read as zero and subnormal results flushed to zero (DAZ/FTZ).  The
 * instruction path runs vdpbf16ps (AVX512_BF16, compiled under a target attribute, chosen
 * by CPUID); the AVX2 path emulates it with FMAs under MXCSR's DAZ and FTZ (set per
 * thread, restored after); the scalar path with fmaf and the flushes done by hand.  A
 * product of two bfloat16 is exact in float32 unless it underflows, and then DAZ/FTZ
 * decide it the same way in each path.  Each element is one thread's, in a fixed order:
 * the bits do not depend on the thread count.
 */
#ifndef DEEPNET_BF16_H
#define DEEPNET_BF16_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deepnet_openmp.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define DN_BF16_X86 1
#include <immintrin.h>
#else
#define DN_BF16_X86 0
#endif

/* Paths: scalar, AVX2 (+FMA) emulation, AVX512_BF16 instructions. */
enum { DN_BF16_SCALAR = 0, DN_BF16_AVX2 = 1, DN_BF16_AVX512 = 2 };

/* The fastest path this CPU runs (CPUID). */
static inline int dn_bf16_best_isa(void)
{
#if DN_BF16_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"))
        return DN_BF16_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return DN_BF16_AVX2;
#endif
    return DN_BF16_SCALAR;
}

static inline uint32_t dn_bf16_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float dn_bf16_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* -- conversion --------------------------------------------------------------------------- */

static inline float dn_bf16_to_float(uint16_t h) { return dn_bf16_bits_f32((uint32_t)h << 16); }

static inline uint16_t dn_float_to_bf16(float f)
{
    uint32_t u = dn_bf16_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, sign kept, payload dropped */
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7fc0u);
    /* Nearest even on the bits: a carry out of the mantissa steps the exponent (to
     * infinity from the largest finite values), as rounding must. */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#if DN_BF16_X86
__attribute__((target("avx2,fma"))) static inline __m256i dn_bf16_round8(__m256i u)
{
    const __m256i one = _mm256_set1_epi32(1);
    __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(_mm256_srli_epi32(u, 16), one));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    __m256i magnitude = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000));
    __m256i quiet = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)),
                                    _mm256_set1_epi32(0x7fc0));
    return _mm256_blendv_epi8(rounded, quiet, nan); /* 8 results in the low halves of the lanes */
}

__attribute__((target("avx2,fma"))) static void dn_floats_to_bf16_avx2(const float *src, uint16_t *dst, long n)
{
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i lo = dn_bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i hi = dn_bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* packus works per 128-bit lane: the results come as lo0 hi0 lo1 hi1, put in order */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + i), packed);
    }
    for (; i < n; i++)
        dst[i] = dn_float_to_bf16(src[i]);
}

__attribute__((target("avx2,fma"))) static void dn_bf16_to_floats_avx2(const uint16_t *src, float *dst, long n)
{
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
    }
    for (; i < n; i++)
        dst[i] = dn_bf16_to_float(src[i]);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void dn_floats_to_bf16_avx512(const float *src,
                                                                                          uint16_t *dst, long n)
{
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 f = _mm512_loadu_ps(src + i);
        __m512i u = _mm512_castps_si512(f);
        __m256i bf = (__m256i)_mm512_cvtneps_pbh(f);
        /* Lanes the instruction treats otherwise (subnormal: read as zero; NaN: payload kept)
         * take the bit arithmetic's result. */
        __m512i exponent = _mm512_and_si512(u, _mm512_set1_epi32(0x7f800000));
        __mmask16 odd = _mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512()) |
                        _mm512_cmpeq_epi32_mask(exponent, _mm512_set1_epi32(0x7f800000));
        if (odd) {
            uint16_t fixed[16];
            _mm256_storeu_si256((__m256i *)fixed, bf);
            for (int j = 0; j < 16; j++)
                if (odd >> j & 1)
                    fixed[j] = dn_float_to_bf16(src[i + j]);
            bf = _mm256_loadu_si256((const __m256i *)fixed);
        }
        _mm256_storeu_si256((__m256i *)(dst + i), bf);
    }
    for (; i < n; i++)
        dst[i] = dn_float_to_bf16(src[i]);
}
#endif

static inline void dn_floats_to_bf16_run(const float *src, uint16_t *dst, long n, int isa)
{
#if DN_BF16_X86
    if (isa == DN_BF16_AVX512) { dn_floats_to_bf16_avx512(src, dst, n); return; }
    if (isa == DN_BF16_AVX2) { dn_floats_to_bf16_avx2(src, dst, n); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++)
        dst[i] = dn_float_to_bf16(src[i]);
}

static inline void dn_bf16_to_floats_run(const uint16_t *src, float *dst, long n, int isa)
{
#if DN_BF16_X86
    if (isa != DN_BF16_SCALAR) { dn_bf16_to_floats_avx2(src, dst, n); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++)
        dst[i] = dn_bf16_to_float(src[i]);
}

/* Whole arrays, in chunks of a fixed size shared out among the threads. */
#define DN_BF16_CHUNK 16384L
/* dn_bf16_gemm's tiles, on every architecture: rows of A (the AVX2 path widens that many at a
 * time) by columns of Bp */
#define DN_BF16_ROWS 64L
#define DN_BF16_COLUMNS 512L

static inline void dn_floats_to_bf16(const float *src, uint16_t *dst, long n, int isa, int threads)
{
    long chunks = (n + DN_BF16_CHUNK - 1) / DN_BF16_CHUNK;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (long c = 0; c < chunks; c++) {
        long start = c * DN_BF16_CHUNK, len = n - start < DN_BF16_CHUNK ? n - start : DN_BF16_CHUNK;
        dn_floats_to_bf16_run(src + start, dst + start, len, isa);
    }
}

static inline void dn_bf16_to_floats(const uint16_t *src, float *dst, long n, int isa, int threads)
{
    long chunks = (n + DN_BF16_CHUNK - 1) / DN_BF16_CHUNK;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (long c = 0; c < chunks; c++) {
        long start = c * DN_BF16_CHUNK, len = n - start < DN_BF16_CHUNK ? n - start : DN_BF16_CHUNK;
        dn_bf16_to_floats_run(src + start, dst + start, len, isa);
    }
}

/* -- the dot-product GEMM ----------------------------------------------------------------- */

/* A float32 read with DAZ / written with FTZ, by hand (the scalar path). */
static inline float dn_bf16_daz(float x) { return fabsf(x) < 1.17549435e-38f ? copysignf(0.0f, x) : x; }

/* One pair step of vdpbf16ps on one lane, in the instruction's order. */
static inline float dn_bf16_dot_pair(float c, uint32_t a_pair, uint32_t b_pair)
{
    float a_lo = dn_bf16_daz(dn_bf16_bits_f32(a_pair << 16)), a_hi = dn_bf16_daz(dn_bf16_bits_f32(a_pair & 0xffff0000u));
    float b_lo = dn_bf16_daz(dn_bf16_bits_f32(b_pair << 16)), b_hi = dn_bf16_daz(dn_bf16_bits_f32(b_pair & 0xffff0000u));
    c = dn_bf16_daz(fmaf(a_hi, b_hi, dn_bf16_daz(c)));
    return dn_bf16_daz(fmaf(a_lo, b_lo, c));
}

/* Rows [m0, m1), columns [n0, n1) of C (M x N). */
static void dn_bf16_gemm_rows_scalar(const uint32_t *A, const uint32_t *Bp, float *C, long m0, long m1, long n0,
                                     long n1, long N, long K2)
{
    for (long m = m0; m < m1; m++)
        for (long n = n0; n < n1; n++) {
            float c = C[m * N + n];
            for (long k = 0; k < K2; k++)
                c = dn_bf16_dot_pair(c, A[m * K2 + k], Bp[k * N + n]);
            C[m * N + n] = c;
        }
}

#if DN_BF16_X86
#define DN_BF16_MXCSR_DAZ_FTZ 0x8040u

/* One pair step on 8 lanes: c = fma(a_hi, b_hi, c); c = fma(a_lo, b_lo, c) (DAZ/FTZ by MXCSR). */
#define DN_BF16_STEP8(c, a_hi, a_lo, b_hi, b_lo) \
    (c = _mm256_fmadd_ps(a_lo, b_lo, _mm256_fmadd_ps(a_hi, b_hi, c)))

/* The AVX2 path takes the summed axis in chunks of DN_BF16_KC pairs: a chunk's pairs of A
 * widened to float32 once (high element first: wa[2*k], wa[2*k+1]) and broadcast from
 * memory, its part of Bp reused from L1 by every row of the tile.  C holds each partial
 * sum exactly between chunks, so the sequence of FMAs is unchanged. */
#define DN_BF16_KC 64L

/* Rows m .. m+R-1 (R <= 4) times 16 columns from n, over one chunk of kc pairs: 2R
 * independent accumulator chains (the two FMAs of a pair depend on each other, so one
 * chain would wait on their latency).  wa: the chunk's widened pairs, row r at r * 2*kc. */
__attribute__((target("avx2,fma"), always_inline)) static inline void dn_bf16_block_avx2(const float *wa, const uint32_t *Bp,
                                                                          float *C, long m, int R, long n, long N,
                                                                          long kc)
{
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) {
        acc[r][0] = _mm256_loadu_ps(C + (m + r) * N + n);
        acc[r][1] = _mm256_loadu_ps(C + (m + r) * N + n + 8);
    }
    for (long k = 0; k < kc; k++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(Bp + k * N + n));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(Bp + k * N + n + 8));
        __m256 b0_hi = _mm256_castsi256_ps(_mm256_and_si256(b0, high));
        __m256 b0_lo = _mm256_castsi256_ps(_mm256_slli_epi32(b0, 16));
        __m256 b1_hi = _mm256_castsi256_ps(_mm256_and_si256(b1, high));
        __m256 b1_lo = _mm256_castsi256_ps(_mm256_slli_epi32(b1, 16));
        for (int r = 0; r < R; r++) {
            __m256 a_hi = _mm256_broadcast_ss(wa + r * 2 * kc + 2 * k);
            __m256 a_lo = _mm256_broadcast_ss(wa + r * 2 * kc + 2 * k + 1);
            DN_BF16_STEP8(acc[r][0], a_hi, a_lo, b0_hi, b0_lo);
            DN_BF16_STEP8(acc[r][1], a_hi, a_lo, b1_hi, b1_lo);
        }
    }
    for (int r = 0; r < R; r++) { /* FTZ: never subnormal after an FMA (kc = 0: C as it was) */
        _mm256_storeu_ps(C + (m + r) * N + n, acc[r][0]);
        _mm256_storeu_ps(C + (m + r) * N + n + 8, acc[r][1]);
    }
}

/* 8 columns from n, one row, one chunk. */
__attribute__((target("avx2,fma"))) static inline void dn_bf16_row8_avx2(const float *wa, const uint32_t *Bp,
                                                                         float *C, long m, long n, long N, long kc)
{
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    __m256 c0 = _mm256_loadu_ps(C + m * N + n);
    for (long k = 0; k < kc; k++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(Bp + k * N + n));
        DN_BF16_STEP8(c0, _mm256_broadcast_ss(wa + 2 * k), _mm256_broadcast_ss(wa + 2 * k + 1),
                      _mm256_castsi256_ps(_mm256_and_si256(b0, high)), _mm256_castsi256_ps(_mm256_slli_epi32(b0, 16)));
    }
    _mm256_storeu_ps(C + m * N + n, c0);
}

/* Rows [m0, m1) (at most DN_BF16_ROWS), columns [n0, n1). */
__attribute__((target("avx2,fma"))) static void dn_bf16_gemm_tile_avx2(const uint32_t *A, const uint32_t *Bp, float *C,
                                                                       long m0, long m1, long n0, long n1, long N,
                                                                       long K2)
{
    float wa[DN_BF16_ROWS * 2 * DN_BF16_KC];
    unsigned int saved = _mm_getcsr();
    long n16 = n0 + (n1 - n0) / 16 * 16, n8 = n0 + (n1 - n0) / 8 * 8;
    for (long k0 = 0; k0 < K2; k0 += DN_BF16_KC) {
        long kc = K2 - k0 < DN_BF16_KC ? K2 - k0 : DN_BF16_KC;
        for (long m = m0; m < m1; m++)
            for (long k = 0; k < kc; k++) {
                uint32_t pair = A[m * K2 + k0 + k];
                wa[(m - m0) * 2 * kc + 2 * k] = dn_bf16_bits_f32(pair & 0xffff0000u);
                wa[(m - m0) * 2 * kc + 2 * k + 1] = dn_bf16_bits_f32(pair << 16);
            }
        const uint32_t *chunk = Bp + k0 * N;
        _mm_setcsr(saved | DN_BF16_MXCSR_DAZ_FTZ);
        for (long n = n0; n < n16; n += 16)
            for (long m = m0; m < m1; m += 4) {
                if (m1 - m >= 4) /* a constant row count: the accumulators stay in registers */
                    dn_bf16_block_avx2(wa + (m - m0) * 2 * kc, chunk, C, m, 4, n, N, kc);
                else
                    dn_bf16_block_avx2(wa + (m - m0) * 2 * kc, chunk, C, m, (int)(m1 - m), n, N, kc);
            }
        if (n8 > n16)
            for (long m = m0; m < m1; m++)
                dn_bf16_row8_avx2(wa + (m - m0) * 2 * kc, chunk, C, m, n16, N, kc);
        _mm_setcsr(saved);
    }
    dn_bf16_gemm_rows_scalar(A, Bp, C, m0, m1, n8, n1, N, K2); /* the columns left */
}

/* Rows [m0, m1), columns [n0, n1). */
__attribute__((target("avx2,fma"))) static void dn_bf16_gemm_rows_avx2(const uint32_t *A, const uint32_t *Bp, float *C,
                                                                       long m0, long m1, long n0, long n1, long N,
                                                                       long K2)
{
    for (long m = m0; m < m1; m += DN_BF16_ROWS)
        dn_bf16_gemm_tile_avx2(A, Bp, C, m, m1 - m < DN_BF16_ROWS ? m1 : m + DN_BF16_ROWS, n0, n1, N, K2);
}

/* Four rows times 32 columns from n: eight independent accumulator chains (one would wait
 * on the instruction's latency at every step). */
__attribute__((target("avx512f,avx512bf16"), always_inline)) static inline void
dn_bf16_block4_avx512(const uint32_t *A, const uint32_t *Bp, float *C, long m, long n, long N, long K2)
{
    __m512 acc[4][2];
    for (int r = 0; r < 4; r++) {
        acc[r][0] = _mm512_loadu_ps(C + (m + r) * N + n);
        acc[r][1] = _mm512_loadu_ps(C + (m + r) * N + n + 16);
    }
    for (long k = 0; k < K2; k++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(Bp + k * N + n));
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(Bp + k * N + n + 16));
        for (int r = 0; r < 4; r++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[(m + r) * K2 + k]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
    for (int r = 0; r < 4; r++) {
        _mm512_storeu_ps(C + (m + r) * N + n, acc[r][0]);
        _mm512_storeu_ps(C + (m + r) * N + n + 16, acc[r][1]);
    }
}

/* Rows [m0, m1), columns [n0, n1): blocks of four rows by 32 columns, then the rows and
 * columns left 16 columns at a time, then one by one. */
__attribute__((target("avx512f,avx512bf16"))) static void dn_bf16_gemm_rows_avx512(const uint32_t *A,
                                                                                  const uint32_t *Bp, float *C,
                                                                                  long m0, long m1, long n0, long n1,
                                                                                  long N, long K2)
{
    long n32 = n0 + (n1 - n0) / 32 * 32, n_vec = n0 + (n1 - n0) / 16 * 16, m4 = m0 + (m1 - m0) / 4 * 4;
    for (long m = m0; m < m4; m += 4)
        for (long n = n0; n < n32; n += 32)
            dn_bf16_block4_avx512(A, Bp, C, m, n, N, K2);
    for (long m = m0; m < m1; m++) {
        const uint32_t *a = A + m * K2;
        float *c = C + m * N;
        for (long n = m < m4 ? n32 : n0; n < n_vec; n += 16) {
            __m512 c0 = _mm512_loadu_ps(c + n);
            for (long k = 0; k < K2; k++) {
                __m512bh ap = (__m512bh)_mm512_set1_epi32((int)a[k]);
                __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(Bp + k * N + n));
                c0 = _mm512_dpbf16_ps(c0, ap, b0);
            }
            _mm512_storeu_ps(c + n, c0);
        }
    }
    dn_bf16_gemm_rows_scalar(A, Bp, C, m0, m1, n_vec, n1, N, K2);
}
#endif

/* C += A Bp (see the top of this file): tiles of rows and columns, of sizes that do not
 * depend on the thread count, shared out among the threads. */
static inline void dn_bf16_gemm(const uint32_t *A, const uint32_t *Bp, float *C, long M, long N, long K2, int isa,
                                int threads)
{
    long row_blocks = (M + DN_BF16_ROWS - 1) / DN_BF16_ROWS, column_blocks = (N + DN_BF16_COLUMNS - 1) / DN_BF16_COLUMNS;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (long tile = 0; tile < row_blocks * column_blocks; tile++) {
        long m0 = tile / column_blocks * DN_BF16_ROWS, m1 = m0 + DN_BF16_ROWS < M ? m0 + DN_BF16_ROWS : M;
        long n0 = tile % column_blocks * DN_BF16_COLUMNS, n1 = n0 + DN_BF16_COLUMNS < N ? n0 + DN_BF16_COLUMNS : N;
#if DN_BF16_X86
        if (isa == DN_BF16_AVX512) { dn_bf16_gemm_rows_avx512(A, Bp, C, m0, m1, n0, n1, N, K2); continue; }
        if (isa == DN_BF16_AVX2) { dn_bf16_gemm_rows_avx2(A, Bp, C, m0, m1, n0, n1, N, K2); continue; }
#endif
        (void)isa;
        dn_bf16_gemm_rows_scalar(A, Bp, C, m0, m1, n0, n1, N, K2);
    }
}

/* -- the windows of a convolution, in pairs ------------------------------------------- */

/* Tap (c, i, j) of the windows of output row (n, oy): line[ox] for ox < OW, zero where the
 * tap falls in the padding.  With stride 1 the taps inside x are one run of the input row. */
static inline void dn_bf16_tap_line(const uint16_t *x, uint16_t *line, int n, int C, int H, int W, int c, int i,
                                    int j, int oy, int sh, int sw, int ph, int pw, int OW)
{
    int iy = oy * sh - ph + i;
    if (iy < 0 || iy >= H) {
        memset(line, 0, (size_t)OW * sizeof(uint16_t));
        return;
    }
    const uint16_t *row = x + (((long)n * C + c) * H + iy) * W;
    if (sw == 1) {
        int first = pw - j > 0 ? pw - j : 0, end = W + pw - j < OW ? W + pw - j : OW; /* ox with 0 <= ix < W */
        if (end < first)
            end = first;
        memset(line, 0, (size_t)first * sizeof(uint16_t));
        memcpy(line + first, row + first - pw + j, (size_t)(end - first) * sizeof(uint16_t));
        memset(line + end, 0, (size_t)(OW - end) * sizeof(uint16_t));
        return;
    }
    for (int ox = 0; ox < OW; ox++) {
        int ix = ox * sw - pw + j;
        line[ox] = (ix >= 0 && ix < W) ? row[ix] : 0;
    }
}

/* The windows transposed, for the filters' gradient (a sum over the windows): row
 * (c, i, j) of cols_t holds that tap of every window, in (n, oy, ox) order, then a zero if
 * the window count M = N*OH*OW is odd (row length Mp = M rounded up to even: the pairs of
 * the summed axis). */
static inline void dn_bf16_im2col_t(const uint16_t *x, uint16_t *cols_t, int N, int C, int H, int W, int kh, int kw,
                                    int sh, int sw, int ph, int pw, int OH, int OW, int threads)
{
    long K = (long)C * kh * kw, M = (long)N * OH * OW, Mp = M + (M & 1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (long k = 0; k < K; k++) {
        int c = (int)(k / (kh * kw)), i = (int)(k / kw % kh), j = (int)(k % kw);
        uint16_t *row = cols_t + k * Mp;
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < OH; oy++)
                dn_bf16_tap_line(x, row + ((long)n * OH + oy) * OW, n, C, H, W, c, i, j, oy, sh, sw, ph, pw, OW);
        if (Mp > M)
            row[M] = 0;
    }
}

/* The windows as the dot GEMM's B of a convolution (filters times windows): row k2 holds
 * the pairs (tap 2*k2 low, tap 2*k2+1 high) of every window in (n, oy, ox) order, taps in
 * (c, i, j) order, the missing tap of an odd count C*kh*kw zero.  Returns -1 where the
 * scratch lines cannot be allocated. */
static inline int dn_bf16_im2col_pairs_t(const uint16_t *x, uint32_t *pairs, int N, int C, int H, int W, int kh,
                                         int kw, int sh, int sw, int ph, int pw, int OH, int OW, int threads)
{
    long K = (long)C * kh * kw, K2 = (K + 1) / 2, M = (long)N * OH * OW;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(| : failed)
    {
        uint16_t *lines = (uint16_t *)malloc(2 * (size_t)OW * sizeof(uint16_t));
        failed = lines == NULL;
#pragma omp for schedule(static)
        for (long k2 = 0; k2 < K2; k2++) {
            if (lines == NULL)
                continue;
            long k = 2 * k2;
            uint16_t *low = lines, *high = lines + OW;
            for (int n = 0; n < N; n++)
                for (int oy = 0; oy < OH; oy++) {
                    dn_bf16_tap_line(x, low, n, C, H, W, (int)(k / (kh * kw)), (int)(k / kw % kh), (int)(k % kw), oy,
                                     sh, sw, ph, pw, OW);
                    if (k + 1 < K)
                        dn_bf16_tap_line(x, high, n, C, H, W, (int)((k + 1) / (kh * kw)), (int)((k + 1) / kw % kh),
                                         (int)((k + 1) % kw), oy, sh, sw, ph, pw, OW);
                    else
                        memset(high, 0, (size_t)OW * sizeof(uint16_t));
                    uint32_t *out = pairs + k2 * M + ((long)n * OH + oy) * OW;
                    for (int ox = 0; ox < OW; ox++)
                        out[ox] = (uint32_t)low[ox] | (uint32_t)high[ox] << 16;
                }
        }
        free(lines);
    }
    return failed ? -1 : 0;
}

#endif /* DEEPNET_BF16_H */
