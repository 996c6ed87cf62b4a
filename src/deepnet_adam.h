/* One Adam step over n elements, in the order and roundings of deepnet/optimizers.py's
 * NumPy code (deepnet.reference.adam_update), so that both give the same bits:
 *
 *   m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g * g - v);
 *   p -= (lr_t * m) / (sqrt(v) + eps)
 *
 * each operation rounded to T.  The compiler must not contract a * b + c into one fused
 * multiply-add (NumPy rounds the product first), and sqrt need not set errno (v >= 0), so
 * the loop vectorises.  One pass instead of NumPy's ten, with their temporaries. */
#ifndef DEEPNET_ADAM_H
#define DEEPNET_ADAM_H

#include <math.h>

#if defined(__clang__)
#define DN_EXACT_ARITHMETIC
#define DN_EXACT_LOOP _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define DN_EXACT_ARITHMETIC __attribute__((optimize("fp-contract=off", "no-math-errno")))
#define DN_EXACT_LOOP
#else
#define DN_EXACT_ARITHMETIC
#define DN_EXACT_LOOP
#endif

#define DN_DEFINE_ADAM(T, NAME, SQRT)                                                        \
DN_EXACT_ARITHMETIC static void NAME(T *restrict param, const T *restrict grad,              \
                                     T *restrict m, T *restrict v, long n,                   \
                                     T one_minus_beta1, T one_minus_beta2, T lr_t, T eps)    \
{                                                                                            \
    DN_EXACT_LOOP                                                                            \
    for (long i = 0; i < n; i++) {                                                           \
        const T g = grad[i];                                                                 \
        const T mi = m[i] + one_minus_beta1 * (g - m[i]);                                    \
        const T vi = v[i] + one_minus_beta2 * (g * g - v[i]);                                \
        m[i] = mi;                                                                           \
        v[i] = vi;                                                                           \
        param[i] = param[i] - (lr_t * mi) / (SQRT(vi) + eps);                                \
    }                                                                                        \
}

DN_DEFINE_ADAM(float, dn_adam_float, sqrtf)
DN_DEFINE_ADAM(double, dn_adam_double, sqrt)

#endif /* DEEPNET_ADAM_H */
