/* Max-pooling over 2x2 windows with stride 2 and no padding (DeepConvNet's pooling).
 *
 * Every window lies inside the plane, so each output is four fixed, branch-free compares
 * that the compiler vectorises across the output row.  Semantics match the general
 * kernel in kernels/pooling.pyx: ties go to the first element in row-major order, the
 * first NaN wins, and winners[o] is the flat index iy*W + ix of the winning element.
 */
#ifndef DN_INCLUDING_BODIES   /* included directly: the kernels, as src/deepnet_isa.h sets them up */
#include "deepnet_isa.h"
#else   /* included by src/deepnet_isa.h once per variant, after the half conversions */

#ifndef DN_DEFINE_POOL_2X2
#define DN_DEFINE_POOL_2X2(T, NAME) DN_DEFINE_POOL_2X2_(T, NAME)
#define DN_DEFINE_POOL_2X2_(T, NAME)                                                          \
static inline void NAME(const T *restrict plane, T *restrict out, int32_t *restrict winners, \
                        int W, int OH, int OW)                                                \
{                                                                                             \
    for (int oy = 0; oy < OH; oy++) {                                                         \
        const int top = 2 * oy * W;                                                           \
        for (int ox = 0; ox < OW; ox++) {                                                     \
            const int first = top + 2 * ox;                                                   \
            const int candidates[3] = {first + 1, first + W, first + W + 1};                  \
            T best = plane[first];                                                            \
            int32_t winner = first;                                                           \
            for (int k = 0; k < 3; k++) {                                                     \
                T value = plane[candidates[k]];                                               \
                int take = value > best || (value != value && best == best);                 \
                best = take ? value : best;                                                   \
                winner = take ? candidates[k] : winner;                                       \
            }                                                                                 \
            out[oy * OW + ox] = best;                                                         \
            winners[oy * OW + ox] = winner;                                                   \
        }                                                                                     \
    }                                                                                         \
}

#endif /* DN_DEFINE_POOL_2X2 */

DN_DEFINE_POOL_2X2(float, DN_V(dn_max_pool_2x2_float))
DN_DEFINE_POOL_2X2(double, DN_V(dn_max_pool_2x2_double))

/* conv_pool_forward's pooling, on the convolution's result as the gather GEMM leaves it:
 * pixels x filters, row stride ld, W pixels a row.  The epilogue comes first, then the
 * same compares as above (the first of a tie, the first NaN), so each maximum and winner
 * is the one the separate passes give:
 *
 *   out[q * ld + f]     = max over q's 2x2 window of act(product[p * ld + f] + bias[f])
 *   winners[q * ld + f] = the flat index p of that maximum  (if winners is not NULL)
 *
 * for the OH x OW windows q and f < FN, with act max(., 0) under relu (NaN and -0 kept,
 * as `value < 0 ? 0 : value`; no value is below -inf, so that floor is the identity).
 * The loops along the filters vectorise, and the full-size image is never transposed
 * (the caller transposes the pooled quarter). */
#ifndef DN_DEFINE_POOL_2X2_FILTERS_LAST
#define DN_POOL_2X2_FILTERS_LAST_STEP(T, k)                                                    \
    {                                                                                         \
        T value = window[k][f] + bias[f];                                                     \
        value = value < floor ? (T)0 : value;                                                 \
        const int take = value > best || (value != value && best == best);                    \
        best = take ? value : best;                                                           \
        winner = take ? index[k] : winner;                                                    \
    }

/* The loop along the filters of window q, STORE_WINNER after each maximum: written out
 * for training and inference, so that each vectorises without a test inside. */
#define DN_POOL_2X2_FILTERS_LAST_LOOP(T, STORE_WINNER)                                        \
    for (int f = 0; f < FN; f++) {                                                            \
        T best = window[0][f] + bias[f];                                                      \
        best = best < floor ? (T)0 : best;                                                    \
        int32_t winner = index[0];                                                            \
        DN_POOL_2X2_FILTERS_LAST_STEP(T, 1)                                                   \
        DN_POOL_2X2_FILTERS_LAST_STEP(T, 2)                                                   \
        DN_POOL_2X2_FILTERS_LAST_STEP(T, 3)                                                   \
        out[q * ld + f] = best;                                                               \
        STORE_WINNER;                                                                         \
    }

#define DN_DEFINE_POOL_2X2_FILTERS_LAST(T, NAME) DN_DEFINE_POOL_2X2_FILTERS_LAST_(T, NAME)
#define DN_DEFINE_POOL_2X2_FILTERS_LAST_(T, NAME)                                             \
static inline void NAME(const T *restrict product, int ld, const T *restrict bias, int relu,  \
                        int FN, int W, int OH, int OW, T *restrict out,                       \
                        int32_t *restrict winners)                                            \
{                                                                                             \
    const T floor = relu ? (T)0 : -(T)INFINITY;  /* value < floor: only for the ReLU */       \
    for (int oy = 0; oy < OH; oy++)                                                           \
        for (int ox = 0; ox < OW; ox++) {                                                     \
            const int32_t first = 2 * oy * W + 2 * ox;                                        \
            const int32_t index[4] = {first, first + 1, first + W, first + W + 1};            \
            const T *restrict window[4];                                                      \
            for (int k = 0; k < 4; k++)                                                       \
                window[k] = product + (size_t)index[k] * ld;                                  \
            const size_t q = (size_t)oy * OW + ox;                                            \
            if (winners)                                                                      \
                DN_POOL_2X2_FILTERS_LAST_LOOP(T, winners[q * ld + f] = winner)                \
            else  /* inference: the same maxima, the winner dropped by the compiler */        \
                DN_POOL_2X2_FILTERS_LAST_LOOP(T, (void)winner)                                \
        }                                                                                     \
}

#endif /* DN_DEFINE_POOL_2X2_FILTERS_LAST */

DN_DEFINE_POOL_2X2_FILTERS_LAST(float, DN_V(dn_max_pool_2x2_filters_last_float))
DN_DEFINE_POOL_2X2_FILTERS_LAST(double, DN_V(dn_max_pool_2x2_filters_last_double))

/* float16 training's epilogue, in place, before the pooling above: each of the first
 * `pixels` rows of product becomes act(product + bias) rounded to float16 and widened back.
 * The two separate passes compare the rounded outputs, so two values that round to the
 * same half are a tie there and go to the first; pooling these rounded values (with a -0
 * bias, which adds exactly nothing, -0 included, and no ReLU) gives those winners. */
static inline void DN_V(dn_epilogue_rounded_to_half)(float *restrict product, int ld, const float *restrict bias,
                                               int relu, int FN, int pixels)
{
    uint16_t halves[64];
    for (int p = 0; p < pixels; p++) {
        float *restrict row = product + (size_t)p * ld;
        for (int f = 0; f < FN; f++)
            row[f] = dn_activate_float(row[f] + bias[f], relu);
        for (int f = 0; f < FN; f += 64) {
            const int n = FN - f < 64 ? FN - f : 64;
            DN_V(dn_floats_to_halves)(row + f, halves, n);
            DN_V(dn_halves_to_floats)(halves, row + f, n);
        }
    }
}
#endif /* DN_INCLUDING_BODIES */
