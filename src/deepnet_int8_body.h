/* One path of the int8 convolution (deepnet_int8.h includes this once per path, DN8_SUFFIX
 * naming it and DN8_KIND choosing its dot product, under the path's target pragma).
 *
 * The SIMD paths share one loop: a register tile of DN8_PT vectors of DN8_LANES pixels x
 * DN8_FT output channels, over k4, each step DN8_DOT(acc, 4 uint8 of each pixel, 4 int8 of
 * a channel broadcast); the real VNNI instruction and its emulations differ only in the
 * macros below.  No include guard: included once per path.
 */
#define DN8_CAT2_(a, b) a##_##b
#define DN8_CAT2(a, b) DN8_CAT2_(a, b)
#define DN8_NAME(name) DN8_CAT2(name, DN8_SUFFIX)

/* The im2col of one image's output rows [r0, r1) into cols [K4][stride] (4 bytes per uint32,
 * byte j = k - 4 k4), from pixel 0 of cols on.  The SIMD paths write up to 15 pixels past each
 * row (the next row, image or the stride's slack rewrite or ignore them) and read up to 15
 * bytes past a row of the padded image (its allocation has the slack). */
static void DN8_NAME(dn8_im2col)(const dn8_conv* cv, const uint8_t* padded, int r0, int r1, int stride,
                                 uint32_t* cols)
{
    const int OW = cv->OW, sw = cv->sw;
    int k4, j, oy, ox;
    for (k4 = 0; k4 < cv->K4; k4++) {
        const uint8_t* source[4];
        uint32_t* target = cols + (size_t)k4 * stride;
        for (j = 0; j < 4; j++)
            source[j] = padded + cv->offsets[4 * k4 + j];
        for (oy = r0; oy < r1; oy++) {
            size_t offset = (size_t)oy * cv->sh * cv->Wp;
            const uint8_t* s0 = source[0] + offset;
            const uint8_t* s1 = source[1] + offset;
            const uint8_t* s2 = source[2] + offset;
            const uint8_t* s3 = source[3] + offset;
            uint32_t* t = target + (size_t)(oy - r0) * OW;
            if (sw == 1 && OW >= 8) {
#if DN8_KIND != DN8_SCALAR
                for (ox = 0; ox < OW; ox += 16) {
                    __m128i b0 = _mm_loadu_si128((const __m128i*)(s0 + ox));
                    __m128i b1 = _mm_loadu_si128((const __m128i*)(s1 + ox));
                    __m128i b2 = _mm_loadu_si128((const __m128i*)(s2 + ox));
                    __m128i b3 = _mm_loadu_si128((const __m128i*)(s3 + ox));
                    __m128i low01 = _mm_unpacklo_epi8(b0, b1), high01 = _mm_unpackhi_epi8(b0, b1);
                    __m128i low23 = _mm_unpacklo_epi8(b2, b3), high23 = _mm_unpackhi_epi8(b2, b3);
                    _mm_storeu_si128((__m128i*)(t + ox), _mm_unpacklo_epi16(low01, low23));
                    _mm_storeu_si128((__m128i*)(t + ox + 4), _mm_unpackhi_epi16(low01, low23));
                    _mm_storeu_si128((__m128i*)(t + ox + 8), _mm_unpacklo_epi16(high01, high23));
                    _mm_storeu_si128((__m128i*)(t + ox + 12), _mm_unpackhi_epi16(high01, high23));
                }
#else
                for (ox = 0; ox < OW; ox++)
                    t[ox] = (uint32_t)s0[ox] | (uint32_t)s1[ox] << 8 | (uint32_t)s2[ox] << 16 | (uint32_t)s3[ox] << 24;
#endif
            } else {
                for (ox = 0; ox < OW; ox++)
                    t[ox] = (uint32_t)s0[ox * sw] | (uint32_t)s1[ox * sw] << 8 | (uint32_t)s2[ox * sw] << 16
                            | (uint32_t)s3[ox * sw] << 24;
            }
        }
    }
}

#if DN8_KIND == DN8_SCALAR

/* sums[f][p] = sum_k w[f][k] * cols[k][p], for the FN channels and the band's Pb pixels. */
static void DN8_NAME(dn8_gemm)(const dn8_conv* cv, const uint32_t* cols, int Pb, int Pcomp, int stride,
                               int32_t* sums)
{
    int f, k4, p;
    for (f = 0; f < cv->FN; f++) {
        int32_t* row = sums + (size_t)f * Pcomp;
        memset(row, 0, (size_t)Pb * sizeof(int32_t));
        for (k4 = 0; k4 < cv->K4; k4++) {
            uint32_t w = (uint32_t)cv->w4[(size_t)f * cv->K4 + k4];
            int32_t w0 = (int8_t)(w & 255), w1 = (int8_t)(w >> 8 & 255), w2 = (int8_t)(w >> 16 & 255),
                    w3 = (int8_t)(w >> 24);
            const uint32_t* a = cols + (size_t)k4 * stride;
            for (p = 0; p < Pb; p++)
                row[p] += w0 * (int32_t)(a[p] & 255) + w1 * (int32_t)(a[p] >> 8 & 255)
                          + w2 * (int32_t)(a[p] >> 16 & 255) + w3 * (int32_t)(a[p] >> 24);
        }
    }
}

#else /* the SIMD paths */

#if DN8_KIND == DN8_AVX2
#define DN8_LANES 8
#define DN8_VEC __m256i
#define DN8_A dn8_pair256
#define DN8_W dn8_pair256
#define DN8_ZERO() _mm256_setzero_si256()
#define DN8_STORE(p, v) _mm256_storeu_si256((__m256i*)(p), v)
static inline dn8_pair256 DN8_NAME(dn8_load_a)(const uint32_t* p)
{
    __m256i v = _mm256_loadu_si256((const __m256i*)p);
    dn8_pair256 a = {_mm256_and_si256(v, _mm256_set1_epi16(0x00FF)), _mm256_srli_epi16(v, 8)};
    return a;
}
static inline dn8_pair256 DN8_NAME(dn8_load_w)(const dn8_conv* cv, size_t index)
{
    dn8_pair256 w = {_mm256_set1_epi32(cv->w16[2 * index]), _mm256_set1_epi32(cv->w16[2 * index + 1])};
    return w;
}
#define DN8_DOT(acc, a, w) _mm256_add_epi32(_mm256_add_epi32(acc, _mm256_madd_epi16((a).e, (w).e)), \
                                            _mm256_madd_epi16((a).o, (w).o))

#elif DN8_KIND == DN8_AVXVNNI_EMULATED || DN8_KIND == DN8_AVXVNNI
#define DN8_LANES 8
#define DN8_VEC __m256i
#define DN8_A __m256i
#define DN8_W __m256i
#define DN8_ZERO() _mm256_setzero_si256()
#define DN8_STORE(p, v) _mm256_storeu_si256((__m256i*)(p), v)
static inline __m256i DN8_NAME(dn8_load_a)(const uint32_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
static inline __m256i DN8_NAME(dn8_load_w)(const dn8_conv* cv, size_t index) { return _mm256_set1_epi32(cv->w4[index]); }
#if DN8_KIND == DN8_AVXVNNI
#define DN8_DOT(acc, a, w) _mm256_dpbusd_avx_epi32(acc, a, w)
#else
#define DN8_DOT(acc, a, w) dn8_dpbusd_emulated(acc, a, w)
#endif

#elif DN8_KIND == DN8_AVX512VNNI_EMULATED
#define DN8_LANES 16
#define DN8_VEC dn8_x2
#define DN8_A dn8_x2
#define DN8_W __m256i
static inline dn8_x2 DN8_NAME(dn8_zero)(void)
{
    dn8_x2 z = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    return z;
}
#define DN8_ZERO() DN8_NAME(dn8_zero)()
#define DN8_STORE(p, v) (_mm256_storeu_si256((__m256i*)(p), (v).lo), _mm256_storeu_si256((__m256i*)(p) + 1, (v).hi))
static inline dn8_x2 DN8_NAME(dn8_load_a)(const uint32_t* p)
{
    dn8_x2 a = {_mm256_loadu_si256((const __m256i*)p), _mm256_loadu_si256((const __m256i*)p + 1)};
    return a;
}
static inline __m256i DN8_NAME(dn8_load_w)(const dn8_conv* cv, size_t index) { return _mm256_set1_epi32(cv->w4[index]); }
static inline dn8_x2 DN8_NAME(dn8_dot)(dn8_x2 acc, dn8_x2 a, __m256i w)
{
    dn8_x2 r = {dn8_dpbusd_emulated(acc.lo, a.lo, w), dn8_dpbusd_emulated(acc.hi, a.hi, w)};
    return r;
}
#define DN8_DOT(acc, a, w) DN8_NAME(dn8_dot)(acc, a, w)

#elif DN8_KIND == DN8_AVX512VNNI
#define DN8_LANES 16
#define DN8_VEC __m512i
#define DN8_A __m512i
#define DN8_W __m512i
#define DN8_ZERO() _mm512_setzero_si512()
#define DN8_STORE(p, v) _mm512_storeu_si512((void*)(p), v)
static inline __m512i DN8_NAME(dn8_load_a)(const uint32_t* p) { return _mm512_loadu_si512((const void*)p); }
static inline __m512i DN8_NAME(dn8_load_w)(const dn8_conv* cv, size_t index) { return _mm512_set1_epi32(cv->w4[index]); }
#define DN8_DOT(acc, a, w) _mm512_dpbusd_epi32(acc, a, w)

#else
#error "deepnet_int8_body.h: unknown DN8_KIND"
#endif

#define DN8_PT 2   /* pixel vectors of the register tile */
#define DN8_FT 4   /* output channels of the register tile */
#if DN8_PIXEL_PAD % (DN8_PT * DN8_LANES) || DN8_CHANNEL_PAD % DN8_FT
#error "deepnet_int8_body.h: the paddings must hold whole register tiles"
#endif

static void DN8_NAME(dn8_gemm)(const dn8_conv* cv, const uint32_t* cols, int Pb, int Pcomp, int stride,
                               int32_t* sums)
{
    const int K4 = cv->K4;
    int p0, f0, k4, i, j;
    (void)Pb;
    for (p0 = 0; p0 < Pcomp; p0 += DN8_PT * DN8_LANES) {
        for (f0 = 0; f0 < cv->FN; f0 += DN8_FT) {
            DN8_VEC acc[DN8_PT][DN8_FT];
            const uint32_t* a = cols + p0;
            const size_t w_row = (size_t)f0 * K4;
#pragma GCC unroll 8
            for (i = 0; i < DN8_PT; i++)
#pragma GCC unroll 8
                for (j = 0; j < DN8_FT; j++)
                    acc[i][j] = DN8_ZERO();
            for (k4 = 0; k4 < K4; k4++, a += stride) {
                DN8_A av[DN8_PT];
#pragma GCC unroll 8
                for (i = 0; i < DN8_PT; i++)
                    av[i] = DN8_NAME(dn8_load_a)(a + i * DN8_LANES);
#pragma GCC unroll 8
                for (j = 0; j < DN8_FT; j++) {
                    DN8_W w = DN8_NAME(dn8_load_w)(cv, w_row + (size_t)j * K4 + k4);
#pragma GCC unroll 8
                    for (i = 0; i < DN8_PT; i++)
                        acc[i][j] = DN8_DOT(acc[i][j], av[i], w);
                }
            }
#pragma GCC unroll 8
            for (j = 0; j < DN8_FT; j++)
#pragma GCC unroll 8
                for (i = 0; i < DN8_PT; i++)
                    DN8_STORE(sums + (size_t)(f0 + j) * Pcomp + p0 + i * DN8_LANES, acc[i][j]);
        }
    }
}

#undef DN8_LANES
#undef DN8_VEC
#undef DN8_A
#undef DN8_W
#undef DN8_ZERO
#undef DN8_STORE
#undef DN8_DOT
#undef DN8_PT
#undef DN8_FT

/* 8 requantized bytes (INT8_SPEC) of 8 accumulators; cvtps2dq rounds half to even.  The spec's
 * clip(clip(rint(y), -512, 512) + out_zero, low, 255) is rint(clip(y, low - out_zero, 255 -
 * out_zero)) + out_zero: rint is monotone and keeps the integer bounds, which lie inside
 * +-512; low and high are those two float bounds (NaN -> low, as -512 would give). */
static inline __m128i DN8_NAME(dn8_requantize8)(__m256i acc, __m256 scale, __m256i out_zero, __m256 low, __m256 high)
{
    __m256 y = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale), low), high);
    __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(y), out_zero);
    __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    return _mm_packus_epi16(words, words);
}

#endif /* DN8_KIND */

/* One image's sums (channel f at sums + f * ld, its band's pixels from 0) + comp, requantized
 * (and pooled) or scaled into the image's output planes, rows [r0, r1). */
static void DN8_NAME(dn8_epilogue)(const dn8_conv* cv, const int32_t* sums, int ld, int r0, int r1, void* out)
{
    const int OW = cv->OW, Pb = (r1 - r0) * OW, PH = cv->OH / 2, PW = cv->OW / 2;
    const int low = cv->relu ? cv->out_zero : 0;
    int f, p, py, px;
    for (f = 0; f < cv->FN; f++) {
        const int32_t* row = sums + (size_t)f * ld;
        const int32_t comp = DN8_ADD(cv->bias[f], -cv->x_zero * cv->wsum[f]);   /* |x_zero sum(w)| < 2^31 */
        const float s = cv->scale[f];
        p = 0;
#if DN8_KIND != DN8_SCALAR
        const __m256i comp8 = _mm256_set1_epi32(comp);
        const __m256 s8 = _mm256_set1_ps(s);
        const __m256i zero8 = _mm256_set1_epi32(cv->out_zero);
        const __m256 low8 = _mm256_set1_ps((float)(low - cv->out_zero)), high8 = _mm256_set1_ps((float)(255 - cv->out_zero));
#endif
        if (cv->out_float) {
            float* target = (float*)out + (size_t)f * cv->OH * OW + (size_t)r0 * OW;
#if DN8_KIND != DN8_SCALAR
            for (; p < Pb && Pb >= 8; p += 8) {
                if (p > Pb - 8)
                    p = Pb - 8;   /* the last vector overlaps the one before */
                __m256i acc = _mm256_add_epi32(_mm256_loadu_si256((const __m256i*)(row + p)), comp8);
                __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s8);
                _mm256_storeu_ps(target + p, cv->relu ? _mm256_max_ps(y, _mm256_setzero_ps()) : y);
            }
#endif
            for (; p < Pb; p++)
                target[p] = dn8_activate(DN8_ADD(row[p], comp), s, cv->relu);
        } else if (!cv->pool) {
            uint8_t* target = (uint8_t*)out + (size_t)f * cv->OH * OW + (size_t)r0 * OW;
#if DN8_KIND != DN8_SCALAR
            for (; p < Pb && Pb >= 8; p += 8) {
                if (p > Pb - 8)
                    p = Pb - 8;
                __m256i acc = _mm256_add_epi32(_mm256_loadu_si256((const __m256i*)(row + p)), comp8);
                _mm_storel_epi64((__m128i*)(target + p), DN8_NAME(dn8_requantize8)(acc, s8, zero8, low8, high8));
            }
#endif
            for (; p < Pb; p++)
                target[p] = dn8_requantize(DN8_ADD(row[p], comp), s, cv->out_zero, low);
        } else {
            /* the requantization is monotone: pool the sums (max, or min for a negative scale) */
            uint8_t* target = (uint8_t*)out + (size_t)f * PH * PW + (size_t)(r0 / 2) * PW;
            for (py = 0; py < (r1 - r0) / 2; py++) {
                const int32_t* top = row + (size_t)(2 * py) * OW;
                const int32_t* bottom = top + OW;
                uint8_t* t = target + (size_t)py * PW;
                px = 0;
#if DN8_KIND != DN8_SCALAR
                for (; px < PW && PW >= 8 && s >= 0.0f; px += 8) {
                    if (px > PW - 8)
                        px = PW - 8;
                    __m256i m0 = _mm256_max_epi32(_mm256_loadu_si256((const __m256i*)(top + 2 * px)),
                                                  _mm256_loadu_si256((const __m256i*)(bottom + 2 * px)));
                    __m256i m1 = _mm256_max_epi32(_mm256_loadu_si256((const __m256i*)(top + 2 * px + 8)),
                                                  _mm256_loadu_si256((const __m256i*)(bottom + 2 * px + 8)));
                    __m256i even = _mm256_castps_si256(
                        _mm256_shuffle_ps(_mm256_castsi256_ps(m0), _mm256_castsi256_ps(m1), 0x88));
                    __m256i odd = _mm256_castps_si256(
                        _mm256_shuffle_ps(_mm256_castsi256_ps(m0), _mm256_castsi256_ps(m1), 0xDD));
                    __m256i m = _mm256_permute4x64_epi64(_mm256_max_epi32(even, odd), 0xD8);
                    _mm_storel_epi64((__m128i*)(t + px),
                                     DN8_NAME(dn8_requantize8)(_mm256_add_epi32(m, comp8), s8, zero8, low8, high8));
                }
#endif
                for (; px < PW; px++) {
                    int32_t a = top[2 * px], b = top[2 * px + 1], c = bottom[2 * px], d = bottom[2 * px + 1];
                    int32_t m;
                    if (s >= 0.0f) {
                        m = a > b ? a : b;
                        m = m > c ? m : c;
                        m = m > d ? m : d;
                    } else {
                        m = a < b ? a : b;
                        m = m < c ? m : c;
                        m = m < d ? m : d;
                    }
                    t[px] = dn8_requantize(DN8_ADD(m, comp), s, cv->out_zero, low);
                }
            }
        }
    }
}

/* Images [n0, n1) of x into out: whole images (rows [0, r1), r0 = 0), or with one image its
 * output rows [r0, r1).  Pad each image, im2col it after the ones before, multiply all, then
 * requantize.  cols holds DN8_COLS(K4, pixels) uint32 and sums DN8_SUMS(FNpad, pixels) int32
 * for the task's (n1 - n0) (r1 - r0) OW pixels. */
static void DN8_NAME(dn8_task)(const dn8_conv* cv, const uint8_t* x, int n0, int n1, int r0, int r1,
                               uint8_t* padded, uint32_t* cols, int32_t* sums, void* out)
{
    const int Pimage = (r1 - r0) * cv->OW, P = (n1 - n0) * Pimage;
    const int Pcomp = DN8_ROUND_PIXELS(P), stride = DN8_STRIDE(P);
    const size_t image_in = (size_t)cv->C * cv->H * cv->W;
    const size_t image_out = (size_t)cv->FN * (cv->pool ? (size_t)(cv->OH / 2) * (cv->OW / 2) : (size_t)cv->OH * cv->OW)
                             * (cv->out_float ? sizeof(float) : 1);
    int n, k4;
    if (cv->H == 1 && cv->W == 1 && cv->ph == 0 && cv->pw == 0)   /* an affine layer */
        dn8_im2col_pixels(cv, x, n0, n1, stride, cols);
    else
        for (n = n0; n < n1; n++) {
            dn8_pad_image(cv, x + (size_t)n * image_in, padded);
            DN8_NAME(dn8_im2col)(cv, padded, r0, r1, stride, cols + (size_t)(n - n0) * Pimage);
        }
    for (k4 = 0; k4 < cv->K4; k4++)
        memset(cols + (size_t)k4 * stride + P, 0, (size_t)(Pcomp - P) * sizeof(uint32_t));
    DN8_NAME(dn8_gemm)(cv, cols, P, Pcomp, stride, sums);
    for (n = n0; n < n1; n++)
        DN8_NAME(dn8_epilogue)(cv, sums + (size_t)(n - n0) * Pimage, Pcomp, r0, r1, (char*)out + (size_t)n * image_out);
}

#undef DN8_NAME
