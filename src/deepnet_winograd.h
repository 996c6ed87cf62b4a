/* Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions of one zero-padded image
 * (Lavin & Gray 2016): each 2x2 block ("tile") of output pixels is computed from the 4x4
 * block of input around it with 16 multiplies per channel pair instead of 36.
 *
 *   V[xi][t][c] = (B^T d B)[xi]    d: the 4x4 input block of tile t in channel c
 *   M[xi][t][f] = sum_c V[xi][t][c] U[xi][c][f]   (16 gather GEMMs, U = G g G^T per filter)
 *   Y_t[f]      = A^T M[.][t][f] A   (the tile's 2x2 outputs)
 *
 * The weight gradient is the adjoint of the 16 GEMMs in U (GRADIENT, dn_winograd_*_filter_gradient):
 *
 *   Z[xi][t][f] = (A g_t A^T)[xi]    g_t: the tile's 2x2 output gradients of filter f
 *   dU[xi][c][f] += sum_t V[xi][t][c] Z[xi][t][f]   (16 gather GEMMs over the tiles)
 *
 * and dW = G^T dU G is left to the caller, once for the sum over all images.
 *
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1] and
 * G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] (the filters' transform is done by the
 * caller, conv.winograd_filters).  The tiles cover OH x OW; on an odd edge the last tile reads one row or column
 * past the padded image, taken as zero, and its extra outputs are not stored.  The output
 * is pixels x filters (row stride ld), like the direct gather GEMM's, so the epilogue is
 * shared.  One source for float and double, through GCC's vectorisation of the f loops.
 */
#ifndef DN_INCLUDING_BODIES   /* included directly: the kernels, as src/deepnet_isa.h sets them up */
#include "deepnet_isa.h"
#else   /* included by src/deepnet_isa.h once per variant, after the gather GEMM and the transposes */

/* The shapes' macros (DN_WINOGRAD_*) are in src/deepnet_isa.h. */
#ifndef DN_DEFINE_WINOGRAD
#define DN_DEFINE_WINOGRAD(T, NAME, GRADIENT, GEMM, TRANSPOSE) DN_DEFINE_WINOGRAD_(T, NAME, GRADIENT, GEMM, TRANSPOSE)
#define DN_DEFINE_WINOGRAD_(T, NAME, GRADIENT, GEMM, TRANSPOSE)                                       \
typedef T NAME##_vec __attribute__((vector_size(DN_VBYTES), aligned(sizeof(T))));            \
                                                                                             \
/* V[xi][t][c] (Cp channels) for the C x Hp x Wp padded image.  The image is first laid out  \
 * with its channels last (in `rows`, the channels past C zero), so that each tile's         \
 * transform is whole-vector arithmetic along the channels: rows of tiles are too short to   \
 * vectorise (4 to 14 tiles in DeepConvNet).  Input pixels past the bottom or right edge     \
 * (odd output sizes) read a zero pixel. */                                                  \
static inline void NAME##_input(const T *padded, int C, int Hp, int Wp, int TH, int TW,     \
                                T *rows, T *V)                                               \
{                                                                                            \
    typedef NAME##_vec vec;                                                                  \
    enum { VL = DN_VBYTES / sizeof(T) };                                                     \
    const int Cp = DN_WINOGRAD_CHANNELS(C, T), tiles = TH * TW, plane = Hp * Wp;             \
    const size_t xi_stride = DN_WINOGRAD_STRIDE((size_t)tiles * Cp);                         \
    T *const zero = rows + (size_t)plane * Cp;                                               \
    /* rows[p][c] = padded[c][p]: the epilogue's transpose, without bias or ReLU (in 8 x 8  \
     * register blocks for float; the scalar loop it replaced was half of this function). */ \
    TRANSPOSE(padded, plane, C, plane, NULL, 0, rows, Cp);                                   \
    if (Cp > C)                                                                              \
        for (int p = 0; p < plane; p++)                                                      \
            memset(rows + (size_t)p * Cp + C, 0, (size_t)(Cp - C) * sizeof(T));              \
    memset(zero, 0, (size_t)Cp * sizeof(T));                                                 \
    for (int ty = 0; ty < TH; ty++)                                                          \
        for (int tx = 0; tx < TW; tx++) {                                                    \
            const T *d[4][4];                                                                \
            for (int i = 0; i < 4; i++)                                                      \
                for (int j = 0; j < 4; j++) {                                                \
                    const int y = 2 * ty + i, x = 2 * tx + j;                                \
                    d[i][j] = y < Hp && x < Wp ? rows + ((size_t)y * Wp + x) * Cp : zero;    \
                }                                                                            \
            T *v = V + ((size_t)ty * TW + tx) * Cp;                                          \
            for (int c = 0; c < Cp; c += VL) {                                               \
                vec s[4][4];                                                                 \
                for (int j = 0; j < 4; j++) {  /* B^T d */                                   \
                    const vec d0 = *(const vec *)(d[0][j] + c), d1 = *(const vec *)(d[1][j] + c); \
                    const vec d2 = *(const vec *)(d[2][j] + c), d3 = *(const vec *)(d[3][j] + c); \
                    s[0][j] = d0 - d2;                                                       \
                    s[1][j] = d1 + d2;                                                       \
                    s[2][j] = d2 - d1;                                                       \
                    s[3][j] = d1 - d3;                                                       \
                }                                                                            \
                for (int a = 0; a < 4; a++) {  /* (B^T d) B */                               \
                    *(vec *)(v + (4 * a + 0) * xi_stride + c) = s[a][0] - s[a][2];           \
                    *(vec *)(v + (4 * a + 1) * xi_stride + c) = s[a][1] + s[a][2];           \
                    *(vec *)(v + (4 * a + 2) * xi_stride + c) = s[a][2] - s[a][1];           \
                    *(vec *)(v + (4 * a + 3) * xi_stride + c) = s[a][1] - s[a][3];           \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
}                                                                                            \
                                                                                             \
/* product[p][f] for the OH x OW output pixels from M[xi][t][f], f < ld (whole vectors). */  \
static inline void NAME##_output(const T *M, int TH, int TW, int ld, int OH, int OW,        \
                                 T *product)                                                 \
{                                                                                            \
    typedef NAME##_vec vec;                                                                  \
    enum { VL = DN_VBYTES / sizeof(T) };                                                     \
    const size_t xi_stride = DN_WINOGRAD_STRIDE((size_t)TH * TW * ld);                       \
    for (int ty = 0; ty < TH; ty++)                                                          \
        for (int tx = 0; tx < TW; tx++) {                                                    \
            const T *m = M + ((size_t)ty * TW + tx) * ld;                                    \
            const int y = 2 * ty, x = 2 * tx;                                                \
            T *y00 = product + ((size_t)y * OW + x) * ld;                                    \
            const int right = x + 1 < OW, below = y + 1 < OH;                                \
            for (int f = 0; f < ld; f += VL) {                                               \
                vec s[2][4];                                                                 \
                for (int j = 0; j < 4; j++) {  /* A^T m */                                   \
                    const vec m0 = *(const vec *)(m + (0 + j) * xi_stride + f);              \
                    const vec m1 = *(const vec *)(m + (4 + j) * xi_stride + f);              \
                    const vec m2 = *(const vec *)(m + (8 + j) * xi_stride + f);              \
                    const vec m3 = *(const vec *)(m + (12 + j) * xi_stride + f);             \
                    s[0][j] = m0 + m1 + m2;                                                  \
                    s[1][j] = m1 - m2 - m3;                                                  \
                }                                                                            \
                *(vec *)(y00 + f) = s[0][0] + s[0][1] + s[0][2];  /* (A^T m) A */            \
                if (right)                                                                   \
                    *(vec *)(y00 + ld + f) = s[0][1] - s[0][2] - s[0][3];                    \
                if (below) {                                                                 \
                    *(vec *)(y00 + (size_t)OW * ld + f) = s[1][0] + s[1][1] + s[1][2];       \
                    if (right)                                                               \
                        *(vec *)(y00 + (size_t)(OW + 1) * ld + f) = s[1][1] - s[1][2] - s[1][3]; \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
}                                                                                            \
                                                                                             \
/* Z[xi][t][f] = (A g_t A^T)[xi] from grad_t (OH*OW x ld, pixels x filters), the adjoint of  \
 * NAME##_output: pixels past an odd edge count as zero gradients. */                          \
static inline void NAME##_output_adjoint(const T *grad_t, int TH, int TW, int ld, int OH,     \
                                         int OW, T *Z)                                        \
{                                                                                            \
    typedef NAME##_vec vec;                                                                  \
    enum { VL = DN_VBYTES / sizeof(T) };                                                     \
    const size_t xi_stride = DN_WINOGRAD_STRIDE((size_t)TH * TW * ld);                       \
    const vec zero = {0};                                                                    \
    for (int ty = 0; ty < TH; ty++)                                                          \
        for (int tx = 0; tx < TW; tx++) {                                                    \
            T *z = Z + ((size_t)ty * TW + tx) * ld;                                          \
            const int y = 2 * ty, x = 2 * tx;                                                \
            const T *g00 = grad_t + ((size_t)y * OW + x) * ld;                               \
            const int right = x + 1 < OW, below = y + 1 < OH;                                \
            for (int f = 0; f < ld; f += VL) {                                               \
                const vec d00 = *(const vec *)(g00 + f);                                     \
                const vec d01 = right ? *(const vec *)(g00 + ld + f) : zero;                 \
                const vec d10 = below ? *(const vec *)(g00 + (size_t)OW * ld + f) : zero;    \
                const vec d11 = right && below ? *(const vec *)(g00 + (size_t)(OW + 1) * ld + f) : zero; \
                /* A g: rows g0, g0 + g1, g0 - g1, -g1 (g0, g1 the tile's rows) */           \
                const vec r[4][2] = {{d00, d01}, {d00 + d10, d01 + d11},                     \
                                     {d00 - d10, d01 - d11}, {-d10, -d11}};                  \
                for (int a = 0; a < 4; a++) {  /* (A g) A^T: [p q] -> [p, p + q, p - q, -q] */ \
                    *(vec *)(z + (4 * a + 0) * xi_stride + f) = r[a][0];                     \
                    *(vec *)(z + (4 * a + 1) * xi_stride + f) = r[a][0] + r[a][1];           \
                    *(vec *)(z + (4 * a + 2) * xi_stride + f) = r[a][0] - r[a][1];           \
                    *(vec *)(z + (4 * a + 3) * xi_stride + f) = -r[a][1];                    \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
}                                                                                            \
                                                                                             \
/* dU[xi] (C x ld, row stride ld) += sum_t V[xi][t][c] Z[xi][t][f]: one padded image's        \
 * weight gradient of the 3x3 stride-1 convolution, in the Winograd domain, from its output  \
 * gradients grad_t (OH*OW x ld, pixels x filters).  Scratch as NAME's, with Z in M. */       \
static inline void GRADIENT(const T *padded, int C, int OH, int OW,           \
                                          const T *grad_t, int ld, T *rows, T *V, T *Z,     \
                                          int *row_offset, int *step_offset, T *dU)         \
{                                                                                            \
    const int TH = DN_WINOGRAD_TILES(OH), TW = DN_WINOGRAD_TILES(OW), tiles = TH * TW;       \
    NAME##_input(padded, C, OH + 2, OW + 2, TH, TW, rows, V);                                \
    NAME##_output_adjoint(grad_t, TH, TW, ld, OH, OW, Z);                                    \
    const int Cp = DN_WINOGRAD_CHANNELS(C, T);                                               \
    for (int c = 0; c < C; c++)                                                              \
        row_offset[c] = c;                                                                   \
    for (int t = 0; t < tiles; t++)                                                          \
        step_offset[t] = t * Cp;                                                             \
    for (int xi = 0; xi < 16; xi++)                                                          \
        GEMM(C, ld, tiles, V + xi * DN_WINOGRAD_STRIDE((size_t)tiles * Cp), row_offset,       \
             step_offset, Z + xi * DN_WINOGRAD_STRIDE((size_t)tiles * ld), ld,               \
             dU + (size_t)xi * C * ld, ld, 1);                                               \
}                                                                                            \
                                                                                             \
/* product (OH*OW x ld) = the 3x3 convolution of the C x Hp x Wp padded image (Hp = OH + 2,  \
 * Wp = OW + 2) with the transformed filters U (16 x C x ld, ld a multiple of                 \
 * DN_GATHER_NR(T)).  Scratch (Cp = DN_WINOGRAD_CHANNELS(C, T)): rows DN_WINOGRAD_ROWS_SCRATCH(Cp, Hp, Wp), V 16 strides of TH*TW*Cp, M 16 of TH*TW*ld, offsets          \
 * max(TH*TW, C) ints each. */                                                                    \
static inline void NAME(const T *padded, int C, int OH, int OW, const T *U, int ld,        \
                        T *rows, T *V, T *M, int *row_offset, int *step_offset, T *product) \
{                                                                                            \
    const int TH = DN_WINOGRAD_TILES(OH), TW = DN_WINOGRAD_TILES(OW), tiles = TH * TW;       \
    NAME##_input(padded, C, OH + 2, OW + 2, TH, TW, rows, V);                                \
    const int Cp = DN_WINOGRAD_CHANNELS(C, T);                                               \
    for (int t = 0; t < tiles; t++)                                                          \
        row_offset[t] = t * Cp;                                                              \
    for (int c = 0; c < C; c++)                                                              \
        step_offset[c] = c;                                                                  \
    for (int xi = 0; xi < 16; xi++)                                                          \
        GEMM(tiles, ld, C, V + xi * DN_WINOGRAD_STRIDE((size_t)tiles * Cp), row_offset,       \
             step_offset, U + (size_t)xi * C * ld, ld,                                       \
             M + xi * DN_WINOGRAD_STRIDE((size_t)tiles * ld), ld, 0);                        \
    NAME##_output(M, TH, TW, ld, OH, OW, product);                                           \
}

#endif /* DN_DEFINE_WINOGRAD */

DN_DEFINE_WINOGRAD(float, DN_V(dn_winograd_sconv), DN_V(dn_winograd_sconv_filter_gradient),
                   DN_V(dn_gather_sgemm), DN_V(dn_store_transposed_float))
DN_DEFINE_WINOGRAD(double, DN_V(dn_winograd_dconv), DN_V(dn_winograd_dconv_filter_gradient),
                   DN_V(dn_gather_dgemm), DN_V(dn_store_transposed_double))
#endif /* DN_INCLUDING_BODIES */
