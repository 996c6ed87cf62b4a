/* XNOR-popcount inner loops of the binary layers (kernels/binary.pyx).
 *
 * dn_mismatches_*(K, a, krow, W, Fp, counts) sets counts[f], for each of Fp filters, to
 * the number of bits where the K input words a[k] differ from the filter's words
 * W[krow[k] * Fp + f]: popcount(a[k] ^ w).  The weights are laid out words x filters, so
 * that one input word meets a run of filters in contiguous memory; Fp is a multiple of
 * DN_FILTER_BLOCK.  Every path counts the same integers:
 *
 *   scalar      __builtin_popcountll per word;
 *   avx2        vpshufb on the two nibbles of each byte into byte counts, added over up to
 *               31 words (8 * 31 < 256), then summed per 64-bit lane by vpsadbw;
 *   avx512      vpopcntq (AVX512 VPOPCNTDQ), chosen by CPUID where the CPU has it;
 *   avx512_emu  the avx512 loop on 8-lane structs whose popcount is the scalar one, so the
 *               loop's structure runs (and is tested) on CPUs without the instruction.
 */
#ifndef DEEPNET_POPCOUNT_H
#define DEEPNET_POPCOUNT_H

#include <stdint.h>
#include <string.h>

#define DN_FILTER_BLOCK 32 /* filters per block: 4 zmm registers of counts (2 passes of 4 ymm) */

enum { DN_POP_SCALAR = 1, DN_POP_AVX2 = 2, DN_POP_AVX512 = 3, DN_POP_AVX512_EMU = 4 };

static void dn_mismatches_scalar(int K, const uint64_t* a, const int32_t* krow, const uint64_t* W, int Fp,
                                 int32_t* counts)
{
    memset(counts, 0, (size_t)Fp * sizeof(int32_t));
    for (int k = 0; k < K; k++) {
        const uint64_t word = a[k];
        const uint64_t* w = W + (size_t)krow[k] * Fp;
        for (int f = 0; f < Fp; f++)
            counts[f] += (int32_t)__builtin_popcountll(word ^ w[f]);
    }
}

/* The 512-bit loop, written once over a vector type V and its operations: four registers
 * of 8 filters each per block, one broadcast input word per step. */
#define DN_MISMATCH_512_LOOP(V, ZERO, BCAST, LOAD, XOR, POPCNT, ADD, STORE)               \
    for (int f0 = 0; f0 < Fp; f0 += DN_FILTER_BLOCK) {                                     \
        V t0 = ZERO(), t1 = ZERO(), t2 = ZERO(), t3 = ZERO();                              \
        for (int k = 0; k < K; k++) {                                                      \
            const V av = BCAST(a[k]);                                                      \
            const uint64_t* w = W + (size_t)krow[k] * Fp + f0;                             \
            t0 = ADD(t0, POPCNT(XOR(av, LOAD(w))));                                        \
            t1 = ADD(t1, POPCNT(XOR(av, LOAD(w + 8))));                                    \
            t2 = ADD(t2, POPCNT(XOR(av, LOAD(w + 16))));                                   \
            t3 = ADD(t3, POPCNT(XOR(av, LOAD(w + 24))));                                   \
        }                                                                                  \
        uint64_t sums[DN_FILTER_BLOCK];                                                    \
        STORE(sums, t0);                                                                   \
        STORE(sums + 8, t1);                                                               \
        STORE(sums + 16, t2);                                                              \
        STORE(sums + 24, t3);                                                              \
        for (int j = 0; j < DN_FILTER_BLOCK; j++)                                          \
            counts[f0 + j] = (int32_t)sums[j];                                             \
    }

/* The emulation: 8 lanes in a struct, popcount lane by lane. */
typedef struct {
    uint64_t lane[8];
} dn_v512_emu;

static inline dn_v512_emu dn_emu_zero(void)
{
    dn_v512_emu v;
    memset(&v, 0, sizeof v);
    return v;
}
static inline dn_v512_emu dn_emu_bcast(uint64_t x)
{
    dn_v512_emu v;
    for (int i = 0; i < 8; i++)
        v.lane[i] = x;
    return v;
}
static inline dn_v512_emu dn_emu_load(const uint64_t* p)
{
    dn_v512_emu v;
    memcpy(v.lane, p, sizeof v.lane);
    return v;
}
static inline dn_v512_emu dn_emu_xor(dn_v512_emu x, dn_v512_emu y)
{
    for (int i = 0; i < 8; i++)
        x.lane[i] ^= y.lane[i];
    return x;
}
static inline dn_v512_emu dn_emu_popcnt(dn_v512_emu x)
{
    for (int i = 0; i < 8; i++)
        x.lane[i] = (uint64_t)__builtin_popcountll(x.lane[i]);
    return x;
}
static inline dn_v512_emu dn_emu_add(dn_v512_emu x, dn_v512_emu y)
{
    for (int i = 0; i < 8; i++)
        x.lane[i] += y.lane[i];
    return x;
}
static inline void dn_emu_store(uint64_t* p, dn_v512_emu v) { memcpy(p, v.lane, sizeof v.lane); }

static void dn_mismatches_avx512_emu(int K, const uint64_t* a, const int32_t* krow, const uint64_t* W, int Fp,
                                     int32_t* counts)
{
    DN_MISMATCH_512_LOOP(dn_v512_emu, dn_emu_zero, dn_emu_bcast, dn_emu_load, dn_emu_xor, dn_emu_popcnt, dn_emu_add,
                         dn_emu_store)
}

/* Plain C (the module calls it on every CPU; only the avx2 path reads its output). */
static inline void dn_split_nibbles(const uint64_t* W, size_t n, uint64_t* Wlo, uint64_t* Whi)
{
    const uint64_t mask = 0x0f0f0f0f0f0f0f0fULL;
    for (size_t i = 0; i < n; i++) {
        Wlo[i] = W[i] & mask;
        Whi[i] = (W[i] >> 4) & mask;
    }
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define DN_POP_X86 1
#include <immintrin.h>

/* The avx2 path reads the weights split into nibbles, Wlo = W & 0x0f..0f and Whi = (W >> 4)
 * & 0x0f..0f (dn_split_nibbles), so that a step (4 filters, one input word) is two xors, two
 * vpshufb and two adds: the input word's nibbles are split once per word.  16 filters (4
 * registers of byte counts) per pass fit the 16 ymm registers; the four registers of 64-bit
 * sums are packed into 16 int32 in filter order (vpermd) and stored. */

__attribute__((target("avx2"))) static void dn_mismatches_avx2(int K, const uint64_t* a, const int32_t* krow,
                                                               const uint64_t* Wlo, const uint64_t* Whi, int Fp,
                                                               int32_t* counts)
{
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                           2, 2, 3, 2, 3, 3, 4);
    const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const uint64_t mask = 0x0f0f0f0f0f0f0f0fULL;
    const __m256i zero = _mm256_setzero_si256();
    if (K <= 0)
        memset(counts, 0, (size_t)Fp * sizeof(int32_t));
    for (int k0 = 0; k0 < K; k0 += 31) { /* byte counts: at most 8 * 31 = 248 */
        const int n = K - k0 < 31 ? K - k0 : 31;
        /* the chunk's input nibbles and weight rows, once for every pass over the filters */
        uint64_t alo[31], ahi[31];
        size_t row[31];
        for (int i = 0; i < n; i++) {
            alo[i] = a[k0 + i] & mask;
            ahi[i] = (a[k0 + i] >> 4) & mask;
            row[i] = (size_t)krow[k0 + i] * Fp;
        }
        for (int f0 = 0; f0 < Fp; f0 += 16) {
            __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
            for (int i = 0; i < n; i++) {
                const __m256i vlo = _mm256_set1_epi64x((long long)alo[i]);
                const __m256i vhi = _mm256_set1_epi64x((long long)ahi[i]);
                const __m256i* lo = (const __m256i*)(Wlo + row[i] + f0);
                const __m256i* hi = (const __m256i*)(Whi + row[i] + f0);
#define DN_AVX2_STEP(c, j)                                                                                      \
    c = _mm256_add_epi8(c, _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_xor_si256(vlo, _mm256_loadu_si256(lo + j))), \
                                           _mm256_shuffle_epi8(table, _mm256_xor_si256(vhi, _mm256_loadu_si256(hi + j)))))
                DN_AVX2_STEP(c0, 0);
                DN_AVX2_STEP(c1, 1);
                DN_AVX2_STEP(c2, 2);
                DN_AVX2_STEP(c3, 3);
#undef DN_AVX2_STEP
            }
            /* 64-bit sums of lanes (f0, f0+4, f0+1, f0+5, ...) as int32, then in order */
            __m256i s01 = _mm256_permutevar8x32_epi32(
                _mm256_or_si256(_mm256_sad_epu8(c0, zero), _mm256_slli_epi64(_mm256_sad_epu8(c1, zero), 32)), order);
            __m256i s23 = _mm256_permutevar8x32_epi32(
                _mm256_or_si256(_mm256_sad_epu8(c2, zero), _mm256_slli_epi64(_mm256_sad_epu8(c3, zero), 32)), order);
            if (k0) {
                s01 = _mm256_add_epi32(s01, _mm256_loadu_si256((const __m256i*)(counts + f0)));
                s23 = _mm256_add_epi32(s23, _mm256_loadu_si256((const __m256i*)(counts + f0 + 8)));
            }
            _mm256_storeu_si256((__m256i*)(counts + f0), s01);
            _mm256_storeu_si256((__m256i*)(counts + f0 + 8), s23);
        }
    }
}

#define DN_AVX512_TARGET __attribute__((target("avx512f,avx512vpopcntdq")))
DN_AVX512_TARGET static inline __m512i dn_z_zero(void) { return _mm512_setzero_si512(); }
DN_AVX512_TARGET static inline __m512i dn_z_bcast(uint64_t x) { return _mm512_set1_epi64((long long)x); }
DN_AVX512_TARGET static inline __m512i dn_z_load(const uint64_t* p) { return _mm512_loadu_si512((const void*)p); }
DN_AVX512_TARGET static inline __m512i dn_z_xor(__m512i x, __m512i y) { return _mm512_xor_si512(x, y); }
DN_AVX512_TARGET static inline __m512i dn_z_popcnt(__m512i x) { return _mm512_popcnt_epi64(x); }
DN_AVX512_TARGET static inline __m512i dn_z_add(__m512i x, __m512i y) { return _mm512_add_epi64(x, y); }
DN_AVX512_TARGET static inline void dn_z_store(uint64_t* p, __m512i v) { _mm512_storeu_si512((void*)p, v); }

DN_AVX512_TARGET static void dn_mismatches_avx512(int K, const uint64_t* a, const int32_t* krow, const uint64_t* W,
                                                  int Fp, int32_t* counts)
{
    DN_MISMATCH_512_LOOP(__m512i, dn_z_zero, dn_z_bcast, dn_z_load, dn_z_xor, dn_z_popcnt, dn_z_add, dn_z_store)
}

static inline int dn_pop_cpu_has(int impl)
{
    __builtin_cpu_init();
    if (impl == DN_POP_AVX2)
        return __builtin_cpu_supports("avx2");
    if (impl == DN_POP_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    return impl == DN_POP_SCALAR || impl == DN_POP_AVX512_EMU;
}
#else
#define DN_POP_X86 0
static inline int dn_pop_cpu_has(int impl) { return impl == DN_POP_SCALAR || impl == DN_POP_AVX512_EMU; }
#endif

/* out (P x Cw words) = the signs of C planes of P float32 values (bit c % 64 of word
 * c / 64 set where the value is >= 0; NaN is not): eight pixels at a time, their words
 * kept in registers over a word's 64 channels. */
static void dn_pack_planes_scalar(const float* x, int C, int P, uint64_t* out, int Cw)
{
    for (int word = 0; word < Cw; word++) {
        const int c0 = word * 64, c1 = C < c0 + 64 ? C : c0 + 64;
        for (int p = 0; p < P; p++) {
            uint64_t acc = 0;
            for (int c = c0; c < c1; c++)
                acc |= (uint64_t)(x[(size_t)c * P + p] >= 0) << (c - c0);
            out[(size_t)p * Cw + word] = acc;
        }
    }
}

#if DN_POP_X86
__attribute__((target("avx2"))) static void dn_pack_planes_avx2(const float* x, int C, int P, uint64_t* out, int Cw)
{
    const __m256 zero = _mm256_setzero_ps();
    const int P8 = P / 8 * 8;
    for (int word = 0; word < Cw; word++) {
        const int c0 = word * 64, c1 = C < c0 + 64 ? C : c0 + 64;
        for (int p0 = 0; p0 < P8; p0 += 8) {
            __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
            for (int c = c0; c < c1; c++) {
                const __m256i bit = _mm256_set1_epi64x((long long)(1ULL << (c - c0)));
                const __m256i m = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(x + (size_t)c * P + p0), zero,
                                                                    _CMP_GE_OQ));
                lo = _mm256_or_si256(lo, _mm256_and_si256(bit, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m))));
                hi = _mm256_or_si256(hi,
                                     _mm256_and_si256(bit, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1))));
            }
            uint64_t words[8];
            _mm256_storeu_si256((__m256i*)words, lo);
            _mm256_storeu_si256((__m256i*)(words + 4), hi);
            for (int i = 0; i < 8; i++)
                out[(size_t)(p0 + i) * Cw + word] = words[i];
        }
        for (int p = P8; p < P; p++) {
            uint64_t acc = 0;
            for (int c = c0; c < c1; c++)
                acc |= (uint64_t)(x[(size_t)c * P + p] >= 0) << (c - c0);
            out[(size_t)p * Cw + word] = acc;
        }
    }
}
#endif

static inline void dn_pack_planes(int avx2, const float* x, int C, int P, uint64_t* out, int Cw)
{
#if DN_POP_X86
    if (avx2) {
        dn_pack_planes_avx2(x, C, P, out, Cw);
        return;
    }
#endif
    dn_pack_planes_scalar(x, C, P, out, Cw);
}

/* The fastest path this CPU runs. */
static inline int dn_pop_best(void)
{
    if (dn_pop_cpu_has(DN_POP_AVX512))
        return DN_POP_AVX512;
    if (dn_pop_cpu_has(DN_POP_AVX2))
        return DN_POP_AVX2;
    return DN_POP_SCALAR;
}

/* impl must be one that dn_pop_cpu_has (the caller checks); Whi: the high nibbles of W,
 * whose low nibbles W then holds (dn_split_nibbles), for the avx2 path only. */
static inline void dn_mismatches(int impl, int K, const uint64_t* a, const int32_t* krow, const uint64_t* W,
                                 const uint64_t* Whi, int Fp, int32_t* counts)
{
#if DN_POP_X86
    if (impl == DN_POP_AVX512) {
        dn_mismatches_avx512(K, a, krow, W, Fp, counts);
        return;
    }
    if (impl == DN_POP_AVX2) {
        dn_mismatches_avx2(K, a, krow, W, Whi, Fp, counts);
        return;
    }
#endif
    if (impl == DN_POP_AVX512_EMU)
        dn_mismatches_avx512_emu(K, a, krow, W, Fp, counts);
    else
        dn_mismatches_scalar(K, a, krow, W, Fp, counts);
}

#endif /* DEEPNET_POPCOUNT_H */
