/* Implicit ("gather") GEMM for the convolutions: C (+)= A @ B, where A is never stored.
 *
 *   A[r, t] = base[row_offset[r] + step_offset[t]]
 *
 * With base a zero-padded image (channels x Hp x Wp) and the offsets of output pixels and
 * of window positions (c, i, j) in it, A is the im2col matrix without the copy:
 *   forward:          rows = output pixels, steps = window positions, B = W^T
 *                     (C is the output, pixels x filters);
 *   weight gradient:  rows = window positions, steps = output pixels, B = dout^T
 *                     (C is dW^T, window positions x filters);
 *   col2im's columns: base = dout^T, rows = its pixel rows, steps = filters, B = the
 *                     filter matrix (C is the columns transposed, pixels x windows).
 * Any stride or padding is only a different set of offsets.  The micro-kernel computes an
 * MR x (NV vectors) tile of C in registers: per step it broadcasts MR gathered values of A
 * and loads NV vectors of B (AVX2: 6 x 2, 12 FMA chains, 8 loads; AVX-512: 8 x 2 where
 * two vectors of columns are left, else 8 x 1).  B is row-major, steps x N,
 * and N (its columns, C's columns) must be a multiple of DN_GATHER_PAD_BYTES / sizeof(T): the
 * callers pad the filters to it.  Rows at the bottom edge are handled by repeating the last row
 * (computed, not stored), so nothing is read or written out of bounds.  The steps are
 * cut into blocks whose B panel stays in L1.  Written with GCC vector extensions, so the target
 * (-march, or the target pragma of a dispatch build's variant) decides the instructions and one source serves float and double.
 */
#ifndef DN_INCLUDING_BODIES   /* included directly: the kernels, as src/deepnet_isa.h sets them up */
#include "deepnet_isa.h"
#else   /* included by src/deepnet_isa.h once per variant */

/* The tile's macros are set anew for each variant, from the target's macros. */
#undef DN_VBYTES
#undef DN_GATHER_MR
#undef DN_GATHER_NV
#undef DN_GATHER_WIDE_MR
#undef DN_KEEP_IN_REGISTER

/* Bytes per vector and the tile, chosen for the target's registers, MR rows x NV vectors of
 * accumulators plus NV vectors of B and a broadcast (and, without FMA, a product):
 *   AVX-512: one 64-byte zmm per row, 8 rows (of 32 zmm registers);
 *   AVX:     two 32-byte ymm per row, 6 rows: 12 + 2 + 1 of the 16 ymm registers;
 *   aarch64: two 16-byte q registers per row, 8 rows: 16 + 2 + 8 broadcasts (fmla by element)
 *            of the 32 q registers; 16 rows also fit Winograd's 4x4 tiles of an 8x8 image;
 *   SSE2 (baseline x86-64, no FMA): two 16-byte xmm per row, 6 rows: 12 + 2 + 1 + a product,
 *            all 16 xmm registers (wider, the tile spilled around every multiply-add).
 * The filters' columns are padded to DN_GATHER_PAD_BYTES, a multiple of every tile's width,
 * so that one padding serves every variant of a dispatch build. */
#if defined(__AVX512F__) && !defined(DN_NO_AVX512)
#define DN_VBYTES 64
#define DN_GATHER_MR 8
#define DN_GATHER_NV 1
#elif defined(__AVX__)
#define DN_VBYTES 32
#define DN_GATHER_MR 6
#define DN_GATHER_NV 2
#elif defined(__aarch64__)
#define DN_VBYTES 16
#define DN_GATHER_MR 8
#define DN_GATHER_NV 2
#else
#define DN_VBYTES 16
#define DN_GATHER_MR 6
#define DN_GATHER_NV 2
#endif

/* Load B's vectors once per step into registers: left alone, GCC folds them into the FMAs
 * as memory operands, re-reading each of them MR times, and the loads become the bottleneck. */
#if defined(__GNUC__) && DN_VBYTES == 64
#define DN_KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))   /* any of the 32 zmm registers */
#elif defined(__GNUC__) && (defined(__AVX__) || defined(__SSE2__))   /* one ymm or xmm register */
#define DN_KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#elif defined(__GNUC__) && defined(__aarch64__)   /* one q register */
#define DN_KEEP_IN_REGISTER(v) __asm__("" : "+w"(v))
#else
#define DN_KEEP_IN_REGISTER(v) ((void)0)
#endif

#ifndef DN_GATHER_NR
#define DN_GATHER_NR(T) (DN_GATHER_NV * (DN_VBYTES / (int)sizeof(T)))   /* a tile's columns */
#define DN_GATHER_PANEL_BYTES 16384   /* B panel per block of steps: half of L1 */
#endif

/* With AVX-512 and at least two tiles' width of columns left, a tile twice as wide: per
 * step 8 broadcasts feed 16 FMAs (16 accumulators, 2 vectors of B) instead of 8.  A CPU
 * with two 512-bit FMA units (Intel Xeon) runs out of loads before FMAs with the narrow
 * tile: benches/analysis/gemm_peak.c's conv6 (64 filters) went from 123 to 163-184 GFLOP/s forward
 * and 154 to 187-201 for the weight gradient on one core (peak 242).  12 rows measured no
 * better and waste a third of the tile on 16 rows (Winograd's 4x4 tiles of an 8x8 image).
 * Each entry of C is the same sum in the same order with either tile: the same results. */
#if DN_VBYTES == 64 && !defined(DN_NO_WIDE_TILE)
#define DN_GATHER_WIDE_MR 8
#else
#define DN_GATHER_WIDE_MR 0
#endif

/* Not inlined: inside the convolutions' large OpenMP functions GCC then ran out of general
 * registers for the row pointers and reloaded some from the stack at every step, loads the
 * load-bound AVX-512 tile cannot spare. */
#ifndef DN_DEFINE_GATHER_GEMM
#if defined(__GNUC__)
#define DN_GATHER_TILE_ATTRIBUTES static __attribute__((noinline))
#else
#define DN_GATHER_TILE_ATTRIBUTES static
#endif

#define DN_DEFINE_GATHER_TILE(T, TILE, MR_, NV_)                                              \
DN_GATHER_TILE_ATTRIBUTES void TILE(int steps, const T *const *row, const int *step_offset,              \
                        const T *B, int ldb, T *C, int ldc, int rows, int accumulate)        \
{                                                                                            \
    typedef T vec __attribute__((vector_size(DN_VBYTES)));                                   \
    typedef T vec_u __attribute__((vector_size(DN_VBYTES), aligned(sizeof(T))));             \
    enum { VL = DN_VBYTES / sizeof(T), MR = MR_, NV = NV_ };                                 \
    const T *rp[MR];                                                                         \
    for (int r = 0; r < MR; r++)                                                             \
        rp[r] = row[r];                                                                      \
    vec acc[MR][NV];                                                                         \
    for (int r = 0; r < MR; r++)                                                             \
        for (int v = 0; v < NV; v++)                                                         \
            acc[r][v] = (vec){0};                                                            \
    for (int t = 0; t < steps; t++) {                                                        \
        const T *b_row = B + (size_t)t * ldb;                                                \
        const int o = step_offset[t];                                                        \
        vec b[NV];                                                                           \
        for (int v = 0; v < NV; v++) {                                                       \
            b[v] = *(const vec_u *)(b_row + v * VL);                                         \
            DN_KEEP_IN_REGISTER(b[v]);                                                       \
        }                                                                                    \
        for (int r = 0; r < MR; r++) {                                                       \
            vec a = rp[r][o] - (vec){0};  /* broadcast (x - 0 == x, also for -0) */          \
            for (int v = 0; v < NV; v++)                                                     \
                acc[r][v] += a * b[v];                                                       \
        }                                                                                    \
    }                                                                                        \
    for (int r = 0; r < rows; r++)                                                           \
        for (int v = 0; v < NV; v++) {                                                       \
            vec_u *c = (vec_u *)(C + (size_t)r * ldc + v * VL);                              \
            *c = accumulate ? *c + acc[r][v] : acc[r][v];                                    \
        }                                                                                    \
}

/* One block of steps of C[M, N] with the tiles of TILE, MR rows x (width) columns each,
 * for the columns [j0, j1). */
#define DN_GATHER_COLUMNS(TILE, MR_, width)                                                  \
    for (; j0 + (width) <= j1; j0 += (width))                                                \
        for (int i0 = 0; i0 < M; i0 += (MR_)) {                                              \
            int rows = M - i0 < (MR_) ? M - i0 : (MR_);                                      \
            for (int r = 0; r < (MR_); r++)                                                  \
                row[r] = base + row_offset[i0 + (r < rows ? r : rows - 1)];                  \
            TILE(t_count, row, step_offset + t0, B + (size_t)t0 * ldb + j0, ldb,             \
                 C + (size_t)i0 * ldc + j0, ldc, rows, accumulate || t0 > 0);                \
        }

#define DN_DEFINE_GATHER_GEMM(T, NAME) DN_DEFINE_GATHER_GEMM_(T, NAME)   /* NAME expanded first */
#define DN_DEFINE_GATHER_GEMM_(T, NAME)                                                      \
DN_DEFINE_GATHER_TILE(T, NAME##_tile, DN_GATHER_MR, DN_GATHER_NV)                            \
DN_DEFINE_GATHER_TILE(T, NAME##_wide_tile, DN_GATHER_WIDE_MR > 0 ? DN_GATHER_WIDE_MR : 1,    \
                      2 * DN_GATHER_NV)                                                      \
                                                                                             \
/* C[M, N] (+)= A @ B with A[r, t] = base[row_offset[r] + step_offset[t]], N a multiple      \
 * of DN_GATHER_PAD_BYTES. */                                                                    \
static inline void NAME(int M, int N, int steps, const T *base, const int *row_offset,       \
                        const int *step_offset, const T *B, int ldb,                         \
                        T *C, int ldc, int accumulate)                                       \
{                                                                                            \
    enum { MR = DN_GATHER_MR, NR = DN_GATHER_NR(T), WIDE_MR = DN_GATHER_WIDE_MR };           \
    const int block = DN_GATHER_PANEL_BYTES / (NR * (int)sizeof(T));                         \
    const T *row[MR > WIDE_MR ? MR : WIDE_MR];                                               \
    if (steps <= 0 && !accumulate)         /* an empty sum (no channels): C = 0 */           \
        for (int i = 0; i < M; i++)                                                          \
            memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(T));                           \
    for (int t0 = 0; t0 < steps; t0 += block) {                                              \
        int t_count = steps - t0 < block ? steps - t0 : block;                               \
        int j0 = 0;                                                                          \
        const int j1 = N;                                                                    \
        if (WIDE_MR > 0) {                                                                   \
            DN_GATHER_COLUMNS(NAME##_wide_tile, WIDE_MR, 2 * NR)                             \
        }                                                                                    \
        DN_GATHER_COLUMNS(NAME##_tile, MR, NR)                                               \
    }                                                                                        \
}

#endif /* DN_DEFINE_GATHER_GEMM */

DN_DEFINE_GATHER_GEMM(float, DN_V(dn_gather_sgemm))
DN_DEFINE_GATHER_GEMM(double, DN_V(dn_gather_dgemm))
#endif /* DN_INCLUDING_BODIES */
