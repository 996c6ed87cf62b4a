/* The AVX2 path's 3x3, stride-1 convolution as integer Winograd F(2x2, 3x3), exact.
 *
 * With d = x - x_zero (the padded border is then 0), V = B^T d B (|V| <= 4 * 255, int16),
 * U = (2G) g (2G)^T (the filters scaled by 4 so that G's halves are integers, |U| <= 9 * 127,
 * int16, packed by pack_filters), M = sum_c U V (vpmaddwd over pairs of channels, int32) and
 * Y = A^T M A = 4 * (the 2x2 outputs' sums), so Y >> 2 is the sum exactly: int32 wraps in M
 * and in the transform cancel, since 4 * |sum| < 2^31 (conv_int8 checks it).  That is 16
 * products per 2x2 outputs instead of 36.  Tiles are the output's 2x2 blocks (with pooling,
 * exactly the pooled pixels; without, an odd OH or OW cuts the last ones), row-major, the
 * task's images one after the other.  Each tile's sums are requantized straight from the
 * output transform (their maximum, when pooling).
 * Included by deepnet_int8.h inside its AVX2 target region, after the AVX2 body.
 */

/* The padded planes of channel pair c2: channels 2 c2 and 2 c2 + 1, or for an odd C's last
 * pair, channel C - 1 twice (against zero filters). */
static inline void dn8_winograd_pair_planes(const dn8_conv* cv, const uint8_t* padded, int c2, const uint8_t** lo,
                                            const uint8_t** hi)
{
    const size_t plane = (size_t)cv->Hp * cv->Wp;
    *lo = padded + (size_t)(2 * c2) * plane;
    *hi = padded + (size_t)(2 * c2 + 1 < cv->C ? 2 * c2 + 1 : cv->C - 1) * plane;
}

/* 8 bytes from lo, then 8 from hi. */
static inline __m128i dn8_load_halves_avx2(const uint8_t* lo, const uint8_t* hi)
{
    return _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(_mm_loadl_epi64((const __m128i*)lo)), (const double*)hi));
}

/* One row of 8 tiles' 4x4 inputs of channels lo and hi, times B: the int16 columns d0 - d2,
 * d1 + d2, d2 - d1, d1 - d3, each 128-bit lane (lo's 4 tiles, hi's same 4 tiles), tiles 0-3
 * in the low lane and 4-7 in the high one.  With `two`, tiles 4-7 are the next tile row's
 * first 4 (the row 2 Wp further on). */
static inline void dn8_winograd_row_avx2(const uint8_t* lo, const uint8_t* hi, int two, int Wp, __m256i e[4])
{
    const __m256i low_bytes = _mm256_set1_epi16(0x00FF);
    __m256i a, b;   /* per lane: 8 pixels of lo, then the same 8 of hi (b: 2 further on) */
    if (two) {
        const size_t below = 2 * (size_t)Wp;
        a = _mm256_inserti128_si256(_mm256_castsi128_si256(dn8_load_halves_avx2(lo, hi)),
                                    dn8_load_halves_avx2(lo + below, hi + below), 1);
        b = _mm256_inserti128_si256(_mm256_castsi128_si256(dn8_load_halves_avx2(lo + 2, hi + 2)),
                                    dn8_load_halves_avx2(lo + 2 + below, hi + 2 + below), 1);
    } else {
        a = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)lo)),
                                    _mm_loadu_si128((const __m128i*)hi), 1);
        b = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(lo + 2))),
                                    _mm_loadu_si128((const __m128i*)(hi + 2)), 1);
        a = _mm256_permute4x64_epi64(a, 0xD8);   /* (lo 0-15 | hi 0-15) to (lo 0-7, hi 0-7 | lo 8-15, hi 8-15) */
        b = _mm256_permute4x64_epi64(b, 0xD8);
    }
    __m256i d0 = _mm256_and_si256(a, low_bytes), d1 = _mm256_srli_epi16(a, 8);
    __m256i d2 = _mm256_and_si256(b, low_bytes), d3 = _mm256_srli_epi16(b, 8);
    e[0] = _mm256_sub_epi16(d0, d2);
    e[1] = _mm256_add_epi16(d1, d2);
    e[2] = _mm256_sub_epi16(d2, d1);
    e[3] = _mm256_sub_epi16(d1, d3);
}

/* v's 8 tiles as int16 pairs (lo, hi) to V: each lane's (lo of 4 tiles, hi of them) becomes
 * (lo, hi) of the first tile, of the second, ... */
static inline void dn8_winograd_store_avx2(int32_t* target, __m256i v)
{
    const __m256i pairs = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
                                           0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    _mm256_storeu_si256((__m256i*)target, _mm256_shuffle_epi8(v, pairs));
}

/* V[xi][c2][t] for the image's tiles from t0 on: int16 pairs (channel 2 c2, 2 c2 + 1).  Eight
 * tiles of both channels a step (channel 2 c2 in the low 128-bit lane, 2 c2 + 1 in the high
 * one), in order (with rows of 4 tiles, two rows a step): a step's overshoot past a tile row
 * or the image is rewritten by the next one (the allocation has 8 tiles of slack); it reads up
 * to 32 bytes past a padded row.  The transform runs on x itself: B^T (x - x_zero) B =
 * B^T x B - x_zero B^T 1 1^T B, and B^T 1 = (0, 2, 0, 0), so only V[5] (row 1, column 1)
 * loses 4 x_zero. */
static void dn8_winograd_input_avx2(const dn8_conv* cv, const uint8_t* padded, int TH, int TW, int t0, int ld,
                                    int32_t* V)
{
    const int C2 = (cv->C + 1) / 2;
    const size_t vx = (size_t)C2 * ld + 16;   /* DN8_WINOGRAD_VX */
    const __m256i zero4 = _mm256_set1_epi16((int16_t)(4 * cv->x_zero));
    int c2, ty, tx, xi, two;
    for (c2 = 0; c2 < C2; c2++) {
        const uint8_t *lo_plane, *hi_plane;
        dn8_winograd_pair_planes(cv, padded, c2, &lo_plane, &hi_plane);
        for (ty = 0; ty < TH; ty += 1 + two) {
            two = TW == 4 && ty + 1 < TH;   /* lanes' upper halves: the next tile row's 4 tiles */
            for (tx = 0; tx < TW; tx += 8) {
                const size_t corner = (size_t)(2 * ty) * cv->Wp + 2 * tx;
                /* V's 16 matrices in order, vx apart */
                int32_t* target = V + (size_t)c2 * ld + t0 + (size_t)ty * TW + tx;
                /* row by row, in an order that keeps few vectors live (all 48 at once would
                 * spill): each row's columns first (d B), then the rows (B^T (d B)) */
                __m256i e0[4], e1[4], e2[4], e3[4];
                dn8_winograd_row_avx2(lo_plane + corner, hi_plane + corner, two, cv->Wp, e0);
                dn8_winograd_row_avx2(lo_plane + corner + 2 * (size_t)cv->Wp, hi_plane + corner + 2 * (size_t)cv->Wp,
                                      two, cv->Wp, e2);
                for (xi = 0; xi < 4; xi++, target += vx)   /* row 0 of V: e0 - e2 */
                    dn8_winograd_store_avx2(target, _mm256_sub_epi16(e0[xi], e2[xi]));
                dn8_winograd_row_avx2(lo_plane + corner + cv->Wp, hi_plane + corner + cv->Wp, two, cv->Wp, e1);
                for (xi = 0; xi < 4; xi++, target += vx)   /* row 1: e1 + e2, less 4 x_zero at column 1 */
                    dn8_winograd_store_avx2(target, _mm256_sub_epi16(_mm256_add_epi16(e1[xi], e2[xi]),
                                                                     xi == 1 ? zero4 : _mm256_setzero_si256()));
                for (xi = 0; xi < 4; xi++, target += vx)   /* row 2: e2 - e1 */
                    dn8_winograd_store_avx2(target, _mm256_sub_epi16(e2[xi], e1[xi]));
                dn8_winograd_row_avx2(lo_plane + corner + 3 * (size_t)cv->Wp, hi_plane + corner + 3 * (size_t)cv->Wp,
                                      two, cv->Wp, e3);
                for (xi = 0; xi < 4; xi++, target += vx)   /* row 3: e1 - e3 */
                    dn8_winograd_store_avx2(target, _mm256_sub_epi16(e1[xi], e3[xi]));
            }
        }
    }
}

/* M[xi][f][t] = sum_c2 madd(V[xi][c2][t], U[xi][f][c2]) (U: cv->wino) for the task's tiles and
 * the first `count` matrices (16 for F(2x2, 3x3), 36 for F(4x4, 3x3)), 16 tiles a block, and 8
 * in the last one where 8 cover the rest (M's rows have Tcomp entries, a multiple of 16 (the
 * entries past the tiles rounded up to 8 are not written), its matrices are DN8_WINOGRAD_MX apart). */
static void dn8_winograd_gemm_avx2(const dn8_conv* cv, int count, const int32_t* V, int ld, int Tcomp, int tiles,
                                   int32_t* M)
{
    const int C2 = (cv->C + 1) / 2;
    const size_t vx = (size_t)C2 * ld + 16, mx = (size_t)cv->FNpad * Tcomp + 16;   /* DN8_WINOGRAD_VX, _MX */
    int xi, t0, f0, c2, j;
    for (xi = 0; xi < count; xi++) {
        const int32_t* Vx = V + (size_t)xi * vx;
        const int32_t* Ux = cv->wino + (size_t)xi * cv->FNpad * C2;
        int32_t* Mx = M + (size_t)xi * mx;
        for (t0 = 0; t0 < tiles; t0 += 16) {
            if (t0 + 8 >= tiles) {   /* the last 8 tiles or fewer: one vector of them */
                for (f0 = 0; f0 < cv->FN; f0 += 4) {
                    __m256i acc[4];
                    for (j = 0; j < 4; j++)
                        acc[j] = _mm256_setzero_si256();
                    const int32_t* a = Vx + t0;
                    const int32_t* u = Ux + (size_t)f0 * C2;
                    for (c2 = 0; c2 < C2; c2++, a += ld) {
                        __m256i a0 = _mm256_loadu_si256((const __m256i*)a);
                        __asm__("" : "+x"(a0));
#pragma GCC unroll 4
                        for (j = 0; j < 4; j++)
                            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(a0, _mm256_set1_epi32(u[(size_t)j * C2 + c2])));
                    }
                    for (j = 0; j < 4; j++)
                        _mm256_storeu_si256((__m256i*)(Mx + (size_t)(f0 + j) * Tcomp + t0), acc[j]);
                }
                break;
            }
            for (f0 = 0; f0 < cv->FN; f0 += 4) {
                __m256i acc[2][4];
                for (j = 0; j < 4; j++)
                    acc[0][j] = acc[1][j] = _mm256_setzero_si256();
                const int32_t* a = Vx + t0;
                const int32_t* u = Ux + (size_t)f0 * C2;
#pragma GCC unroll 4
                for (c2 = 0; c2 < C2; c2++, a += ld) {
                    __m256i a0 = _mm256_loadu_si256((const __m256i*)a);
                    __m256i a1 = _mm256_loadu_si256((const __m256i*)(a + 8));
                    /* in registers: GCC would fold the loads into each vpmaddwd, twice the loads */
                    __asm__("" : "+x"(a0), "+x"(a1));
#pragma GCC unroll 4
                    for (j = 0; j < 4; j++) {
                        __m256i w = _mm256_set1_epi32(u[(size_t)j * C2 + c2]);
                        acc[0][j] = _mm256_add_epi32(acc[0][j], _mm256_madd_epi16(a0, w));
                        acc[1][j] = _mm256_add_epi32(acc[1][j], _mm256_madd_epi16(a1, w));
                    }
                }
                for (j = 0; j < 4; j++) {
                    _mm256_storeu_si256((__m256i*)(Mx + (size_t)(f0 + j) * Tcomp + t0), acc[0][j]);
                    _mm256_storeu_si256((__m256i*)(Mx + (size_t)(f0 + j) * Tcomp + t0 + 8), acc[1][j]);
                }
            }
        }
    }
}

/* The 2x2 sums y[i][j] of 8 tiles from M (Y = A^T M A, then / 4 exactly; with quarter 0,
 * 4 times the sums: a caller that pools divides their maximum). */
static inline void dn8_winograd_output8_avx2(const int32_t* m, size_t xi_stride, __m256i y[2][2], int quarter)
{
    __m256i s[4], d[4];
    int j;
    for (j = 0; j < 4; j++) {   /* A^T M: rows m0 + m1 + m2 and m1 - m2 - m3 */
        __m256i m0 = _mm256_loadu_si256((const __m256i*)(m + (0 * 4 + j) * xi_stride));
        __m256i m1 = _mm256_loadu_si256((const __m256i*)(m + (1 * 4 + j) * xi_stride));
        __m256i m2 = _mm256_loadu_si256((const __m256i*)(m + (2 * 4 + j) * xi_stride));
        __m256i m3 = _mm256_loadu_si256((const __m256i*)(m + (3 * 4 + j) * xi_stride));
        s[j] = _mm256_add_epi32(_mm256_add_epi32(m0, m1), m2);
        d[j] = _mm256_sub_epi32(_mm256_sub_epi32(m1, m2), m3);
    }
    y[0][0] = _mm256_add_epi32(_mm256_add_epi32(s[0], s[1]), s[2]);
    y[0][1] = _mm256_sub_epi32(_mm256_sub_epi32(s[1], s[2]), s[3]);
    y[1][0] = _mm256_add_epi32(_mm256_add_epi32(d[0], d[1]), d[2]);
    y[1][1] = _mm256_sub_epi32(_mm256_sub_epi32(d[1], d[2]), d[3]);
    if (quarter) {
        y[0][0] = _mm256_srai_epi32(y[0][0], 2);
        y[0][1] = _mm256_srai_epi32(y[0][1], 2);
        y[1][0] = _mm256_srai_epi32(y[1][0], 2);
        y[1][1] = _mm256_srai_epi32(y[1][1], 2);
    }
}

/* The 16 requantized bytes (INT8_SPEC, as dn8_requantize8, low and high its float bounds) of
 * the 2x2 sums y + bias of 8 tiles, in pixel order: the low half holds the tiles' top rows
 * (y00, y01 of tile 0, then of tile 1, ...), the high half their bottom rows. */
static inline __m256i dn8_winograd_requantize8_avx2(__m256i y[2][2], __m256i bias, __m256 scale, __m256i out_zero,
                                                    __m256 low, __m256 high)
{
    __m256i q[4];
    int i;
    for (i = 0; i < 4; i++) {
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(y[i / 2][i % 2], bias)), scale);
        v = _mm256_min_ps(_mm256_max_ps(v, low), high);
        q[i] = _mm256_add_epi32(_mm256_cvtps_epi32(v), out_zero);
    }
    /* bytes, per 128-bit lane: y00 y01 y10 y11 of 4 tiles each (tiles 0-3, then 4-7) */
    __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i order = _mm256_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15,
                                           0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(bytes, order), 0xD8);
}

/* The first n (0 <= n <= 16) bytes of v to p, in pieces that stay inside them. */
static inline void dn8_store_bytes_avx2(uint8_t* p, __m128i v, int n)
{
    if (n == 16) {
        _mm_storeu_si128((__m128i*)p, v);
        return;
    }
    if (n & 8) {
        _mm_storel_epi64((__m128i*)p, v);
        v = _mm_srli_si128(v, 8);
        p += 8;
    }
    if (n & 4) {
        int32_t word = _mm_cvtsi128_si32(v);
        memcpy(p, &word, 4);
        v = _mm_srli_si128(v, 4);
        p += 4;
    }
    if (n & 2) {
        int16_t half = (int16_t)_mm_extract_epi16(v, 0);
        memcpy(p, &half, 2);
        v = _mm_srli_si128(v, 2);
        p += 2;
    }
    if (n & 1)
        *p = (uint8_t)_mm_cvtsi128_si32(v);
}

/* n bytes from source to target (no overlap); source has 16 readable bytes past them. */
static inline void dn8_copy_row_avx2(uint8_t* target, const uint8_t* source, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i*)(target + i), _mm_loadu_si128((const __m128i*)(source + i)));
    if (i < n)
        dn8_store_bytes_avx2(target + i, _mm_loadu_si128((const __m128i*)(source + i)), n - i);
}

/* One output channel's plane (unpooled, uint8) from its M: each 8 tiles' 2x2 sums + bias
 * requantized into stage in tile order (a tile row's top pixels, then its bottom ones, 2 TW
 * bytes each, 4 T + 32 bytes in all), then copied row by row (an odd OH or OW drops the
 * last tiles' bottom row or right column); 8 wide and a multiple of 4 high, straight into the plane. */
static void dn8_winograd_requantize_avx2(const dn8_conv* cv, int f, const int32_t* m, size_t xi_stride, int T,
                                         int TW, uint8_t* stage, uint8_t* plane)
{
    const int OH = cv->OH, OW = cv->OW, low = cv->relu ? cv->out_zero : 0;
    const __m256i bias8 = _mm256_set1_epi32(cv->bias[f]);
    const __m256 s8 = _mm256_set1_ps(cv->scale[f]);
    const __m256i zero8 = _mm256_set1_epi32(cv->out_zero);
    const __m256 low8 = _mm256_set1_ps((float)(low - cv->out_zero)), high8 = _mm256_set1_ps((float)(255 - cv->out_zero));
    uint8_t* bottom = stage + 2 * (size_t)T + 16;
    int t, ty;
    if (OW == 8 && OH % 4 == 0) {
        /* rows of 4 tiles, 8 tiles two whole rows: their 4 output rows are 32 bytes in a row */
        for (t = 0; t < T; t += 8) {
            __m256i y[2][2];
            dn8_winograd_output8_avx2(m + t, xi_stride, y, 1);
            __m256i bytes = dn8_winograd_requantize8_avx2(y, bias8, s8, zero8, low8, high8);
            __m128i top = _mm256_castsi256_si128(bytes), under = _mm256_extracti128_si256(bytes, 1);
            _mm_storeu_si128((__m128i*)(plane + 4 * (size_t)t), _mm_unpacklo_epi64(top, under));
            _mm_storeu_si128((__m128i*)(plane + 4 * (size_t)t + 16), _mm_unpackhi_epi64(top, under));
        }
        return;
    }
    for (t = 0; t < T; t += 8) {
        __m256i y[2][2];
        dn8_winograd_output8_avx2(m + t, xi_stride, y, 1);
        __m256i bytes = dn8_winograd_requantize8_avx2(y, bias8, s8, zero8, low8, high8);
        _mm_storeu_si128((__m128i*)(stage + 2 * t), _mm256_castsi256_si128(bytes));
        _mm_storeu_si128((__m128i*)(bottom + 2 * t), _mm256_extracti128_si256(bytes, 1));
    }
    for (ty = 0; 2 * ty < OH; ty++) {
        uint8_t* row = plane + (size_t)(2 * ty) * OW;
        dn8_copy_row_avx2(row, stage + (size_t)(2 * ty) * TW, OW);
        if (2 * ty + 1 < OH)
            dn8_copy_row_avx2(row + OW, bottom + (size_t)(2 * ty) * TW, OW);
    }
}

/* Images [n0, n1) (whole) of x into out, through Winograd.  V holds DN8_WINOGRAD_V(C, tiles),
 * M DN8_WINOGRAD_M(FNpad, tiles) int32 and sums FNpad OH OW int32 + 4 T + 64 bytes (an
 * unpooled plane's staging; a float output's or small or negative-scale pooling's sums). */
static void dn8_winograd_task_avx2(const dn8_conv* cv, const uint8_t* x, int n0, int n1, uint8_t* padded,
                                   int32_t* V, int32_t* M, int32_t* sums, void* out)
{
    const int PH = cv->OH / 2, PW = cv->OW / 2;
    const int TH = cv->pool ? PH : (cv->OH + 1) / 2, TW = cv->pool ? PW : (cv->OW + 1) / 2;
    const int T = TH * TW, images = n1 - n0;
    const int Tcomp = DN8_ROUND_TILES(images * T), ld = Tcomp + 8;
    const size_t image_in = (size_t)cv->C * cv->H * cv->W;
    const size_t image_out = (size_t)cv->FN * (cv->pool ? (size_t)PH * PW : (size_t)cv->OH * cv->OW)
                             * (cv->out_float ? sizeof(float) : 1);
    const int low = cv->relu ? cv->out_zero : 0;
    int n, f, t, k, i, j;
    for (n = n0; n < n1; n++) {
        dn8_pad_image(cv, x + (size_t)n * image_in, padded);
        dn8_winograd_input_avx2(cv, padded, TH, TW, (n - n0) * T, ld, V);
    }
    dn8_winograd_gemm_avx2(cv, 16, V, ld, Tcomp, images * T, M);
    const size_t xi_stride = DN8_WINOGRAD_MX(cv->FNpad, images * T);
    for (n = n0; n < n1; n++) {
        char* image = (char*)out + (size_t)n * image_out;
        for (f = 0; f < cv->FN; f++) {
            const int32_t* m = M + (size_t)f * Tcomp + (size_t)(n - n0) * T;
            const float s = cv->scale[f];
            if (!cv->pool && !cv->out_float) {
                dn8_winograd_requantize_avx2(cv, f, m, xi_stride, T, TW, (uint8_t*)sums,
                                             (uint8_t*)image + (size_t)f * cv->OH * cv->OW);
                continue;
            }
            if (cv->pool && s >= 0.0f && T >= 8) {
                /* the tiles are the pooling windows: requantize their maxima */
                const __m256i bias8 = _mm256_set1_epi32(cv->bias[f]);
                const __m256 s8 = _mm256_set1_ps(s);
                const __m256i zero8 = _mm256_set1_epi32(cv->out_zero);
                const __m256 low8 = _mm256_set1_ps((float)(low - cv->out_zero));
                const __m256 high8 = _mm256_set1_ps((float)(255 - cv->out_zero));
                uint8_t* target = (uint8_t*)image + (size_t)f * T;
                for (t = 0; t < T; t += 8) {
                    __m256i y[2][2];
                    if (t > T - 8)
                        t = T - 8;
                    dn8_winograd_output8_avx2(m + t, xi_stride, y, 0);   /* 4 x: the maximum's / 4 is exact */
                    __m256i top = _mm256_max_epi32(y[0][0], y[0][1]), bottom = _mm256_max_epi32(y[1][0], y[1][1]);
                    __m256i acc = _mm256_add_epi32(_mm256_srai_epi32(_mm256_max_epi32(top, bottom), 2), bias8);
                    _mm_storel_epi64((__m128i*)(target + t), dn8_requantize8_avx2(acc, s8, zero8, low8, high8));
                }
                continue;
            }
            /* otherwise: the sums in pixel order, biased so that the common epilogue's
             * compensation (bias - x_zero sum(w)) leaves bias + the sum of w (x - x_zero) */
            int32_t* row = sums + (size_t)f * cv->OH * cv->OW;
            const int32_t shift = cv->x_zero * cv->wsum[f];
            const int rows = cv->pool ? 2 * PH : cv->OH;
            int ty = 0, tx = 0;   /* tile t's row and column */
            for (t = 0; t < T; t += 8) {
                __m256i y[2][2];
                int32_t values[2][2][8];
                dn8_winograd_output8_avx2(m + t, xi_stride, y, 1);
                for (i = 0; i < 2; i++)
                    for (j = 0; j < 2; j++)
                        _mm256_storeu_si256((__m256i*)values[i][j], y[i][j]);
                for (k = 0; k < 8 && t + k < T; k++) {
                    int32_t* pixel = row + (size_t)(2 * ty) * cv->OW + 2 * tx;
                    int right = 2 * tx + 1 < cv->OW, below = 2 * ty + 1 < rows;
                    pixel[0] = DN8_ADD(values[0][0][k], shift);
                    if (right)
                        pixel[1] = DN8_ADD(values[0][1][k], shift);
                    if (below) {
                        pixel[cv->OW] = DN8_ADD(values[1][0][k], shift);
                        if (right)
                            pixel[cv->OW + 1] = DN8_ADD(values[1][1][k], shift);
                    }
                    if (++tx == TW) {
                        tx = 0;
                        ty++;
                    }
                }
            }
        }
        if (!cv->pool && !cv->out_float)
            continue;
        if (!(cv->pool && T >= 8)) {
            dn8_epilogue_avx2(cv, sums, cv->OH * cv->OW, 0, cv->pool ? 2 * PH : cv->OH, image);
        } else {
            /* the pooled planes of negative scales are left: requantize-then-pool by the epilogue */
            for (f = 0; f < cv->FN; f++) {
                if (cv->scale[f] >= 0.0f)
                    continue;
                dn8_conv one = *cv;
                one.FN = 1;
                one.bias += f;
                one.wsum += f;
                one.scale += f;
                dn8_epilogue_avx2(&one, sums + (size_t)f * cv->OH * cv->OW, cv->OH * cv->OW, 0, 2 * PH,
                                  (uint8_t*)image + (size_t)f * PH * PW);
            }
        }
    }
}
