/* float16 <-> float32 conversion shared by the kernels.
 *
 * float16 is a storage format only: kernels load half values, compute in float32 and
 * store back as half.  With F16C (x86 since Ivy Bridge / Piledriver) one instruction
 * converts; otherwise a portable bit-exact version (round to nearest even) is used.
 * F16C comes with -march=native where the build machine has it, or with the AVX2 and
 * AVX-512 variants of a dispatch build.
 */
#ifndef DN_INCLUDING_BODIES   /* included directly: the kernels, as src/deepnet_isa.h sets them up */
#include "deepnet_isa.h"
#else   /* included by src/deepnet_isa.h once per variant */

#undef DN_F16C
#if defined(__F16C__)
#define DN_F16C 1
#else
#define DN_F16C 0
#endif

static inline float DN_V(dn_half_to_float)(uint16_t h)
{
#if DN_F16C
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu) {                 /* Inf or NaN: keep the payload */
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {              /* normal number */
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {              /* signed zero */
        bits = sign;
    } else {                                 /* subnormal half: normalise it */
        exponent = 113u;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            exponent--;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

static inline uint16_t DN_V(dn_float_to_half)(float f)
{
#if DN_F16C
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {          /* Inf or NaN (keep NaN a NaN) */
        return sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0u);
    }
    if (magnitude >= 0x477ff000u) {          /* rounds to >= 65520: overflow to Inf */
        return sign | 0x7c00u;
    }
    if (magnitude < 0x38800000u) {           /* result is subnormal or zero */
        if (magnitude < 0x33000000u) return sign; /* below half of the smallest subnormal */
        uint32_t exponent = magnitude >> 23;
        uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exponent;    /* 14..24 */
        uint32_t half_mantissa = mantissa >> shift;
        uint32_t remainder = mantissa & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) half_mantissa++;
        return sign | (uint16_t)half_mantissa;
    }
    /* normal: rebias the exponent, round the 13 dropped bits to nearest even */
    uint32_t rebased = magnitude - 0x38000000u;
    uint32_t result = rebased >> 13;
    uint32_t remainder = rebased & 0x1fffu;
    if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) result++;
    return sign | (uint16_t)result;
#endif
}

/* Whole runs of values, 8 at a time with F16C (the scalar conversions do not vectorise). */
static inline void DN_V(dn_halves_to_floats)(const uint16_t *src, float *dst, long n)
{
    long i = 0;
#if DN_F16C && defined(__AVX__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++)
        dst[i] = DN_V(dn_half_to_float)(src[i]);
}

static inline void DN_V(dn_floats_to_halves)(const float *src, uint16_t *dst, long n)
{
    long i = 0;
#if DN_F16C && defined(__AVX__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++)
        dst[i] = DN_V(dn_float_to_half)(src[i]);
}
#endif /* DN_INCLUDING_BODIES */
