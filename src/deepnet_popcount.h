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

/* The image (H * W pixels of Cw words, pixel-major) padded by ph rows and pw columns of
 * zero words: Hp * Wp pixels of Cw words, for the avx2 convolution. */
static void dn_conv_pad_image(const uint64_t* x, int Cw, int H, int W, int ph, int pw, int Hp, int Wp, uint64_t* out)
{
    memset(out, 0, (size_t)Hp * Wp * Cw * sizeof(uint64_t));
    for (int iy = 0; iy < H; iy++)
        memcpy(out + ((size_t)(iy + ph) * Wp + pw) * Cw, x + (size_t)iy * W * Cw, (size_t)W * Cw * sizeof(uint64_t));
}

/* The avx2 convolution's operands: tables (256 x 32 bytes), byte i of table 16 u + v the bits
 * that differ between nibbles i % 16 and u, plus 16 times those between i % 16 and v (two
 * pixels' counts in the two halves of a byte); Fn (Fq / 64 passes x K rows x 16 nibbles x 64 bytes),
 * byte j of pass g, row k, nibble c: nibble c of filter 64 g + j's word k (0 past Fp). */
static void dn_conv_operands(const uint64_t* Wbits, int K, int Fp, int Fq, uint8_t* tables, uint8_t* Fn)
{
    for (int uv = 0; uv < 256; uv++)
        for (int i = 0; i < 32; i++)
            tables[uv * 32 + i] = (uint8_t)(__builtin_popcount((unsigned)((i & 15) ^ (uv >> 4))) +
                                             16 * __builtin_popcount((unsigned)((i & 15) ^ (uv & 15))));
    for (int g = 0; g < Fq / 64; g++)
        for (int k = 0; k < K; k++)
            for (int c = 0; c < 16; c++)
                for (int j = 0; j < 64; j++) {
                    const int f = 64 * g + j;
                    Fn[(((size_t)g * K + k) * 16 + c) * 64 + j] =
                        f < Fp ? (uint8_t)((Wbits[(size_t)k * Fp + f] >> (4 * c)) & 15) : 0;
                }
}

/* base (Fp rows of Pb >= P ints: filter f's at [f][p]) for the avx2 convolution: C * (window
 * positions of flat output pixel p inside the image) + 2 * (the set bits of filter f at the
 * positions in the padding), which the zero words count as mismatches; 0 past P.  pop: kh *
 * kw * Fp scratch.  Wbits: the packed filters (kh * kw * Cw rows of Fp words). */
static void dn_conv_base(int C, int Cw, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw, int OH,
                         int OW, const uint64_t* Wbits, int Fp, int32_t* pop, int32_t* base, int Pb)
{
    const int P = OH * OW;
    for (int s = 0; s < kh * kw; s++)
        for (int f = 0; f < Fp; f++) {
            int32_t bits = 0;
            for (int cw = 0; cw < Cw; cw++)
                bits += (int32_t)__builtin_popcountll(Wbits[((size_t)s * Cw + cw) * Fp + f]);
            pop[(size_t)s * Fp + f] = bits;
        }
    memset(base, 0, (size_t)Fp * Pb * sizeof(int32_t));
    for (int p = 0; p < P; p++) {
        const int oy = p / OW, ox = p % OW;
        int inside = 0;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                const int iy = oy * sh - ph + ky, ix = ox * sw - pw + kx;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
                    inside++;
                    continue;
                }
                const int32_t* q = pop + (size_t)(ky * kw + kx) * Fp;
                for (int f = 0; f < Fp; f++)
                    base[(size_t)f * Pb + p] += 2 * q[f];
            }
        for (int f = 0; f < Fp; f++)
            base[(size_t)f * Pb + p] += C * inside;
    }
}

/* Where the avx2 convolution leaves filter f's count in a pixel's row of Fq int16 (the
 * order its byte counts widen in: per 64 filters, [0-7 | 16-23], [8-15 | 24-31], [32-39 |
 * 48-55], [40-47 | 56-63]). */
static inline int dn_conv_count_slot(int f)
{
    const int g = f & 63;
    return (f - g) + ((g >> 5) * 2 + ((g >> 3) & 1)) * 16 + ((g >> 4) & 1) * 8 + (g & 7);
}

/* outi[f * stride + q] = base[f * Pb + q] - 2 * the count of filter f at pixel q, for the n
 * pixels of rows of Fq int16 counts (dn_conv_run) and the F filters. */
static void dn_conv_dots(int n, const int16_t* counts, int Fq, int F, const int32_t* base, size_t Pb, int32_t* outi,
                         size_t stride)
{
    for (int f = 0; f < F; f++) {
        const int slot = dn_conv_count_slot(f);
        for (int q = 0; q < n; q++)
            outi[(size_t)f * stride + q] = base[(size_t)f * Pb + q] - 2 * (int32_t)counts[(size_t)q * Fq + slot];
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

/* The avx2 convolution of a run of output pixels, 4 pixels (flat: p = oy * OW + ox) by 64
 * filters at a time.  Each nibble place of two pixels' window words picks one of 256 tables
 * (the bits that differ from each filter nibble value: the first pixel's in the low half of
 * a byte, the second's in the high half), and vpshufb looks the 64 filters' nibbles at that
 * place up in it: one vpshufb per 32 filters, 4 channels and two pixels.  Three lookups
 * (at most 12 a half) are summed before the halves go to the pixels' byte counts (at most
 * 64 a word), which go to int16 every 3 words, and the int16 counts of the 4 pixels
 * are stored as rows of filters at the end.  pad: the image padded by dn_conv_pad_image (Wp
 * pixels of Cw words a row); koff[k]: window word k's offset from its pixel's window corner;
 * Fn, tables: dn_conv_operands.  K * 64 < 32768 (the int16 counts). */
/* Pixels (x0, x1) and (x2, x3) at nibble place c (their table at 512 * (x0's nibble) + 32 *
 * (x1's), which rorx by ra = 4c - 9 and rb = 4c - 5 (mod 64) and masks find), for the 64
 * filters' nibbles there (Fn bytes off0, off1): FIRST starts the sums of three lookups
 * (ymm8-11: pair, filter half), NEXT adds to them. */
#define DN_PAIR_TABLE(xa, xb, ra, rb)                                                                           \
    "rorx $" #ra ", %[" #xa "], %[t]\n\t"                                                                       \
    "and $7680, %[t]\n\t"                                                                                       \
    "rorx $" #rb ", %[" #xb "], %[u]\n\t"                                                                       \
    "and $480, %[u]\n\t"                                                                                        \
    "or %[u], %[t]\n\t"                                                                                         \
    "vmovdqu (%[tb],%[t]), %%ymm14\n\t"
#define DN_FIRST(acc, fn) "vpshufb %%" fn ", %%ymm14, %%" acc "\n\t"
#define DN_NEXT(acc, fn)                                                                                        \
    "vpshufb %%" fn ", %%ymm14, %%ymm15\n\t"                                                                    \
    "vpaddb %%ymm15, %%" acc ", %%" acc "\n\t"
#define DN_LOAD_FN(off0, off1)                                                                                  \
    "vmovdqu " #off0 "(%[fn]), %%ymm12\n\t"                                                                     \
    "vmovdqu " #off1 "(%[fn]), %%ymm13\n\t"
#define DN_NIB_FIRST(off0, off1, ra, rb)                                                                        \
    DN_LOAD_FN(off0, off1)                                                                                      \
    DN_PAIR_TABLE(x0, x1, ra, rb) DN_FIRST("ymm8", "ymm12") DN_FIRST("ymm9", "ymm13")                          \
    DN_PAIR_TABLE(x2, x3, ra, rb) DN_FIRST("ymm10", "ymm12") DN_FIRST("ymm11", "ymm13")
#define DN_NIB_NEXT(off0, off1, ra, rb)                                                                         \
    DN_LOAD_FN(off0, off1)                                                                                      \
    DN_PAIR_TABLE(x0, x1, ra, rb) DN_NEXT("ymm8", "ymm12") DN_NEXT("ymm9", "ymm13")                            \
    DN_PAIR_TABLE(x2, x3, ra, rb) DN_NEXT("ymm10", "ymm12") DN_NEXT("ymm11", "ymm13")
/* The high halves of a sum to the second pixel's byte counts; the whole sum to the first's,
 * which thereby gets 16 times the second's too (mod 256), taken off before they widen. */
#define DN_SPLIT(acc, lo, hi)                                                                                   \
    "vpsrlw $4, %%" acc ", %%ymm15\n\t"                                                                         \
    "vpand %[mask], %%ymm15, %%ymm15\n\t"                                                                       \
    "vpaddb %%ymm15, %[" hi "], %[" hi "]\n\t"                                                                  \
    "vpaddb %%" acc ", %[" lo "], %[" lo "]\n\t"
#define DN_EXTRACT                                                                                              \
    DN_SPLIT("ymm8", "a00", "a10") DN_SPLIT("ymm9", "a01", "a11") DN_SPLIT("ymm10", "a20", "a30")               \
    DN_SPLIT("ymm11", "a21", "a31")

__attribute__((target("avx2"), noinline)) static void dn_conv_words_avx2(int n, const uint64_t* const px[4],
                                                                          const int32_t* koff, const uint8_t* Fn,
                                                                          const uint8_t* tables, __m256i cnt[16])
{
    /* a<r><h>: byte counts of pixel r, filters 32 h to 32 h + 31 */
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    const __m256i mask = _mm256_set1_epi8(15);
    for (int k = 0; k < n; k++, Fn += 16 * 64) {
        const uint64_t x0 = px[0][koff[k]], x1 = px[1][koff[k]], x2 = px[2][koff[k]], x3 = px[3][koff[k]];
        uint64_t t, u;
        /* In assembly: compilers reorder the lookups and spill the accumulators. */
        __asm__(
            DN_NIB_FIRST(0, 32, 55, 59)
            DN_NIB_NEXT(64, 96, 59, 63)
            DN_NIB_NEXT(128, 160, 63, 3)
            DN_EXTRACT
            DN_NIB_FIRST(192, 224, 3, 7)
            DN_NIB_NEXT(256, 288, 7, 11)
            DN_NIB_NEXT(320, 352, 11, 15)
            DN_EXTRACT
            DN_NIB_FIRST(384, 416, 15, 19)
            DN_NIB_NEXT(448, 480, 19, 23)
            DN_NIB_NEXT(512, 544, 23, 27)
            DN_EXTRACT
            DN_NIB_FIRST(576, 608, 27, 31)
            DN_NIB_NEXT(640, 672, 31, 35)
            DN_NIB_NEXT(704, 736, 35, 39)
            DN_EXTRACT
            DN_NIB_FIRST(768, 800, 39, 43)
            DN_NIB_NEXT(832, 864, 43, 47)
            DN_NIB_NEXT(896, 928, 47, 51)
            DN_EXTRACT
            DN_NIB_FIRST(960, 992, 51, 55)
            DN_EXTRACT
            : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
              [a30] "+x"(a30), [a31] "+x"(a31), [t] "=&r"(t), [u] "=&r"(u)
            : [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [fn] "r"(Fn), [tb] "r"(tables), [mask] "m"(mask)
            : "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory");
    }
    /* the first pixels' counts: at most 192, so exact mod 256 */
    const __m256i high = _mm256_set1_epi8((char)0xf0);
    a00 = _mm256_sub_epi8(a00, _mm256_and_si256(_mm256_slli_epi16(a10, 4), high));
    a01 = _mm256_sub_epi8(a01, _mm256_and_si256(_mm256_slli_epi16(a11, 4), high));
    a20 = _mm256_sub_epi8(a20, _mm256_and_si256(_mm256_slli_epi16(a30, 4), high));
    a21 = _mm256_sub_epi8(a21, _mm256_and_si256(_mm256_slli_epi16(a31, 4), high));
    /* int16 counts of pixel r: filters [0-7 | 16-23], [8-15 | 24-31], [32-39 | 48-55], [40-47 | 56-63] */
    const __m256i zero = _mm256_setzero_si256();
#define DN_CONV_FLUSH(r)                                                                                       \
    cnt[4 * r] = _mm256_add_epi16(cnt[4 * r], _mm256_unpacklo_epi8(a##r##0, zero));                             \
    cnt[4 * r + 1] = _mm256_add_epi16(cnt[4 * r + 1], _mm256_unpackhi_epi8(a##r##0, zero));                     \
    cnt[4 * r + 2] = _mm256_add_epi16(cnt[4 * r + 2], _mm256_unpacklo_epi8(a##r##1, zero));                     \
    cnt[4 * r + 3] = _mm256_add_epi16(cnt[4 * r + 3], _mm256_unpackhi_epi8(a##r##1, zero));
    DN_CONV_FLUSH(0)
    DN_CONV_FLUSH(1)
    DN_CONV_FLUSH(2)
    DN_CONV_FLUSH(3)
#undef DN_CONV_FLUSH
}
#undef DN_EXTRACT
#undef DN_SPLIT
#undef DN_NIB_NEXT
#undef DN_NIB_FIRST
#undef DN_LOAD_FN
#undef DN_NEXT
#undef DN_FIRST
#undef DN_PAIR_TABLE

/* The counts of a run of n output pixels (flat: p = oy * OW + ox, from p0, a multiple of 4)
 * into rows of Fq int16 (counts + q * Fq: pixel p0 + q, dn_conv_count_slot's order), 4
 * pixels at a time; the rows past n up to a multiple of 4 repeat the last pixel. */
__attribute__((target("avx2"))) static void dn_conv_run_avx2(int K, int n, int p0, const uint64_t* pad, int Wp,
                                                             int Cw, int sh, int sw, int OW, const int32_t* koff,
                                                             const uint8_t* Fn, const uint8_t* tables, int Fq,
                                                             int16_t* counts)
{
    for (int q0 = 0; q0 < n; q0 += 4) {
        const int valid = n - q0 < 4 ? n - q0 : 4;
        const uint64_t* px[4];
        for (int r = 0; r < 4; r++) {
            const int p = p0 + q0 + (r < valid ? r : valid - 1);
            px[r] = pad + ((size_t)(p / OW) * sh * Wp + (size_t)(p % OW) * sw) * Cw;
        }
        for (int g = 0; g < Fq / 64; g++) {
            __m256i cnt[16];
            for (int j = 0; j < 16; j++)
                cnt[j] = _mm256_setzero_si256();
            for (int k0 = 0; k0 < K; k0 += 3)
                dn_conv_words_avx2(K - k0 < 3 ? K - k0 : 3, px, koff + k0, Fn + ((size_t)g * K + k0) * 16 * 64, tables,
                                   cnt);
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < 4; j++)
                    _mm256_storeu_si256((__m256i*)(counts + (size_t)(q0 + r) * Fq + 64 * g + 16 * j), cnt[4 * r + j]);
        }
    }
}

/* outf[f * fstride + q] = (float)(base[f * Pb + q] - 2 * count) + bias[f] for the n pixels
 * of counts (dn_conv_run_avx2's rows, readable up to n rounded up to 8) and the F filters.
 * First into stage (Fq rows of R >= n rounded up to 8 int16: slot s's counts at [s][q]), 8
 * pixels by 16 slots at a time transposed (int16 8 x 8 in each lane); then plane by plane,
 * each written in order.  base: readable for n rounded up to 8 pixels. */
__attribute__((target("avx2"))) static void dn_conv_emit_avx2(int n, const int16_t* counts, int Fq, int F,
                                                              const int32_t* base, size_t Pb, const float* bias,
                                                              float* outf, size_t fstride, int16_t* stage, int R)
{
    for (int q = 0; q < n; q += 8)
        for (int s0 = 0; s0 < Fq; s0 += 16) {
            __m256i r[8], t[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_si256((const __m256i*)(counts + (size_t)(q + i) * Fq + s0));
            for (int i = 0; i < 4; i++) {
                t[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
            }
            /* t[2i]: pixels 2i, 2i + 1 at slots 0-3 (each lane); t[2i + 1]: at slots 4-7 */
            for (int h = 0; h < 2; h++) {
                r[4 * h] = _mm256_unpacklo_epi32(t[h], t[2 + h]);
                r[4 * h + 1] = _mm256_unpackhi_epi32(t[h], t[2 + h]);
                r[4 * h + 2] = _mm256_unpacklo_epi32(t[4 + h], t[6 + h]);
                r[4 * h + 3] = _mm256_unpackhi_epi32(t[4 + h], t[6 + h]);
            }
            /* r[4h + i]: pixels 0-3 (i < 2) or 4-7 at slots 4h + 2 (i % 2), 4h + 2 (i % 2) + 1 */
            for (int e = 0; e < 8; e++) {
                const int h = e >> 2, i = (e >> 1) & 1;
                const __m256i lo = r[4 * h + i], hi = r[4 * h + 2 + i];
                const __m256i v = e & 1 ? _mm256_unpackhi_epi64(lo, hi) : _mm256_unpacklo_epi64(lo, hi);
                /* v: slot s0 + e (low lane) and s0 + 8 + e (high lane) at pixels 0-7 */
                _mm_storeu_si128((__m128i*)(stage + (size_t)(s0 + e) * R + q), _mm256_castsi256_si128(v));
                _mm_storeu_si128((__m128i*)(stage + (size_t)(s0 + 8 + e) * R + q), _mm256_extracti128_si256(v, 1));
            }
        }
    const int full = n / 8 * 8;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - full), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int f = 0; f < F; f++) {
        const int16_t* c16 = stage + (size_t)dn_conv_count_slot(f) * R;
        const int32_t* bf = base + (size_t)f * Pb;
        const __m256 b = _mm256_set1_ps(bias[f]);
        float* dst = outf + (size_t)f * fstride;
#define DN_EMIT8(q)                                                                                                  _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(                                                                                 _mm256_loadu_si256((const __m256i*)(bf + (q))),                                                                  _mm256_slli_epi32(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i*)(c16 + (q)))), 1))),                   b)
        for (int q = 0; q < full; q += 8)
            _mm256_storeu_ps(dst + q, DN_EMIT8(q));
        if (full < n)
            _mm256_maskstore_ps(dst + full, mask, DN_EMIT8(full));
#undef DN_EMIT8
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
    if (impl == DN_POP_AVX2) /* the convolution's table lookups take bmi2's rorx */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
    if (impl == DN_POP_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    return impl == DN_POP_SCALAR || impl == DN_POP_AVX512_EMU;
}
#else
#define DN_POP_X86 0
static inline int dn_pop_cpu_has(int impl) { return impl == DN_POP_SCALAR || impl == DN_POP_AVX512_EMU; }
#endif

/* dn_conv_run_avx2 and dn_conv_emit_avx2 where the CPU has them (the caller checks);
 * nothing elsewhere. */
static inline void dn_conv_run(int K, int n, int p0, const uint64_t* pad, int Wp, int Cw, int sh, int sw, int OW,
                               const int32_t* koff, const uint8_t* Fn, const uint8_t* tables, int Fq, int16_t* counts)
{
#if DN_POP_X86
    dn_conv_run_avx2(K, n, p0, pad, Wp, Cw, sh, sw, OW, koff, Fn, tables, Fq, counts);
#else
    (void)K, (void)n, (void)p0, (void)pad, (void)Wp, (void)Cw, (void)sh, (void)sw, (void)OW, (void)koff, (void)Fn;
    (void)tables, (void)Fq, (void)counts;
#endif
}

static inline void dn_conv_emit(int n, const int16_t* counts, int Fq, int F, const int32_t* base, size_t Pb,
                                const float* bias, float* outf, size_t fstride, int16_t* stage, int R)
{
#if DN_POP_X86
    dn_conv_emit_avx2(n, counts, Fq, F, base, Pb, bias, outf, fstride, stage, R);
#else
    (void)n, (void)counts, (void)Fq, (void)F, (void)base, (void)Pb, (void)bias, (void)outf, (void)fstride;
    (void)stage, (void)R;
#endif
}

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
/* Eight pixels at a time: vmovmskps gives a channel's 8 signs as a byte (bit i: pixel i),
 * read plane by plane (sequential loads); a block's 64 channel bytes fill two registers, and
 * vpmovmskb then reads bit i of every byte, one pixel's word per step (the bytes doubled in
 * between).  Up to 64 blocks at a time, so that their bytes stay in the L1 cache. */
__attribute__((target("avx2"))) static void dn_pack_planes_avx2(const float* x, int C, int P, uint64_t* out, int Cw)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(P % 8), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const int blocks = (P + 7) / 8;
    uint8_t bytes[64 * 64] __attribute__((aligned(32)));
    for (int word = 0; word < Cw; word++) {
        const int c0 = word * 64, nc = (C < c0 + 64 ? C : c0 + 64) - c0;
        for (int b0 = 0; b0 < blocks; b0 += 64) {
            const int nb = blocks - b0 < 64 ? blocks - b0 : 64;
            if (nc < 64)
                memset(bytes, 0, sizeof bytes);
            for (int c = 0; c < nc; c++) {
                const float* row = x + (size_t)(c0 + c) * P;
                for (int b = 0; b < nb; b++) {
                    const int p = (b0 + b) * 8;
                    /* the masked-off lanes of a last, partial block load 0 (+1): never stored */
                    const __m256 v = p + 8 <= P ? _mm256_loadu_ps(row + p) : _mm256_maskload_ps(row + p, tail);
                    bytes[b * 64 + c] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ));
                }
            }
            for (int b = 0; b < nb; b++) {
                const int p = (b0 + b) * 8, n = P - p < 8 ? P - p : 8;
                __m256i lo = _mm256_load_si256((const __m256i*)(bytes + b * 64));
                __m256i hi = _mm256_load_si256((const __m256i*)(bytes + b * 64 + 32));
                uint64_t w[8];
                for (int i = 7; i >= 0; i--) {
                    w[i] = (uint64_t)(unsigned)_mm256_movemask_epi8(lo) | (uint64_t)(unsigned)_mm256_movemask_epi8(hi) << 32;
                    lo = _mm256_add_epi8(lo, lo);
                    hi = _mm256_add_epi8(hi, hi);
                }
                for (int i = 0; i < n; i++)
                    out[(size_t)(p + i) * Cw + word] = w[i];
            }
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
