/* Max-pooling over 2x2 windows with stride 2 and no padding (DeepConvNet's pooling).
 *
 * Every window lies inside the plane, so each output is four fixed, branch-free compares
 * that the compiler vectorises across the output row.  Semantics match the general
 * kernel in kernels/pooling.pyx: ties go to the first element in row-major order, the
 * first NaN wins, and winners[o] is the flat index iy*W + ix of the winning element.
 */
#ifndef DEEPNET_POOL_H
#define DEEPNET_POOL_H

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

#endif /* DEEPNET_POOL_H */
