/* A dispatch build's variants, table and choice: see src/deepnet_isa.h.  Included once,
 * from there, by GCC on x86-64 only. */

#include <cpuid.h>

/* Every dispatched function: X(name, parameters, arguments). */
#define DN_ISA_FUNCTIONS(X)                                                                   \
    X(dn_gather_sgemm, (int M, int N, int steps, const float *base, const int *row_offset,    \
                        const int *step_offset, const float *B, int ldb, float *C, int ldc,   \
                        int accumulate),                                                      \
      (M, N, steps, base, row_offset, step_offset, B, ldb, C, ldc, accumulate))               \
    X(dn_gather_dgemm, (int M, int N, int steps, const double *base, const int *row_offset,   \
                        const int *step_offset, const double *B, int ldb, double *C, int ldc, \
                        int accumulate),                                                      \
      (M, N, steps, base, row_offset, step_offset, B, ldb, C, ldc, accumulate))               \
    X(dn_winograd_sconv, (const float *padded, int C, int OH, int OW, const float *U, int ld, \
                          float *rows, float *V, float *M, int *row_offset, int *step_offset, \
                          float *product),                                                    \
      (padded, C, OH, OW, U, ld, rows, V, M, row_offset, step_offset, product))               \
    X(dn_winograd_dconv, (const double *padded, int C, int OH, int OW, const double *U, int ld, \
                          double *rows, double *V, double *M, int *row_offset, int *step_offset, \
                          double *product),                                                   \
      (padded, C, OH, OW, U, ld, rows, V, M, row_offset, step_offset, product))               \
    X(dn_winograd_sconv_filter_gradient, (const float *padded, int C, int OH, int OW,         \
                                          const float *grad_t, int ld, float *rows, float *V, \
                                          float *Z, int *row_offset, int *step_offset, float *dU), \
      (padded, C, OH, OW, grad_t, ld, rows, V, Z, row_offset, step_offset, dU))                \
    X(dn_winograd_dconv_filter_gradient, (const double *padded, int C, int OH, int OW,        \
                                          const double *grad_t, int ld, double *rows, double *V, \
                                          double *Z, int *row_offset, int *step_offset, double *dU), \
      (padded, C, OH, OW, grad_t, ld, rows, V, Z, row_offset, step_offset, dU))                \
    X(dn_store_transposed_float, (const float *product, int ld, int rows, int columns,        \
                                  const float *bias, int relu, float *out, int out_ld),       \
      (product, ld, rows, columns, bias, relu, out, out_ld))                                  \
    X(dn_store_transposed_half, (const float *product, int ld, int rows, int columns,         \
                                 const float *bias, int relu, uint16_t *out, int out_ld),     \
      (product, ld, rows, columns, bias, relu, out, out_ld))                                  \
    X(dn_store_transposed_double, (const double *product, int ld, int rows, int columns,      \
                                   const double *bias, int relu, double *out, int out_ld),    \
      (product, ld, rows, columns, bias, relu, out, out_ld))                                  \
    X(dn_add_rows_float, (const float *rows, int count, int ld, int n, float *sum),           \
      (rows, count, ld, n, sum))                                                              \
    X(dn_add_rows_double, (const double *rows, int count, int ld, int n, double *sum),        \
      (rows, count, ld, n, sum))                                                              \
    X(dn_halves_to_floats, (const uint16_t *src, float *dst, long n), (src, dst, n))          \
    X(dn_floats_to_halves, (const float *src, uint16_t *dst, long n), (src, dst, n))          \
    X(dn_max_pool_2x2_float, (const float *plane, float *out, int32_t *winners, int W, int OH, \
                              int OW), (plane, out, winners, W, OH, OW))                      \
    X(dn_max_pool_2x2_double, (const double *plane, double *out, int32_t *winners, int W,     \
                               int OH, int OW), (plane, out, winners, W, OH, OW))             \
    X(dn_max_pool_2x2_filters_last_float, (const float *product, int ld, const float *bias,   \
                                           int relu, int FN, int W, int OH, int OW, float *out, \
                                           int32_t *winners),                                 \
      (product, ld, bias, relu, FN, W, OH, OW, out, winners))                                 \
    X(dn_max_pool_2x2_filters_last_double, (const double *product, int ld, const double *bias, \
                                            int relu, int FN, int W, int OH, int OW, double *out, \
                                            int32_t *winners),                                \
      (product, ld, bias, relu, FN, W, OH, OW, out, winners))                                 \
    X(dn_epilogue_rounded_to_half, (float *product, int ld, const float *bias, int relu, int FN, \
                                    int pixels), (product, ld, bias, relu, FN, pixels))

#define DN_INCLUDING_BODIES

/* Baseline x86-64: the build's own flags (no -march). */
#define DN_V(name) DN_CAT(name, _baseline)
#include DN_INCLUDE_BODIES
enum { dn_isa_baseline_vbytes = DN_VBYTES };
#undef DN_V

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define DN_V(name) DN_CAT(name, _avx2)
#include DN_INCLUDE_BODIES
#undef DN_V
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512cd,avx2,fma,f16c")
#define DN_V(name) DN_CAT(name, _avx512)
#include DN_INCLUDE_BODIES
#undef DN_V
#pragma GCC pop_options

#undef DN_INCLUDING_BODIES

typedef struct {
#define DN_ISA_POINTER(name, parameters, arguments) void (*name) parameters;
    DN_ISA_FUNCTIONS(DN_ISA_POINTER)
#undef DN_ISA_POINTER
} dn_isa_table;

#define DN_ISA_ENTRY(name, parameters, arguments) DN_CAT(name, DN_ISA_SUFFIX),
#define DN_ISA_SUFFIX _baseline
static const dn_isa_table dn_isa_baseline = {DN_ISA_FUNCTIONS(DN_ISA_ENTRY)};
#undef DN_ISA_SUFFIX
#define DN_ISA_SUFFIX _avx2
static const dn_isa_table dn_isa_avx2 = {DN_ISA_FUNCTIONS(DN_ISA_ENTRY)};
#undef DN_ISA_SUFFIX
#define DN_ISA_SUFFIX _avx512
static const dn_isa_table dn_isa_avx512 = {DN_ISA_FUNCTIONS(DN_ISA_ENTRY)};
#undef DN_ISA_SUFFIX
#undef DN_ISA_ENTRY

/* The chosen variant: baseline until dn_isa_select runs (at the module's import). */
static const dn_isa_table *dn_isa = &dn_isa_baseline;
static const char *dn_isa_variant_name = "baseline";
static int dn_isa_vector_bytes = 16;
static int dn_isa_f16c = 0;
static char dn_isa_reason[256] = "not chosen yet";
#define DEEPNET_HAVE_F16C dn_isa_f16c

#define DN_ISA_WRAPPER(name, parameters, arguments) \
    static inline void name parameters { dn_isa->name arguments; }
DN_ISA_FUNCTIONS(DN_ISA_WRAPPER)
#undef DN_ISA_WRAPPER

/* Scalar conversions: the portable ones give the same bits as F16C's. */
static inline float dn_half_to_float(uint16_t h) { return dn_half_to_float_baseline(h); }
static inline uint16_t dn_float_to_half(float f) { return dn_float_to_half_baseline(f); }

/* What the CPU supports, as 0 (baseline), 1 (avx2) or 2 (avx512). */
static int dn_isa_cpu_level(void)
{
    unsigned int eax, ebx, ecx, edx;
    __builtin_cpu_init();
    /* F16C: CPUID 1, ECX bit 29 (its AVX state is the OS's AVX support, checked by libgcc) */
    const int f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && ((ecx >> 29) & 1);
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c))
        return 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        return 2;
    return 1;
}

/* 0, or -1 (with the reason in dn_isa_reason) when DEEPNET_CPU_VARIANT names a variant
 * that is not one of the three, or one this CPU lacks. */
static int dn_isa_select(void)
{
    static const char *const names[3] = {"baseline", "avx2", "avx512"};
    static const char *const needs[3] = {"SSE2", "AVX2, FMA and F16C", "AVX-512 F, VL, BW, DQ and CD"};
#ifdef DN_ISA_TEST_CPU_LEVEL   /* tests/test_dispatch.py: the choice on a CPU this one is not */
    const int cpu = DN_ISA_TEST_CPU_LEVEL;
#else
    const int cpu = dn_isa_cpu_level();
#endif
    int level = cpu;
    const char *forced = getenv("DEEPNET_CPU_VARIANT");
    if (forced != NULL && forced[0] != '\0') {
        level = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(forced, names[i]) == 0)
                level = i;
        if (level < 0) {
            snprintf(dn_isa_reason, sizeof dn_isa_reason,
                     "DEEPNET_CPU_VARIANT must be 'baseline', 'avx2' or 'avx512', got '%.40s'", forced);
            return -1;
        }
        if (level > cpu) {
            snprintf(dn_isa_reason, sizeof dn_isa_reason,
                     "DEEPNET_CPU_VARIANT=%s needs %s, which this CPU lacks (its best variant is '%s')",
                     names[level], needs[level], names[cpu]);
            return -1;
        }
        snprintf(dn_isa_reason, sizeof dn_isa_reason, "forced by DEEPNET_CPU_VARIANT (this CPU's best: '%s')",
                 names[cpu]);
    } else {
        snprintf(dn_isa_reason, sizeof dn_isa_reason, "the best this CPU supports (%s), by CPUID", needs[cpu]);
    }
    static const dn_isa_table *const tables[3] = {&dn_isa_baseline, &dn_isa_avx2, &dn_isa_avx512};
    static const int bytes[3] = {dn_isa_baseline_vbytes, 32, 64};
    dn_isa = tables[level];
    dn_isa_variant_name = names[level];
    dn_isa_vector_bytes = bytes[level];
    dn_isa_f16c = level > 0;
    return 0;
}
