/* The AVX2 path's 3x3, stride-1 convolution as integer Winograd F(4x4, 3x3), exact.
 *
 * 36 products per 4x4 outputs (F(2x2, 3x3) takes 64).  With d = x - x_zero, scaled so that
 * all is integer and the left side's output transform is plain A^T (the cheaper one, applied
 * 6 times; the right's, 4 times), G_L = 24 G, G_R = diag(24, 12, 12, 24, 24, 1) G and
 * A_R = diag(1, 2, 2, 1, 1, 24) A:
 *   V = B^T d B                          |V| <= 100 * 255, int16,
 *   U = G_L g G_R^T                      |U| <= 24 * 7 * 127, int16 (pack_filters),
 *   M = sum_c U V                        vpmaddwd over channel pairs (< 2^31), int32, wrapping,
 *   Y = A^T M A_R = 576 * the sums       mod 2^32,
 * and 576 = 64 * 9: Y times the inverse of 9 mod 2^32 is 64 * the sums mod 2^32, exact while
 * |sum| < 2^25 (conv_int8 checks 255 * max sum|w| below it).  The tiles are 4x4 output blocks
 * (pooled: 2x2 pooled pixels; where the output ends inside one, it is cut); 8 tiles a vector, in the image's tile
 * order: with tile rows of 5 or more, 8 of one row (the last step overshoots into the next
 * row's slots, which it then rewrites); with rows of 4 or 2, two or four whole rows.
 * Included by deepnet_int8.h inside its AVX2 target region, after deepnet_int8_winograd.h.
 */

#define DN8_WINOGRAD4_INVERSE_9 0x38E38E39   /* 9 * 0x38E38E39 = 1 mod 2^32 */

/* The 6 columns d_k (k = 0..5) of one input row of 8 tiles, both channels, int16 pairs (lo,
 * hi) of tile 0, of tile 1, ... (V's layout).  half[h] is where tiles 2h, 2h + 1
 * start in the row (relative to lo and hi); `pairs`: half[1] = half[0] + 8 and half[3] =
 * half[2] + 8, so that each lane is one 16-byte load. */
static inline void dn8_winograd4_columns_avx2(const uint8_t* lo, const uint8_t* hi, const size_t half[4], int pairs,
                                              __m256i d[6])
{
    /* per lane: byte 4 t + k to 4 k + t (the 4 tiles' columns k = 0..3, one dword each) */
    const __m256i transpose = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                               0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i zero = _mm256_setzero_si256();
    __m256i t[2][2];   /* [lo, hi][columns 0-3, columns 4-7] */
    int c, s;
#pragma GCC unroll 2
    for (c = 0; c < 2; c++) {
        const uint8_t* row = c ? hi : lo;
#pragma GCC unroll 2
        for (s = 0; s < 2; s++) {
            const uint8_t* p = row + 4 * s;   /* columns 4 s to 4 s + 3 of each tile */
            __m256i bytes;
            if (pairs)
                bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(p + half[0]))),
                                                _mm_loadu_si128((const __m128i*)(p + half[2])), 1);
            else
                bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(dn8_load_halves_avx2(p + half[0], p + half[1])),
                                                dn8_load_halves_avx2(p + half[2], p + half[3]), 1);
            t[c][s] = _mm256_shuffle_epi8(bytes, transpose);
        }
    }
    /* per lane: the (lo, hi) bytes of 4 tiles in column k, then in column k + 1; widened */
    __m256i k01 = _mm256_unpacklo_epi8(t[0][0], t[1][0]), k23 = _mm256_unpackhi_epi8(t[0][0], t[1][0]);
    __m256i k45 = _mm256_unpacklo_epi8(t[0][1], t[1][1]);
    d[0] = _mm256_unpacklo_epi8(k01, zero);
    d[1] = _mm256_unpackhi_epi8(k01, zero);
    d[2] = _mm256_unpacklo_epi8(k23, zero);
    d[3] = _mm256_unpackhi_epi8(k23, zero);
    d[4] = _mm256_unpacklo_epi8(k45, zero);
    d[5] = _mm256_unpackhi_epi8(k45, zero);
}

/* r = B^T d for 6 vectors of int16 (F(4x4, 3x3)'s input transform in one direction). */
static inline void dn8_winograd4_bt_avx2(const __m256i d[6], __m256i r[6])
{
    __m256i d21 = _mm256_sub_epi16(d[2], d[1]), d12 = _mm256_add_epi16(d[1], d[2]);
    __m256i d34 = _mm256_add_epi16(d[3], d[4]), d43 = _mm256_sub_epi16(d[4], d[3]);
    __m256i d42 = _mm256_sub_epi16(d[4], d[2]), d31 = _mm256_sub_epi16(d[3], d[1]);
    __m256i twice31 = _mm256_slli_epi16(d31, 1);
    r[0] = _mm256_add_epi16(_mm256_slli_epi16(_mm256_sub_epi16(d[0], d[2]), 2), d42);   /* 4 d0 - 5 d2 + d4 */
    r[1] = _mm256_sub_epi16(d34, _mm256_slli_epi16(d12, 2));                            /* d3 + d4 - 4 (d1 + d2) */
    r[2] = _mm256_sub_epi16(d43, _mm256_slli_epi16(d21, 2));                            /* d4 - d3 + 4 (d1 - d2) */
    r[3] = _mm256_add_epi16(d42, twice31);                                              /* d4 - d2 + 2 (d3 - d1) */
    r[4] = _mm256_sub_epi16(d42, twice31);                                              /* d4 - d2 - 2 (d3 - d1) */
    r[5] = _mm256_sub_epi16(_mm256_sub_epi16(d[5], d[3]), _mm256_slli_epi16(twice31, 1));   /* 4 d1 - 5 d3 + d5 */
}

/* V of 8 tiles (both channels of a pair) whose top-left input pixels are at lo and hi, the
 * tiles' halves as in dn8_winograd4_columns_avx2; V's 36 matrices in order, vx apart. */
static inline void dn8_winograd4_tiles_avx2(const uint8_t* lo, const uint8_t* hi, const size_t half[4], int pairs,
                                            size_t Wp, __m256i zero36, int32_t* target, size_t vx)
{
    __m256i e[6][6], d[6], column[6], v[6];
    int i, j;
#pragma GCC unroll 6
    for (i = 0; i < 6; i++) {   /* each row's d B (B^T applied to its columns) */
        dn8_winograd4_columns_avx2(lo + i * Wp, hi + i * Wp, half, pairs, d);
        dn8_winograd4_bt_avx2(d, e[i]);
    }
#pragma GCC unroll 6
    for (j = 0; j < 6; j++) {   /* then B^T (d B), one column of V at a time */
#pragma GCC unroll 6
        for (i = 0; i < 6; i++)
            column[i] = e[i][j];
        dn8_winograd4_bt_avx2(column, v);
        if (j == 1)   /* B^T 1 = (0, -6, 0, 0, 0, 0): only V[1][1] sees x_zero, 36 times */
            v[1] = _mm256_sub_epi16(v[1], zero36);
        int32_t* column_target = target + (size_t)j * vx;
#pragma GCC unroll 6
        for (i = 0; i < 6; i++) {
            _mm256_storeu_si256((__m256i*)column_target, v[i]);
            column_target += 6 * vx;
            __asm__("" : "+r"(column_target));   /* one running pointer, not 36 addresses kept */
        }
    }
}

/* V[xi][c2][t] (36 matrices) for one image's T4 = TH4 TW4 tiles, from t0 on, and with `second`
 * (T4 = 4 only), for the next image's too, whose padded image is `second` bytes further. */
static void dn8_winograd4_input_avx2(const dn8_conv* cv, const uint8_t* padded, int TH4, int TW4, int t0, int ld,
                                     size_t second, int32_t* V)
{
    const size_t Wp = (size_t)cv->Wp;
    const int C2 = (cv->C + 1) / 2, T4 = TH4 * TW4;
    const size_t vx = (size_t)C2 * ld + 16;   /* DN8_WINOGRAD_VX */
    const __m256i zero36 = _mm256_set1_epi16((int16_t)(36 * cv->x_zero));
    int c2, ty, tx, s0, h;
    for (c2 = 0; c2 < C2; c2++) {
        const uint8_t *lo, *hi;
        dn8_winograd_pair_planes(cv, padded, c2, &lo, &hi);
        int32_t* row_V = V + (size_t)c2 * ld + t0;
        if (TW4 > 4) {   /* 8 tiles of one row, 4 bytes apart */
            const size_t half[4] = {0, 8, 16, 24};
            for (ty = 0; ty < TH4; ty++)
                for (tx = 0; tx < TW4; tx += 8) {
                    const size_t corner = 4 * (size_t)ty * Wp + 4 * (size_t)tx;
                    dn8_winograd4_tiles_avx2(lo + corner, hi + corner, half, 1, Wp, zero36,
                                             row_V + (size_t)ty * TW4 + tx, vx);
                }
        } else {   /* rows of 4 or 2 tiles: 2 or 4 rows a step (past the last: the second image's, or the last again) */
            for (s0 = 0; s0 < T4; s0 += 8) {
                size_t half[4];
#pragma GCC unroll 4
                for (h = 0; h < 4; h++) {
                    int t = s0 + 2 * h;
                    size_t image = 0;
                    if (t >= T4 && second) {
                        t -= T4;
                        image = second;
                    } else if (t >= T4) {
                        t = T4 - 2;
                    }
                    half[h] = image + 4 * (size_t)(t / TW4) * Wp + 4 * (size_t)(t % TW4);
                }
                dn8_winograd4_tiles_avx2(lo, hi, half, half[1] == half[0] + 8 && half[3] == half[2] + 8, Wp, zero36,
                                         row_V + s0, vx);
            }
        }
    }
}

/* y = A^T m for 6 vectors of int32 (the output transform's left side, mod 2^32). */
static inline void dn8_winograd4_at_avx2(const __m256i m[6], __m256i y[4])
{
    __m256i a = _mm256_add_epi32(m[1], m[2]), b = _mm256_sub_epi32(m[1], m[2]);
    __m256i c = _mm256_add_epi32(m[3], m[4]), d = _mm256_sub_epi32(m[3], m[4]);
    y[0] = _mm256_add_epi32(_mm256_add_epi32(m[0], a), c);                                   /* m0 + a + c */
    y[1] = _mm256_add_epi32(b, _mm256_slli_epi32(d, 1));                                      /* b + 2 d */
    y[2] = _mm256_add_epi32(a, _mm256_slli_epi32(c, 2));                                      /* a + 4 c */
    y[3] = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_slli_epi32(d, 3)), m[5]);             /* b + 8 d + m5 */
}

/* y = A_R^T m (A_R = diag(1, 2, 2, 1, 1, 24) A: the right side, mod 2^32). */
static inline void dn8_winograd4_atr_avx2(const __m256i m[6], __m256i y[4])
{
    __m256i a = _mm256_add_epi32(m[1], m[2]), b = _mm256_sub_epi32(m[1], m[2]);
    __m256i c = _mm256_add_epi32(m[3], m[4]), d = _mm256_sub_epi32(m[3], m[4]);
    __m256i b2 = _mm256_slli_epi32(b, 1), three5 = _mm256_add_epi32(m[5], _mm256_slli_epi32(m[5], 1));
    y[0] = _mm256_add_epi32(_mm256_add_epi32(m[0], _mm256_slli_epi32(a, 1)), c);                  /* m0 + 2 a + c */
    y[1] = _mm256_slli_epi32(_mm256_add_epi32(b, d), 1);                                           /* 2 b + 2 d */
    y[2] = _mm256_slli_epi32(_mm256_add_epi32(a, _mm256_slli_epi32(c, 1)), 1);                     /* 2 a + 4 c */
    y[3] = _mm256_add_epi32(b2, _mm256_slli_epi32(_mm256_add_epi32(d, three5), 3));                /* 2 b + 8 d + 24 m5 */
}

/* 64 times the 4x4 sums of 8 tiles (y[i][j], exact) from their M (matrices xi_stride apart). */
static inline void dn8_winograd4_output8_avx2(const int32_t* m, size_t xi_stride, __m256i y[4][4])
{
    const __m256i inverse9 = _mm256_set1_epi32(DN8_WINOGRAD4_INVERSE_9);
    __m256i half[4][6], column[6], rows[4];
    int i, j;
#pragma GCC unroll 6
    for (j = 0; j < 6; j++) {   /* A^T M, a column at a time */
        const int32_t* source = m + (size_t)j * xi_stride;
#pragma GCC unroll 6
        for (i = 0; i < 6; i++) {
            column[i] = _mm256_loadu_si256((const __m256i*)source);
            source += 6 * xi_stride;
            __asm__("" : "+r"(source));   /* one running pointer, not 36 addresses kept */
        }
        dn8_winograd4_at_avx2(column, rows);
#pragma GCC unroll 4
        for (i = 0; i < 4; i++)
            half[i][j] = rows[i];
    }
#pragma GCC unroll 4
    for (i = 0; i < 4; i++) {   /* then (A^T M) A_R = 576 * the sums, times 9^-1 */
        dn8_winograd4_atr_avx2(half[i], y[i]);
#pragma GCC unroll 4
        for (j = 0; j < 4; j++)
            y[i][j] = _mm256_mullo_epi32(y[i][j], inverse9);
    }
}

/* The requantized bytes (INT8_SPEC) of acc[j] + bias, j = 0..3 (8 tiles' columns j of one
 * row), in pixel order: tile 0's 4 pixels, then tile 1's, ... */
static inline __m256i dn8_winograd4_requantize_row_avx2(const __m256i acc[4], __m256i bias, __m256 scale,
                                                         __m256i out_zero, __m256 low, __m256 high)
{
    const __m256i transpose = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                               0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m256i q[4];
    int j;
#pragma GCC unroll 4
    for (j = 0; j < 4; j++) {
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc[j], bias)), scale);
        q[j] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, low), high)), out_zero);
    }
    /* per lane: columns 0-3 of 4 tiles, 4 bytes each, to the tiles' 4 bytes each */
    __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    return _mm256_shuffle_epi8(bytes, transpose);
}

/* The plane F(4x4, 3x3) writes (pooled: the pooled plane), rows x columns, and its TH4 x TW4
 * tiles, `width` bytes of each row a tile (kernels/int8.pyx's winograd4_tiles counts the same). */
typedef struct {
    int rows, columns, width, TH4, TW4;
} dn8_winograd4_plane;

static inline dn8_winograd4_plane dn8_winograd4_plane_of(const dn8_conv* cv)
{
    dn8_winograd4_plane p;
    p.rows = cv->pool ? cv->OH / 2 : cv->OH;
    p.columns = cv->pool ? cv->OW / 2 : cv->OW;
    p.width = cv->pool ? 2 : 4;
    p.TH4 = (p.rows + p.width - 1) / p.width;
    p.TW4 = (p.columns + p.width - 1) / p.width;
    return p;
}

/* out's images [n0, n0 + images) (uint8, pooled or not) from the task's M (F(4x4, 3x3)). */
static void dn8_winograd4_output_avx2(const dn8_conv* cv, const int32_t* M, int n0, int images, void* out)
{
    const dn8_winograd4_plane geometry = dn8_winograd4_plane_of(cv);
    const int rows = geometry.rows, columns = geometry.columns, width = geometry.width;
    const int TH4 = geometry.TH4, TW4 = geometry.TW4, T4 = TH4 * TW4;
    const int Tcomp = DN8_ROUND_TILES(images * T4);
    const size_t image_out = (size_t)cv->FN * rows * columns;
    const size_t xi_stride = DN8_WINOGRAD_MX(cv->FNpad, images * T4);
    const int low = cv->relu ? cv->out_zero : 0;
    const __m256i zero8 = _mm256_set1_epi32(cv->out_zero);
    const __m256 low8 = _mm256_set1_ps((float)(low - cv->out_zero)), high8 = _mm256_set1_ps((float)(255 - cv->out_zero));
    int f, t, k, i, j;
    for (f = 0; f < cv->FN; f++) {
        const int32_t* m = M + (size_t)f * Tcomp;
        const __m256i bias8 = _mm256_set1_epi32(cv->bias[f]);
        const __m256 s8 = _mm256_set1_ps(cv->scale[f]);
        const int decreasing = cv->scale[f] < 0.0f;
        int image = 0, ty = 0, tx = 0;   /* where tile t lies */
        /* 8 of the task's tiles a step, across its images (past the last: slack) */
        for (t = 0; t < images * T4; t += 8) {
            uint8_t bytes[4][32];   /* per row of a tile: 8 tiles' bytes in pixel order */
            __m256i y[4][4];
            dn8_winograd4_output8_avx2(m + t, xi_stride, y);
            if (cv->pool) {
                /* the 2x2 windows' maxima (of 64 times the sums: the same order), or minima for a
                 * negative scale (the requantization is then decreasing) */
#pragma GCC unroll 2
                for (i = 0; i < 2; i++) {
                    __m128i q[2];
#pragma GCC unroll 2
                    for (j = 0; j < 2; j++) {
                        __m256i a = y[2 * i][2 * j], b = y[2 * i][2 * j + 1];
                        __m256i c = y[2 * i + 1][2 * j], d = y[2 * i + 1][2 * j + 1];
                        __m256i pooled = decreasing ? _mm256_min_epi32(_mm256_min_epi32(a, b), _mm256_min_epi32(c, d))
                                                    : _mm256_max_epi32(_mm256_max_epi32(a, b), _mm256_max_epi32(c, d));
                        q[j] = dn8_requantize8_avx2(_mm256_add_epi32(_mm256_srai_epi32(pooled, 6), bias8), s8, zero8,
                                                    low8, high8);
                    }
                    _mm_storeu_si128((__m128i*)bytes[i], _mm_unpacklo_epi8(q[0], q[1]));
                }
            } else {
#pragma GCC unroll 4
                for (i = 0; i < 4; i++) {
#pragma GCC unroll 4
                    for (j = 0; j < 4; j++)
                        y[i][j] = _mm256_srai_epi32(y[i][j], 6);
                    _mm256_storeu_si256((__m256i*)bytes[i],
                                        dn8_winograd4_requantize_row_avx2(y[i], bias8, s8, zero8, low8, high8));
                }
            }
            if (TW4 <= 2) {   /* rows of 1 or 2 tiles: tile by tile, a whole one in fixed-size stores */
                for (k = 0; k < 8 && t + k < images * T4; k++) {
                    uint8_t* corner = (uint8_t*)out + (size_t)(n0 + image) * image_out + (size_t)f * rows * columns +
                                      (size_t)(ty * width) * columns + (size_t)(tx * width);
                    const int tile_rows = rows - ty * width < width ? rows - ty * width : width;
                    const int tile_columns = columns - tx * width < width ? columns - tx * width : width;
                    if (tile_rows == width && tile_columns == width && width == 2) {
                        memcpy(corner, bytes[0] + 2 * k, 2);
                        memcpy(corner + columns, bytes[1] + 2 * k, 2);
                    } else if (tile_rows == width && tile_columns == width) {
#pragma GCC unroll 4
                        for (i = 0; i < 4; i++)
                            memcpy(corner + (size_t)i * columns, bytes[i] + 4 * k, 4);
                    } else {   /* cut at the plane's edge */
                        for (i = 0; i < tile_rows; i++)
                            for (j = 0; j < tile_columns; j++)
                                corner[(size_t)i * columns + j] = bytes[i][k * width + j];
                    }
                    if (++tx == TW4) {
                        tx = 0;
                        if (++ty == TH4) {
                            ty = 0;
                            image++;
                        }
                    }
                }
                continue;
            }
            for (k = 0; k < 8 && t + k < images * T4;) {   /* runs along a tile row, cut at the plane's edge */
                uint8_t* plane = (uint8_t*)out + (size_t)(n0 + image) * image_out + (size_t)f * rows * columns;
                int run = 8 - k < TW4 - tx ? 8 - k : TW4 - tx;
                int n_bytes = run * width < columns - tx * width ? run * width : columns - tx * width;
                for (i = 0; i < width && ty * width + i < rows; i++)
                    dn8_copy_bytes(plane + (size_t)(ty * width + i) * columns + tx * width, bytes[i] + k * width,
                                   (size_t)n_bytes);
                k += run;
                tx += run;
                if (tx == TW4) {
                    tx = 0;
                    if (++ty == TH4) {
                        ty = 0;
                        image++;
                    }
                }
            }
        }
    }
}

/* Images [n0, n1) (whole) of x into out (uint8, pooled or not), through F(4x4, 3x3): the
 * tiles cover the output (pooled: its first 2 PH rows and 2 PW columns), those past it cut.
 * Buffers as dn8_winograd_task_avx2's, V and M of 36 matrices (DN8_WINOGRAD_V(36, C, tiles),
 * DN8_WINOGRAD_M(36, FNpad, tiles) int32), padded two padded images (images of 4 tiles go in
 * pairs); a cut tile reads up to 3 rows past a padded image. */
static void dn8_winograd4_task_avx2(const dn8_conv* cv, const uint8_t* x, int n0, int n1, uint8_t* padded,
                                    int32_t* V, int32_t* M, void* out)
{
    const dn8_winograd4_plane geometry = dn8_winograd4_plane_of(cv);
    const int TH4 = geometry.TH4, TW4 = geometry.TW4, T4 = TH4 * TW4, images = n1 - n0;
    const int Tcomp = DN8_ROUND_TILES(images * T4), ld = Tcomp + 8;
    const size_t image_in = (size_t)cv->C * cv->H * cv->W;
    const size_t image_padded = (size_t)cv->C * cv->Hp * cv->Wp;
    int n;
    for (n = n0; n < n1; n++) {
        dn8_pad_image(cv, x + (size_t)n * image_in, padded);
        if (T4 == 4 && n + 1 < n1) {   /* two images of 4 tiles a step */
            dn8_pad_image(cv, x + (size_t)(n + 1) * image_in, padded + image_padded);
            dn8_winograd4_input_avx2(cv, padded, TH4, TW4, (n - n0) * T4, ld, image_padded, V);
            n++;
            continue;
        }
        dn8_winograd4_input_avx2(cv, padded, TH4, TW4, (n - n0) * T4, ld, 0, V);
    }
    dn8_winograd_gemm_avx2(cv, 36, V, ld, Tcomp, images * T4, M);
    dn8_winograd4_output_avx2(cv, M, n0, images, out);
}
