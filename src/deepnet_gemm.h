/* Single-threaded GEMM for the convolution kernels: C = A @ B (or C += A @ B).
 *
 * Row-major A (M x K, row stride lda), B (K x N, ldb), C (M x N, ldc).  conv_backward's
 * col2im path calls it per image and block of channels from inside its OpenMP loop, so it
 * must not start threads itself (a BLAS would, and would oversubscribe the cores).
 *
 * A register-blocked micro-kernel computes MR x NR tiles of C: per step of k it broadcasts
 * MR values of A and loads NR values of B (NV vectors) into MR*NV independent FMA chains.
 * Two tile shapes are compiled, 4 x 3 vectors and 6 x 2 vectors (12 accumulators each,
 * enough to hide the FMA latency); each call takes the one that wastes least on partial
 * tiles, since the convolution's sizes (16, 32, 64 filters; 784, 256, 64 pixels) divide
 * one or the other.  Written with GCC/Clang vector extensions, so -march decides the
 * instructions (AVX2+FMA with -march=native on current x86, SSE2 otherwise) and one
 * source serves float and double.  Partial tiles at the right and bottom edges are
 * computed on zero-padded copies, so the micro-kernel never reads or writes out of bounds.
 */
#ifndef DEEPNET_GEMM_H
#define DEEPNET_GEMM_H

#include <stdlib.h>
#include <string.h>

#define DN_VBYTES 32   /* bytes per vector */

/* Load B's vectors once per k into registers: left alone, GCC folds them into the FMAs as
 * memory operands, re-reading each of them MR times, and the loads become the bottleneck. */
#if defined(__GNUC__) && defined(__AVX__)   /* a 32-byte vector fits one ymm register */
#define DN_KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define DN_KEEP_IN_REGISTER(v) ((void)0)
#endif

/* The tile C[0:MR, 0:NV*VL] (+)= A[0:MR, :] @ B[:, 0:NV*VL], accumulated in registers. */
#define DN_DEFINE_TILE(T, NAME, MR, NV)                                                       \
static inline void NAME(int K, const T *A, int lda, const T *B, int ldb,                      \
                        T *C, int ldc, int accumulate)                                        \
{                                                                                             \
    typedef T vec __attribute__((vector_size(DN_VBYTES)));                                    \
    typedef T vec_u __attribute__((vector_size(DN_VBYTES), aligned(sizeof(T))));              \
    enum { VL = DN_VBYTES / sizeof(T) };                                                      \
    vec acc[MR][NV];                                                                          \
    for (int r = 0; r < MR; r++)                                                              \
        for (int v = 0; v < NV; v++)                                                          \
            acc[r][v] = (vec){0};                                                             \
    for (int k = 0; k < K; k++) {                                                             \
        const T *b_row = B + (size_t)k * ldb;                                                 \
        vec b[NV];                                                                            \
        for (int v = 0; v < NV; v++) {                                                        \
            b[v] = *(const vec_u *)(b_row + v * VL);                                          \
            DN_KEEP_IN_REGISTER(b[v]);                                                        \
        }                                                                                     \
        for (int r = 0; r < MR; r++) {                                                        \
            vec a = A[(size_t)r * lda + k] - (vec){0};  /* broadcast (x - 0 == x, also -0) */ \
            for (int v = 0; v < NV; v++)                                                      \
                acc[r][v] += a * b[v];                                                        \
        }                                                                                     \
    }                                                                                         \
    for (int r = 0; r < MR; r++)                                                              \
        for (int v = 0; v < NV; v++) {                                                        \
            vec_u *c = (vec_u *)(C + (size_t)r * ldc + v * VL);                               \
            *c = accumulate ? *c + acc[r][v] : acc[r][v];                                     \
        }                                                                                     \
}

/* C (+)= A @ B by MR x NR tiles; returns 0, or -1 if the edge scratch cannot be allocated. */
#define DN_DEFINE_TILED_GEMM(T, NAME, TILE, MR, NR)                                           \
static inline int NAME(int M, int N, int K, const T *A, int lda, const T *B, int ldb,         \
                       T *C, int ldc, int accumulate)                                         \
{                                                                                             \
    T *edge_b = NULL, *edge_a = NULL, edge_c[(MR) * (NR)];                                    \
    if (N % (NR) || M % (MR)) {                                                               \
        edge_b = (T *)calloc((size_t)K * (NR), sizeof(T));                                    \
        edge_a = (T *)calloc((size_t)(MR) * K, sizeof(T));                                    \
        if (!edge_b || !edge_a) { free(edge_b); free(edge_a); return -1; }                    \
    }                                                                                         \
    for (int j0 = 0; j0 < N; j0 += (NR)) {                                                    \
        int nc = N - j0 < (NR) ? N - j0 : (NR);                                               \
        const T *b = B + j0;                                                                  \
        int ldb_tile = ldb;                                                                   \
        if (nc < (NR)) {            /* right edge: zero-padded copy of B's last columns */    \
            for (int k = 0; k < K; k++)                                                       \
                memcpy(edge_b + (size_t)k * (NR), B + (size_t)k * ldb + j0, nc * sizeof(T));  \
            b = edge_b;                                                                       \
            ldb_tile = (NR);                                                                  \
        }                                                                                     \
        for (int i0 = 0; i0 < M; i0 += (MR)) {                                                \
            int mr = M - i0 < (MR) ? M - i0 : (MR);                                           \
            const T *a = A + (size_t)i0 * lda;                                                \
            int lda_tile = lda;                                                               \
            if (mr < (MR)) {        /* bottom edge: zero-padded copy of A's last rows */      \
                memset(edge_a, 0, (size_t)(MR) * K * sizeof(T));                              \
                for (int r = 0; r < mr; r++)                                                  \
                    memcpy(edge_a + (size_t)r * K, A + (size_t)(i0 + r) * lda, K * sizeof(T)); \
                a = edge_a;                                                                   \
                lda_tile = K;                                                                 \
            }                                                                                 \
            T *c = C + (size_t)i0 * ldc + j0;                                                 \
            if (mr == (MR) && nc == (NR)) {                                                   \
                TILE(K, a, lda_tile, b, ldb_tile, c, ldc, accumulate);                        \
                continue;                                                                     \
            }                                                                                 \
            TILE(K, a, lda_tile, b, ldb_tile, edge_c, (NR), 0);                               \
            for (int r = 0; r < mr; r++)                                                      \
                for (int j = 0; j < nc; j++)                                                  \
                    c[(size_t)r * ldc + j] = (accumulate ? c[(size_t)r * ldc + j] : 0)        \
                                             + edge_c[r * (NR) + j];                          \
        }                                                                                     \
    }                                                                                         \
    free(edge_b);                                                                             \
    free(edge_a);                                                                             \
    return 0;                                                                                 \
}

static inline long dn_padded(long size, long block) { return (size + block - 1) / block * block; }

/* One GEMM per element type: both tile shapes, and the choice between them. */
#define DN_DEFINE_GEMM(T, NAME)                                                               \
DN_DEFINE_TILE(T, NAME##_tile_4x3, 4, 3)                                                      \
DN_DEFINE_TILE(T, NAME##_tile_6x2, 6, 2)                                                      \
DN_DEFINE_TILED_GEMM(T, NAME##_4x3, NAME##_tile_4x3, 4, 3 * (DN_VBYTES / (int)sizeof(T)))     \
DN_DEFINE_TILED_GEMM(T, NAME##_6x2, NAME##_tile_6x2, 6, 2 * (DN_VBYTES / (int)sizeof(T)))     \
static inline int NAME(int M, int N, int K, const T *A, int lda, const T *B, int ldb,         \
                       T *C, int ldc, int accumulate)                                         \
{                                                                                             \
    const int VL = DN_VBYTES / (int)sizeof(T);                                                \
    long work_4x3 = dn_padded(M, 4) * dn_padded(N, 3 * VL);                                   \
    long work_6x2 = dn_padded(M, 6) * dn_padded(N, 2 * VL);                                   \
    if (work_6x2 < work_4x3)                                                                  \
        return NAME##_6x2(M, N, K, A, lda, B, ldb, C, ldc, accumulate);                       \
    return NAME##_4x3(M, N, K, A, lda, B, ldb, C, ldc, accumulate);                           \
}

DN_DEFINE_GEMM(float, dn_sgemm)
DN_DEFINE_GEMM(double, dn_dgemm)

#endif /* DEEPNET_GEMM_H */
