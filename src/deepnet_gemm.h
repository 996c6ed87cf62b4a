/* Single-threaded GEMM for the convolution kernels: C = A @ B (or C += A @ B).
 *
 * Row-major A (M x K, row stride lda), B (K x N, ldb), C (M x N, ldc).  The kernels call it
 * once per image from inside their OpenMP loop, so it must not start threads itself (a
 * BLAS would, and would oversubscribe the cores).
 *
 * A register-blocked micro-kernel computes MR x NR tiles of C: per step of k it broadcasts
 * MR values of A and loads NR values of B (three vectors), MR*3 independent FMA chains.
 * It is written with GCC/Clang vector extensions, so -march decides the instructions
 * (AVX2+FMA with -march=native on current x86, SSE2 otherwise) and one source serves
 * float and double.  Partial tiles at the right and bottom edges are computed on
 * zero-padded copies, so the micro-kernel never reads or writes out of bounds.
 */
#ifndef DEEPNET_GEMM_H
#define DEEPNET_GEMM_H

#include <stdlib.h>
#include <string.h>

#define DN_MR 4        /* rows of A per tile */
#define DN_NV 3        /* vectors of B per tile */
#define DN_VBYTES 32   /* bytes per vector */

#define DN_DEFINE_GEMM(T, NAME)                                                              \
typedef T NAME##_vec __attribute__((vector_size(DN_VBYTES)));                                \
typedef T NAME##_vec_u __attribute__((vector_size(DN_VBYTES), aligned(sizeof(T))));          \
enum { NAME##_VL = DN_VBYTES / sizeof(T), NAME##_NR = DN_NV * (DN_VBYTES / sizeof(T)) };    \
                                                                                             \
/* One full MR x NR tile: C[0:MR, 0:NR] (+)= A[0:MR, :] @ B[:, 0:NR]. */                    \
static inline void NAME##_tile(int K, const T *A, int lda, const T *B, int ldb,              \
                               T *C, int ldc, int accumulate)                                \
{                                                                                            \
    NAME##_vec acc[DN_MR][DN_NV];                                                            \
    for (int r = 0; r < DN_MR; r++)                                                          \
        for (int v = 0; v < DN_NV; v++)                                                      \
            acc[r][v] = (NAME##_vec){0};                                                     \
    for (int k = 0; k < K; k++) {                                                            \
        const T *b_row = B + (size_t)k * ldb;                                                \
        NAME##_vec b[DN_NV];                                                                 \
        for (int v = 0; v < DN_NV; v++)                                                      \
            b[v] = *(const NAME##_vec_u *)(b_row + v * NAME##_VL);                           \
        for (int r = 0; r < DN_MR; r++) {                                                    \
            NAME##_vec a = (NAME##_vec){0} + A[(size_t)r * lda + k];                         \
            for (int v = 0; v < DN_NV; v++)                                                  \
                acc[r][v] += a * b[v];                                                       \
        }                                                                                    \
    }                                                                                        \
    for (int r = 0; r < DN_MR; r++)                                                          \
        for (int v = 0; v < DN_NV; v++) {                                                    \
            NAME##_vec_u *c = (NAME##_vec_u *)(C + (size_t)r * ldc + v * NAME##_VL);         \
            *c = accumulate ? *c + acc[r][v] : acc[r][v];                                    \
        }                                                                                    \
}                                                                                            \
                                                                                             \
/* Returns 0 on success, -1 when the scratch for edge tiles cannot be allocated. */          \
static int NAME(int M, int N, int K, const T *A, int lda, const T *B, int ldb,               \
                T *C, int ldc, int accumulate)                                               \
{                                                                                            \
    const int NR = NAME##_NR;                                                                \
    T *edge_b = NULL, *edge_a = NULL, edge_c[DN_MR * NAME##_NR];                             \
    if (N % NR || M % DN_MR) {                                                               \
        edge_b = (T *)calloc((size_t)K * NR, sizeof(T));                                     \
        edge_a = (T *)calloc((size_t)DN_MR * K, sizeof(T));                                  \
        if (!edge_b || !edge_a) { free(edge_b); free(edge_a); return -1; }                   \
    }                                                                                        \
    for (int j0 = 0; j0 < N; j0 += NR) {                                                     \
        int nc = N - j0 < NR ? N - j0 : NR;                                                  \
        const T *b = B + j0;                                                                 \
        int ldb_tile = ldb;                                                                  \
        if (nc < NR) {               /* right edge: zero-padded copy of B's last columns */  \
            for (int k = 0; k < K; k++)                                                      \
                memcpy(edge_b + (size_t)k * NR, B + (size_t)k * ldb + j0, nc * sizeof(T));   \
            b = edge_b;                                                                      \
            ldb_tile = NR;                                                                   \
        }                                                                                    \
        for (int i0 = 0; i0 < M; i0 += DN_MR) {                                              \
            int mr = M - i0 < DN_MR ? M - i0 : DN_MR;                                        \
            const T *a = A + (size_t)i0 * lda;                                               \
            int lda_tile = lda;                                                              \
            if (mr < DN_MR) {        /* bottom edge: zero-padded copy of A's last rows */    \
                memset(edge_a, 0, (size_t)DN_MR * K * sizeof(T));                            \
                for (int r = 0; r < mr; r++)                                                 \
                    memcpy(edge_a + (size_t)r * K, A + (size_t)(i0 + r) * lda, K * sizeof(T)); \
                a = edge_a;                                                                  \
                lda_tile = K;                                                                \
            }                                                                                \
            T *c = C + (size_t)i0 * ldc + j0;                                                \
            if (mr == DN_MR && nc == NR) {                                                   \
                NAME##_tile(K, a, lda_tile, b, ldb_tile, c, ldc, accumulate);                \
                continue;                                                                    \
            }                                                                                \
            NAME##_tile(K, a, lda_tile, b, ldb_tile, edge_c, NR, 0);                         \
            for (int r = 0; r < mr; r++)                                                     \
                for (int j = 0; j < nc; j++)                                                 \
                    c[(size_t)r * ldc + j] = (accumulate ? c[(size_t)r * ldc + j] : 0)       \
                                             + edge_c[r * NR + j];                           \
        }                                                                                    \
    }                                                                                        \
    free(edge_b);                                                                            \
    free(edge_a);                                                                            \
    return 0;                                                                                \
}

DN_DEFINE_GEMM(float, dn_sgemm)
DN_DEFINE_GEMM(double, dn_dgemm)

#endif /* DEEPNET_GEMM_H */
