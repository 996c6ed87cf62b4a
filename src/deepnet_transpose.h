/* The convolutions' epilogue: from the gather GEMM's result, pixels x filters (row stride
 * ld), to the output's filters x pixels (row stride out_ld), adding the bias and applying
 * the ReLU on the way:
 *
 *   out[f, p] = act(product[p, f] + bias[f])     for p < rows, f < columns
 *
 * act is max(., 0) with relu (NaN stays NaN, -0 stays -0, as `value < 0 ? 0 : value`),
 * else the identity; bias may be NULL.  For float16 the ReLU acts before the rounding: a
 * value in (-2^-25, 0) gives +0 where rounding first would give -0 (equal as numbers).  With AVX, float results go through 8 x 8 blocks
 * transposed in registers and are stored as whole vectors (float16: one F16C conversion
 * per vector); building them element by element in memory stalled on store forwarding.
 * The edges, double and CPUs without AVX take the scalar loop.
 */
#ifndef DN_INCLUDING_BODIES   /* included directly: the kernels, as src/deepnet_isa.h sets them up */
#include "deepnet_isa.h"
#else   /* included by src/deepnet_isa.h once per variant, after the half conversions */

#if defined(__AVX__)

/* Filters f0..f0+7 of pixels p0..p0+7: v[k] holds filter f0+k for the eight pixels. */
static inline void DN_V(dn_transposed_block)(const float *product, int ld, const float *bias, int relu, __m256 v[8])
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(product + (long)i * ld);
    for (int i = 0; i < 8; i += 2) {             /* interleave pairs of rows */
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {             /* then pairs of pairs */
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; k++) {                /* then the 128-bit halves */
        v[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
        v[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int k = 0; k < 8; k++) {
        if (bias)
            v[k] = _mm256_add_ps(v[k], _mm256_set1_ps(bias[k]));
        if (relu)  /* max(0, x) returns x when x is NaN, and -0 for -0 */
            v[k] = _mm256_max_ps(zero, v[k]);
    }
}
#endif

#ifndef DN_STORE_TRANSPOSED_EDGES
/* The scalar loops over the part not covered by whole 8 x 8 blocks: the columns right of
 * the blocks, then the rows below them (not a pass over every row: with the columns all
 * in blocks, that empty loop had cost a few percent of an inference pass).  Without a
 * bias nothing is added, as in the blocks, so a plain transpose copies -0 as -0. */
#define DN_STORE_TRANSPOSED_ELEMENT(T, OUT, CONVERT, ACTIVATE, p, f)                               \
    OUT[(long)(f) * out_ld + (p)] = CONVERT(ACTIVATE(bias ? product[(long)(p) * ld + (f)] + bias[f] \
                                                          : product[(long)(p) * ld + (f)], relu))
#define DN_STORE_TRANSPOSED_EDGES(T, OUT, CONVERT, ACTIVATE, rows_done, columns_done)               \
    if ((columns_done) < columns)                                                                  \
        for (int p = 0; p < (rows_done); p++)                                                      \
            for (int f = (columns_done); f < columns; f++)                                         \
                DN_STORE_TRANSPOSED_ELEMENT(T, OUT, CONVERT, ACTIVATE, p, f);                      \
    for (int p = (rows_done); p < rows; p++)                                                       \
        for (int f = 0; f < columns; f++)                                                          \
            DN_STORE_TRANSPOSED_ELEMENT(T, OUT, CONVERT, ACTIVATE, p, f);

#define DN_IDENTITY(x) (x)
#endif

static inline void DN_V(dn_store_transposed_float)(const float *product, int ld, int rows, int columns,
                                             const float *bias, int relu, float *out, int out_ld)
{
    int rows_done = 0, columns_done = 0;
#if defined(__AVX__)
    rows_done = rows - rows % 8;
    columns_done = columns - columns % 8;
    for (int p0 = 0; p0 < rows_done; p0 += 8)
        for (int f0 = 0; f0 < columns_done; f0 += 8) {
            __m256 v[8];
            DN_V(dn_transposed_block)(product + (long)p0 * ld + f0, ld, bias ? bias + f0 : NULL, relu, v);
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(out + (long)(f0 + k) * out_ld + p0, v[k]);
        }
#endif
    DN_STORE_TRANSPOSED_EDGES(float, out, DN_IDENTITY, dn_activate_float, rows_done, columns_done)
}

static inline void DN_V(dn_store_transposed_half)(const float *product, int ld, int rows, int columns,
                                            const float *bias, int relu, uint16_t *out, int out_ld)
{
    int rows_done = 0, columns_done = 0;
#if defined(__AVX__) && DN_F16C   /* deepnet_half.h set it for this variant */
    rows_done = rows - rows % 8;
    columns_done = columns - columns % 8;
    for (int p0 = 0; p0 < rows_done; p0 += 8)
        for (int f0 = 0; f0 < columns_done; f0 += 8) {
            __m256 v[8];
            DN_V(dn_transposed_block)(product + (long)p0 * ld + f0, ld, bias ? bias + f0 : NULL, relu, v);
            for (int k = 0; k < 8; k++)
                _mm_storeu_si128((__m128i *)(out + (long)(f0 + k) * out_ld + p0),
                                 _mm256_cvtps_ph(v[k], _MM_FROUND_TO_NEAREST_INT));
        }
#endif
    DN_STORE_TRANSPOSED_EDGES(float, out, DN_V(dn_float_to_half), dn_activate_float, rows_done, columns_done)
}

static inline void DN_V(dn_store_transposed_double)(const double *product, int ld, int rows, int columns,
                                              const double *bias, int relu, double *out, int out_ld)
{
    DN_STORE_TRANSPOSED_EDGES(double, out, DN_IDENTITY, dn_activate_double, 0, 0)
}

/* sum[f] += rows[p * ld + f] for p < count, f < n: the bias gradient from the output
 * gradient laid out pixels x filters.  Each sum[f] adds the rows in their order, as the
 * plain double loop does (the same bits), but with two 32-byte vectors of filters held in
 * registers across the pixels: the plain loop re-read and re-wrote sum at every pixel,
 * since the compiler cannot tell that sum and rows do not overlap. */
#ifndef DN_DEFINE_ADD_ROWS
#define DN_DEFINE_ADD_ROWS(T, NAME) DN_DEFINE_ADD_ROWS_(T, NAME)
#define DN_DEFINE_ADD_ROWS_(T, NAME)                                                           \
static inline void NAME(const T *rows, int count, int ld, int n, T *sum)                       \
{                                                                                              \
    typedef T vec __attribute__((vector_size(32), aligned(sizeof(T))));                        \
    enum { VL = 32 / sizeof(T) };                                                              \
    int f = 0;                                                                                 \
    for (; f + 2 * VL <= n; f += 2 * VL) {                                                     \
        vec a0 = *(const vec *)(sum + f), a1 = *(const vec *)(sum + f + VL);                   \
        for (int p = 0; p < count; p++) {                                                      \
            a0 += *(const vec *)(rows + (long)p * ld + f);                                     \
            a1 += *(const vec *)(rows + (long)p * ld + f + VL);                                \
        }                                                                                      \
        *(vec *)(sum + f) = a0;                                                                \
        *(vec *)(sum + f + VL) = a1;                                                           \
    }                                                                                          \
    for (; f < n; f++) {                                                                       \
        T a = sum[f];                                                                          \
        for (int p = 0; p < count; p++)                                                        \
            a += rows[(long)p * ld + f];                                                       \
        sum[f] = a;                                                                            \
    }                                                                                          \
}

#endif /* DN_DEFINE_ADD_ROWS */

DN_DEFINE_ADD_ROWS(float, DN_V(dn_add_rows_float))
DN_DEFINE_ADD_ROWS(double, DN_V(dn_add_rows_double))
#endif /* DN_INCLUDING_BODIES */
