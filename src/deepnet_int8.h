/* The int8 convolution of docs' INT8_SPEC: uint8 activations x int8 weights, int32 sums, a
 * float32 requantization epilogue, optional fused ReLU and 2x2 max-pool.
 *
 * One task computes some whole images, or output rows [r0, r1) of one image: it pads each
 * image (x_zero in the border), packs their im2col as uint8 [K4][pixels][4] (the images'
 * pixels one after the other, row-major, k = 4 k4 + j; k >= K reads some valid byte that
 * meets a zero weight), multiplies it by the packed filters into int32 [FNpad][pixels], then
 * requantizes (and pools) each output channel into its contiguous NCHW plane.
 *
 * Every path gives the same integers; they differ in the dot product of 4 uint8 x 4 int8:
 *   scalar               plain C (also what other architectures run),
 *   avx2                 vpmaddwd on even/odd bytes widened to int16 (exact: vpmaddubsw
 *                        would saturate 2*255*127), weights pre-widened in the packing,
 *   avxvnni(-emulated)   256-bit vpdpbusd, or the same loop with vpdpbusd done in AVX2,
 *   avx512vnni(-emulated) 512-bit vpdpbusd, or the same loop on pairs of 256-bit vectors.
 * The paths are the bodies of deepnet_int8_body.h, included once per path under its
 * `#pragma GCC target`; dn8_supported asks CPUID which of them this CPU runs.  The AVX2 path
 * also has exact integer Winograd convolutions, F(2x2, 3x3) and F(4x4, 3x3), for 3x3, stride-1
 * layers with a uint8 output (deepnet_int8_winograd.h, deepnet_int8_winograd4.h): without VNNI,
 * a multiply-add of 8-bit values costs as much as a float32 one, so only fewer products make
 * it faster than the float32 (Winograd) convolution.
 */
#ifndef DEEPNET_INT8_H
#define DEEPNET_INT8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DN8_X86 1
#include <immintrin.h>
#else
#define DN8_X86 0
#endif

#define DN8_SCALAR 0
#define DN8_AVX2 1
#define DN8_AVXVNNI_EMULATED 2
#define DN8_AVX512VNNI_EMULATED 3
#define DN8_AVXVNNI 4
#define DN8_AVX512VNNI 5
#define DN8_PATHS 6

#define DN8_PIXEL_PAD 32    /* a band's pixels are padded to whole register tiles of every path */
#define DN8_CHANNEL_PAD 8   /* the packed filters' channels likewise (zero weights) */
#define DN8_ROUND_TILES(T) (((T) + 15) / 16 * 16)
/* Winograd's V and M (int32): `count` matrices (16 for F(2x2, 3x3), 36 for F(4x4, 3x3)), one
 * a cache line further than a multiple of 4 KiB apart would be, so that the loads of a tile's
 * transform do not share a cache set */
#define DN8_WINOGRAD_VX(C, T) ((size_t)(((C) + 1) / 2) * (DN8_ROUND_TILES(T) + 8) + 16)
#define DN8_WINOGRAD_MX(FNpad, T) ((size_t)(FNpad) * DN8_ROUND_TILES(T) + 16)
#define DN8_WINOGRAD_V(count, C, T) ((size_t)(count) * DN8_WINOGRAD_VX(C, T))
#define DN8_WINOGRAD_M(count, FNpad, T) ((size_t)(count) * DN8_WINOGRAD_MX(FNpad, T) + 8)
#define DN8_ROUND_PIXELS(P) (((P) + DN8_PIXEL_PAD - 1) / DN8_PIXEL_PAD * DN8_PIXEL_PAD)
/* cols' row stride: 16 pixels of slack for the im2col's overshoot (deepnet_int8_body.h) */
#define DN8_STRIDE(P) (DN8_ROUND_PIXELS(P) + 16)
#define DN8_COLS(K4, P) ((size_t)(K4) * DN8_STRIDE(P))     /* uint32 of a task's cols */
#define DN8_SUMS(FNpad, P) ((size_t)(FNpad) * DN8_ROUND_PIXELS(P))   /* int32 of its sums */
/* a sum + comp: both wrap mod 2^32, the true result fits int32 (conv_int8 checks the bound) */
#define DN8_ADD(a, b) ((int32_t)((uint32_t)(a) + (uint32_t)(b)))

typedef struct {
    int C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, Hp, Wp;
    int K, K4, FN, FNpad;
    const int32_t* w4;    /* [FNpad][K4]: 4 int8 weights per int32, k = 4 k4 + byte */
    const int32_t* w16;   /* [FNpad][K4][2]: int16 pairs (w0, w2) and (w1, w3) */
    const int32_t* offsets;   /* [K4][4]: where k = 4 k4 + j starts in the padded image */
    const int32_t* wino;  /* [16][FNpad][C2]: Winograd's filters, int16 pairs (deepnet_int8_winograd.h), */
    int winograd4;        /* or with 1 here, [36][FNpad][C2]: F(4x4, 3x3)'s (deepnet_int8_winograd4.h) */
    const int32_t* bias;  /* [FN]: bias_q */
    const int32_t* wsum;  /* [FN]: sum(w): the sums are of w x, acc = sum + bias - x_zero sum(w) */
    const float* scale;   /* [FN] */
    int x_zero, out_zero, relu, pool, out_float;
} dn8_conv;

/* The requantization of one accumulator (INT8_SPEC): float32 multiply, clip to +-512 (before
 * or after rint: the bounds are integers), rint half to even, + out_zero, clip. */
static inline uint8_t dn8_round_clip(float y, int out_zero, int low)
{
    y = y >= -512.0f ? y : -512.0f;   /* NaN -> -512, as vmaxps(y, -512) gives */
    y = y <= 512.0f ? y : 512.0f;
    int q = (int)rintf(y) + out_zero;
    return (uint8_t)(q < low ? low : q > 255 ? 255 : q);
}

static inline uint8_t dn8_requantize(int32_t acc, float scale, int out_zero, int low)
{
    return dn8_round_clip((float)acc * scale, out_zero, low);
}

static inline float dn8_activate(int32_t acc, float scale, int relu)
{
    float y = (float)acc * scale;
    return relu && !(y > 0.0f) ? 0.0f : y;
}

/* n bytes from source to target (no overlap): a padded image's rows are short, and there
 * fixed-size copies that the compiler inlines cost less than a call to memcpy. */
static inline void dn8_copy_bytes(uint8_t* target, const uint8_t* source, size_t n)
{
    size_t i;
    if (n > 64) {
        memcpy(target, source, n);
    } else if (n >= 8) {
        for (i = 0; i + 8 <= n; i += 8)
            memcpy(target + i, source + i, 8);
        if (i < n)
            memcpy(target + n - 8, source + n - 8, 8);
    } else if (n >= 4) {
        memcpy(target, source, 4);
        memcpy(target + n - 4, source + n - 4, 4);
    } else {
        for (i = 0; i < n; i++)
            target[i] = source[i];
    }
}

/* n bytes of x_zero at target, 16 at a time: up to 15 bytes past them are written too. */
static inline void dn8_fill_chunks(uint8_t* target, const uint8_t zeros[16], size_t n)
{
    size_t i;
    for (i = 0; i < n; i += 16)
        memcpy(target + i, zeros, 16);
}

/* The padded image, C planes of Hp x Wp, the border x_zero.  Rows are short, so each is copied
 * 16 bytes at a time and the border after it (to the next row) written in one 8-byte store:
 * both run past their end into what is written next (the next row, the plane's bottom, the
 * next plane's top), and past the padded image by up to 15 bytes (callers leave 64).  A row
 * whose 16-byte reads would pass the image's end is copied exactly. */
static inline void dn8_pad_image(const dn8_conv* cv, const uint8_t* image, uint8_t* padded)
{
    const size_t W = (size_t)cv->W, Wp = (size_t)cv->Wp, plane = (size_t)cv->Hp * Wp;
    const size_t top = (size_t)cv->ph * Wp + (size_t)cv->pw;   /* border bytes before the first row */
    const size_t gap = Wp - W;                                 /* from a row's end to the next row */
    const size_t bottom = plane - top - (size_t)(cv->H - 1) * Wp - W;   /* after the last row */
    const size_t chunked = (W + 15) / 16 * 16;
    const uint8_t* end = image + (size_t)cv->C * cv->H * W;
    uint8_t zeros[16];
    size_t i;
    int c, y;
    if (cv->ph == 0 && cv->pw == 0) {
        memcpy(padded, image, (size_t)cv->C * plane);
        return;
    }
    memset(zeros, cv->x_zero, sizeof zeros);
    for (c = 0; c < cv->C; c++) {
        uint8_t* row = padded + (size_t)c * plane + top;
        const uint8_t* source = image + (size_t)c * cv->H * W;
        dn8_fill_chunks(row - top, zeros, top);
        for (y = 0; y < cv->H; y++, row += Wp, source += W) {
            if ((size_t)(end - source) >= chunked)
                for (i = 0; i < W; i += 16)
                    memcpy(row + i, source + i, 16);
            else
                dn8_copy_bytes(row, source, W);
            if (gap <= 8)
                memcpy(row + W, zeros, 8);
            else
                dn8_fill_chunks(row + W, zeros, gap);
        }
        dn8_fill_chunks(row - Wp + W, zeros, bottom);
    }
}

/* The im2col of images [n0, n1) of one pixel each (an affine layer: H = W = 1, no padding)
 * into cols [K4][stride], image n at pixel n - n0: a transpose of their bytes, 4 channels a
 * uint32 (little-endian, as dn8_im2col's), the last partial one through the offsets. */
static inline void dn8_im2col_pixels(const dn8_conv* cv, const uint8_t* x, int n0, int n1, int stride,
                                     uint32_t* cols)
{
    const size_t C = (size_t)cv->C;
    const int whole = cv->C / 4;
    int k4, n, j;
    for (k4 = 0; k4 < whole; k4++) {
        uint32_t* target = cols + (size_t)k4 * stride;
        const uint8_t* source = x + (size_t)n0 * C + 4 * (size_t)k4;
        for (n = n0; n < n1; n++, source += C)
            memcpy(target + (n - n0), source, 4);
    }
    for (k4 = whole; k4 < cv->K4; k4++)
        for (n = n0; n < n1; n++) {
            uint32_t packed = 0;
            for (j = 0; j < 4; j++)
                packed |= (uint32_t)x[(size_t)n * C + cv->offsets[4 * k4 + j]] << (8 * j);
            cols[(size_t)k4 * stride + (n - n0)] = packed;
        }
}

#define DN8_SUFFIX scalar
#define DN8_KIND DN8_SCALAR
#include "deepnet_int8_body.h"
#undef DN8_SUFFIX
#undef DN8_KIND

#if DN8_X86
#pragma GCC push_options
#pragma GCC target("avx2")
typedef struct { __m256i e, o; } dn8_pair256;   /* even and odd bytes widened to int16 */
typedef struct { __m256i lo, hi; } dn8_x2;      /* 16 int32 lanes as two 256-bit halves */

/* vpdpbusd in AVX2, exactly: u8 bytes split into even/odd int16 lanes, int8 bytes
 * sign-extended likewise, two vpmaddwd (pairs of products fit int32). */
static inline __m256i dn8_dpbusd_emulated(__m256i acc, __m256i a, __m256i w)
{
    __m256i a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00FF));
    __m256i a_odd = _mm256_srli_epi16(a, 8);
    __m256i w_even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
    __m256i w_odd = _mm256_srai_epi16(w, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(a_even, w_even), _mm256_madd_epi16(a_odd, w_odd)));
}
#define DN8_SUFFIX avx2
#define DN8_KIND DN8_AVX2
#include "deepnet_int8_body.h"
#undef DN8_SUFFIX
#undef DN8_KIND
#include "deepnet_int8_winograd.h"
#include "deepnet_int8_winograd4.h"
#define DN8_SUFFIX avxvnni_emulated
#define DN8_KIND DN8_AVXVNNI_EMULATED
#include "deepnet_int8_body.h"
#undef DN8_SUFFIX
#undef DN8_KIND
#define DN8_SUFFIX avx512vnni_emulated
#define DN8_KIND DN8_AVX512VNNI_EMULATED
#include "deepnet_int8_body.h"
#undef DN8_SUFFIX
#undef DN8_KIND
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,avxvnni")
#define DN8_SUFFIX avxvnni
#define DN8_KIND DN8_AVXVNNI
#include "deepnet_int8_body.h"
#undef DN8_SUFFIX
#undef DN8_KIND
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vnni")
#define DN8_SUFFIX avx512vnni
#define DN8_KIND DN8_AVX512VNNI
#include "deepnet_int8_body.h"
#undef DN8_SUFFIX
#undef DN8_KIND
#pragma GCC pop_options
#endif

/* Whether this build has the path and this CPU runs it. */
static inline int dn8_supported(int path)
{
    switch (path) {
    case DN8_SCALAR:
        return 1;
#if DN8_X86
    case DN8_AVX2:
    case DN8_AVXVNNI_EMULATED:
    case DN8_AVX512VNNI_EMULATED:
        return __builtin_cpu_supports("avx2");
    case DN8_AVXVNNI:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    case DN8_AVX512VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512vnni");
#endif
    default:
        return 0;
    }
}

/* Images [n0, n1) of x, or with n1 = n0 + 1 output rows [r0, r1) of it, into out (the batch's
 * uint8 or float32 output; r0, r1 even when pooling).  padded holds C Hp Wp + 64 bytes. */
static inline void dn8_task(const dn8_conv* cv, int path, const uint8_t* x, int n0, int n1, int r0, int r1,
                            uint8_t* padded, uint32_t* cols, int32_t* sums, void* out)
{
    switch (path) {
#if DN8_X86
    case DN8_AVX2: dn8_task_avx2(cv, x, n0, n1, r0, r1, padded, cols, sums, out); break;
    case DN8_AVXVNNI_EMULATED: dn8_task_avxvnni_emulated(cv, x, n0, n1, r0, r1, padded, cols, sums, out); break;
    case DN8_AVX512VNNI_EMULATED:
        dn8_task_avx512vnni_emulated(cv, x, n0, n1, r0, r1, padded, cols, sums, out);
        break;
    case DN8_AVXVNNI: dn8_task_avxvnni(cv, x, n0, n1, r0, r1, padded, cols, sums, out); break;
    case DN8_AVX512VNNI: dn8_task_avx512vnni(cv, x, n0, n1, r0, r1, padded, cols, sums, out); break;
#endif
    default: dn8_task_scalar(cv, x, n0, n1, r0, r1, padded, cols, sums, out); break;
    }
}

/* The AVX2 path's Winograd convolution of whole images [n0, n1) (3x3, stride 1; conv_int8
 * calls it only where the CPU has AVX2). */
static inline void dn8_winograd_task(const dn8_conv* cv, const uint8_t* x, int n0, int n1, uint8_t* padded,
                                     int32_t* V, int32_t* M, int32_t* sums, void* out)
{
#if DN8_X86
    if (cv->winograd4)
        dn8_winograd4_task_avx2(cv, x, n0, n1, padded, V, M, out);
    else
        dn8_winograd_task_avx2(cv, x, n0, n1, padded, V, M, sums, out);
#else
    (void)cv, (void)x, (void)n0, (void)n1, (void)padded, (void)V, (void)M, (void)sums, (void)out;
#endif
}

/* quantize_uint8 and dequantize_uint8 of INT8_SPEC (NaN quantizes to 0). */
static inline void dn8_quantize(const float* x, size_t n, float inv_scale, int zero, uint8_t* out)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = dn8_round_clip(x[i] * inv_scale, zero, 0);
}

static inline void dn8_dequantize(const uint8_t* q, size_t n, float scale, int zero, float* out)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = (float)((int32_t)q[i] - zero) * scale;
}

#endif /* DEEPNET_INT8_H */
