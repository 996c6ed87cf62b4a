/* Max-pooling over 2x2 windows with stride 2 and no padding (DeepConvNet's pooling).
 *
 * Every window lies inside the plane, so each output is four fixed, branch-free compares
 * that the compiler vectorises across the output row.  Semantics match the general
 * kernel in kernels/pooling.pyx: ties go to the first element in row-major order, the
 * first NaN wins, and winners[o] is the flat index iy*W + ix of the winning element.
 */
#ifndef DEEPNET_POOL_H
#define DEEPNET_POOL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define DN_DEFINE_POOL_2X2(T, NAME)                                                           \
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

DN_DEFINE_POOL_2X2(float, dn_max_pool_2x2_float)
DN_DEFINE_POOL_2X2(double, dn_max_pool_2x2_double)

/* conv_pool_forward's pooling, on the convolution's result as the gather GEMM leaves it:
 * pixels x filters, row stride ld, W pixels a row.  The epilogue comes first, then the
 * same compares as above (the first of a tie, the first NaN), so each maximum is the one
 * the separate passes give:
 *
 *   out[q * ld + f] = max over q's 2x2 window of act(product[p * ld + f] + bias[f])
 *
 * for the OH x OW windows q and f < FN, with act max(., 0) under relu (NaN and -0 kept,
 * as `value < 0 ? 0 : value`; a value below -inf never is, so that is the identity).  The loops along the filters vectorise, with no argmax
 * and without transposing the full-size image first (the caller transposes the pooled
 * quarter). */
#define DN_DEFINE_POOL_2X2_FILTERS_LAST(T, NAME)                                              \
static inline T NAME##_take(T best, T value)   /* the compare of the separate kernel */       \
{                                                                                             \
    return value > best || (value != value && best == best) ? value : best;                   \
}                                                                                             \
                                                                                              \
static inline void NAME(const T *restrict product, int ld, const T *restrict bias, int relu,  \
                        int FN, int W, int OH, int OW, T *restrict out)                       \
{                                                                                             \
    const T floor = relu ? (T)0 : -(T)INFINITY;  /* value < floor: only for the ReLU */       \
    for (int oy = 0; oy < OH; oy++)                                                           \
        for (int ox = 0; ox < OW; ox++) {                                                     \
            const T *restrict a = product + ((size_t)2 * oy * W + 2 * ox) * ld;               \
            const T *restrict b = a + ld;                                                     \
            const T *restrict c = a + (size_t)W * ld;                                         \
            const T *restrict d = c + ld;                                                     \
            T *restrict o = out + ((size_t)oy * OW + ox) * ld;                                \
            for (int f = 0; f < FN; f++) {                                                    \
                T va = a[f] + bias[f], vb = b[f] + bias[f];                                   \
                T vc = c[f] + bias[f], vd = d[f] + bias[f];                                   \
                va = va < floor ? (T)0 : va;                                                  \
                vb = vb < floor ? (T)0 : vb;                                                  \
                vc = vc < floor ? (T)0 : vc;                                                  \
                vd = vd < floor ? (T)0 : vd;                                                  \
                o[f] = NAME##_take(NAME##_take(NAME##_take(va, vb), vc), vd);                 \
            }                                                                                 \
        }                                                                                     \
}

DN_DEFINE_POOL_2X2_FILTERS_LAST(float, dn_max_pool_2x2_filters_last_float)
DN_DEFINE_POOL_2X2_FILTERS_LAST(double, dn_max_pool_2x2_filters_last_double)

#endif /* DEEPNET_POOL_H */
