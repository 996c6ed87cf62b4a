/* The instruction sets the hot kernels are compiled for, and the choice among them.
 *
 * The kernels' ISA-dependent code (the gather GEMM, Winograd, the epilogue's transposes,
 * float16 conversion, 2x2 pooling) lives in the src/deepnet_{half,transpose,gather_gemm,winograd,pool}.h bodies, which name
 * their functions DN_V(name) and pick vector widths and tiles from the target's macros
 * (__AVX512F__, __AVX__, __F16C__, __aarch64__).
 *
 * A plain build (-march=native, or any DEEPNET_MARCH) includes each body once, DN_V(name)
 * being name: one variant, fixed at build time.
 *
 * A dispatch build (DEEPNET_DISPATCH defined: DEEPNET_MARCH=dispatch, GCC on x86-64)
 * includes them three times, as NumPy's dispatchable SIMD does: for baseline x86-64
 * (SSE2), under `#pragma GCC target` for AVX2+FMA+F16C and for AVX-512 (F, VL, BW, DQ, CD),
 * GCC defining that target's macros inside each region.  DN_V(name) then appends the
 * variant's suffix, and the public names call through a table of function pointers that
 * dn_isa_select fills once, at each kernel module's import: the best variant the CPU has
 * (CPUID), or the one DEEPNET_CPU_VARIANT names, refused if the CPU lacks it.  Each
 * Cython module holds its own table, filled by the same rule.
 */
#ifndef DEEPNET_ISA_H
#define DEEPNET_ISA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>   /* GCC and clang declare every intrinsic whatever the flags */
#endif

#define DN_CAT_(a, b) a##b
#define DN_CAT(a, b) DN_CAT_(a, b)

/* Shapes shared by every variant, so that the callers' padding and scratch fit all. */
#define DN_GATHER_PAD_BYTES 64   /* the filters' columns: a multiple of every tile's width */
#define DN_MAX_VBYTES 64         /* the widest vector of any variant */

#define DN_WINOGRAD_TILES(n) (((n) + 1) / 2)   /* 2x2 tiles along n output pixels */
/* Distance between the 16 matrices of V (n = tiles * C) or M (n = tiles * ld): one cache
 * line more than they need, so that the 16 streams of a transform do not all map to the
 * same L1 sets when n is a multiple of 4 KiB (measured 2-3x slower without). */
#define DN_WINOGRAD_STRIDE(n) ((size_t)(n) + 16)
/* Channels of the channels-last copy and of V: C rounded up to whole vectors (of the
 * variant compiled where it is used; callers size scratch with DN_MAX_VBYTES). */
#define DN_WINOGRAD_CHANNELS(C, T) (((C) + DN_VBYTES / (int)sizeof(T) - 1) / (DN_VBYTES / (int)sizeof(T)) \
                                    * (DN_VBYTES / (int)sizeof(T)))
/* Elements of the `rows` scratch: the padded image with channels last, and a zero pixel. */
#define DN_WINOGRAD_ROWS_SCRATCH(Cp, Hp, Wp) ((size_t)(Cp) * ((size_t)(Hp) * (Wp) + 1))

static inline float dn_activate_float(float value, int relu) { return relu && value < 0 ? 0.0f : value; }
static inline double dn_activate_double(double value, int relu) { return relu && value < 0 ? 0.0 : value; }

#define DN_INCLUDE_BODIES "deepnet_isa_bodies.h"   /* each under DN_INCLUDING_BODIES */

#if defined(DEEPNET_DISPATCH) && !(defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__))
#error "DEEPNET_DISPATCH needs GCC on x86-64 (setup.py only sets it there)"
#endif

#ifndef DEEPNET_DISPATCH
/* ---- one variant, fixed by the build's flags ---- */
#define DN_ISA_DISPATCH 0
#define DN_V(name) name
#define DN_INCLUDING_BODIES
#include DN_INCLUDE_BODIES
#undef DN_INCLUDING_BODIES
#define DEEPNET_HAVE_F16C DN_F16C

#if defined(__AVX512F__) && !defined(DN_NO_AVX512)
#define DN_BUILT_VARIANT "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define DN_BUILT_VARIANT "avx2"
#elif defined(__AVX__)
#define DN_BUILT_VARIANT "avx"
#elif defined(__aarch64__)
#define DN_BUILT_VARIANT "neon"
#elif defined(__x86_64__) || defined(__i386__)
#define DN_BUILT_VARIANT "baseline"
#else
#define DN_BUILT_VARIANT "generic"
#endif

static const char *dn_isa_variant_name = DN_BUILT_VARIANT;
static int dn_isa_vector_bytes = DN_VBYTES;
static char dn_isa_reason[256] = "fixed at build time by the compiler flags (a build without DEEPNET_MARCH=dispatch)";

/* 0, or -1 (with the reason in dn_isa_reason) when DEEPNET_CPU_VARIANT names another variant. */
static int dn_isa_select(void)
{
    const char *forced = getenv("DEEPNET_CPU_VARIANT");
    if (forced != NULL && forced[0] != '\0' && strcmp(forced, DN_BUILT_VARIANT) != 0) {
        snprintf(dn_isa_reason, sizeof dn_isa_reason,
                 "DEEPNET_CPU_VARIANT=%.40s, but this build has only the '%s' kernels; "
                 "build with DEEPNET_MARCH=dispatch to choose at run time", forced, DN_BUILT_VARIANT);
        return -1;
    }
    return 0;
}

#else
/* ---- a dispatch build: three variants and a table ---- */
#define DN_ISA_DISPATCH 1
#include "deepnet_isa_dispatch.h"
#endif

#endif /* DEEPNET_ISA_H */
