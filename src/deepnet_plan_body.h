/* The plan's steps for one type: included by src/deepnet_plan.h once per DN_PLAN_T, with
 * DN_PLAN_NAME, the type's kernels and DN_PLAN_BITS / DN_PLAN_LARGEST for the range check. */

typedef DN_PLAN_T DN_PLAN_NAME(dn_plan_t);

/* out[n, j] = sum_k x[n, k] W[k, j] + bias[j] for the samples [n0, n1) and the outputs
 * [j0, j0 + DN_PLAN_AFFINE_COLUMNS) that are below M.  W's rows are ldw apart, ldw a
 * multiple of DN_PLAN_AFFINE_COLUMNS (its columns from M on are read, never stored).
 * Every sum runs from k = 0 up, one multiply-add of vectors at a time: the same
 * operations for each entry whichever task, tile or thread computes it. */
static void DN_PLAN_NAME(dn_plan_affine_block)(const DN_PLAN_T *x, int K, const DN_PLAN_T *W, int ldw, int M,
                                               const DN_PLAN_T *bias, DN_PLAN_T *out, int n0, int n1, int j0)
{
    typedef DN_PLAN_T vec __attribute__((vector_size(32)));
    typedef DN_PLAN_T vec_u __attribute__((vector_size(32), aligned(sizeof(DN_PLAN_T))));
    enum { VL = 32 / sizeof(DN_PLAN_T), NV = DN_PLAN_AFFINE_COLUMNS / VL, R = DN_PLAN_AFFINE_ROWS };
    const int columns = M - j0 < DN_PLAN_AFFINE_COLUMNS ? M - j0 : DN_PLAN_AFFINE_COLUMNS;
    for (int r0 = n0; r0 < n1;) {
        const int rows = n1 - r0 >= R ? R : 1;
        vec acc[R][NV];
        for (int r = 0; r < R; r++)
            for (int v = 0; v < NV; v++)
                acc[r][v] = (vec){0};
        if (rows == R) {
            for (int k = 0; k < K; k++) {
                const DN_PLAN_T *w = W + (size_t)k * ldw + j0;
                vec b[NV];
                for (int v = 0; v < NV; v++)
                    b[v] = *(const vec_u *)(w + v * VL);
                for (int r = 0; r < R; r++) {
                    const vec a = x[(size_t)(r0 + r) * K + k] - (vec){0};   /* a broadcast */
                    for (int v = 0; v < NV; v++)
                        acc[r][v] += a * b[v];
                }
            }
        } else {
            for (int k = 0; k < K; k++) {
                const DN_PLAN_T *w = W + (size_t)k * ldw + j0;
                const vec a = x[(size_t)r0 * K + k] - (vec){0};
                for (int v = 0; v < NV; v++)
                    acc[0][v] += a * *(const vec_u *)(w + v * VL);
            }
        }
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < columns; j++)
                out[(size_t)(r0 + r) * M + j0 + j] = acc[r][j / VL][j % VL] + bias[j0 + j];
        r0 += rows;
    }
}

/* The affine tasks of N samples, shared by the enclosing team (or run alone). */
static void DN_PLAN_NAME(dn_plan_affine_tasks)(const DN_PLAN_T *x, int N, int K, const DN_PLAN_T *W, int ldw,
                                               int M, const DN_PLAN_T *bias, DN_PLAN_T *out)
{
    const long row_blocks = (N + DN_PLAN_AFFINE_ROWS - 1) / DN_PLAN_AFFINE_ROWS;
    const long column_blocks = (M + DN_PLAN_AFFINE_COLUMNS - 1) / DN_PLAN_AFFINE_COLUMNS;
    long task;
#pragma omp for schedule(static)
    for (task = 0; task < row_blocks * column_blocks; task++) {
        const int n0 = (int)(task / column_blocks) * DN_PLAN_AFFINE_ROWS;
        const int n1 = n0 + DN_PLAN_AFFINE_ROWS < N ? n0 + DN_PLAN_AFFINE_ROWS : N;
        DN_PLAN_NAME(dn_plan_affine_block)(x, K, W, ldw, M, bias, out, n0, n1,
                                           (int)(task % column_blocks) * DN_PLAN_AFFINE_COLUMNS);
    }
}

/* The Affine layer's kernel: the plan's affine step, in a team of its own. */
static void DN_PLAN_NAME(dn_plan_affine)(const DN_PLAN_T *x, int N, int K, const DN_PLAN_T *W, int ldw, int M,
                                         const DN_PLAN_T *bias, DN_PLAN_T *out, int threads)
{
#pragma omp parallel num_threads(threads)
    DN_PLAN_NAME(dn_plan_affine_tasks)(x, N, K, W, ldw, M, bias, out);
}

/* The activation operations of a step, in order, on N images (in place when out == in):
 * one pass per operation, each a loop the compiler vectorises. */
static void DN_PLAN_NAME(dn_plan_activate_tasks)(const dn_plan_step *step, const DN_PLAN_T *in,
                                                 DN_PLAN_T *out, int N)
{
    const long n = (long)N * step->in_size;
    long i;
    for (int o = 0; o < step->ops; o++) {
        const DN_PLAN_T *source = o == 0 ? in : out;
        if (step->op_kind[o] == DN_PLAN_RELU) {
#pragma omp for schedule(static) nowait
            for (i = 0; i < n; i++)
                out[i] = source[i] < 0 ? (DN_PLAN_T)0 : source[i];
        } else if (step->op_kind[o] == DN_PLAN_SCALE) {
            const DN_PLAN_T scale = (DN_PLAN_T)step->op_scale[o];
#pragma omp for schedule(static) nowait
            for (i = 0; i < n; i++)
                out[i] = source[i] * scale;
        } else if (step->op_kind[o] == DN_PLAN_ROUND_HALF) {
#if DN_PLAN_HALVES   /* through float16 and back, a block at a time, as the float16 kernels store */
            enum { BLOCK = 512 };
            const long blocks = (n + BLOCK - 1) / BLOCK;
            long block;
#pragma omp for schedule(static) nowait
            for (block = 0; block < blocks; block++) {
                uint16_t halves[BLOCK];
                const long first = block * BLOCK, count = n - first < BLOCK ? n - first : BLOCK;
                dn_floats_to_halves(source + first, halves, count);
                dn_halves_to_floats(halves, out + first, count);
            }
#endif
        } else if (step->op_kind[o] == DN_PLAN_ROUND_BF16) {
#if DN_PLAN_HALVES   /* to nearest even, as the bfloat16 casts (src/deepnet_bf16.h) */
#pragma omp for schedule(static) nowait
            for (i = 0; i < n; i++)
                out[i] = dn_bf16_to_float(dn_float_to_bf16(source[i]));
#endif
        } else {   /* as kernels/batchnorm.pyx's channel_affine, a plane at a time */
            const long plane = step->op_plane[o], planes = n / plane;
            const DN_PLAN_T *shift = (const DN_PLAN_T *)step->op_shift[o];
            const DN_PLAN_T *scales = (const DN_PLAN_T *)step->op_scales[o];
            const DN_PLAN_T *offset = (const DN_PLAN_T *)step->op_offset[o];
            const int channels = step->op_channels[o];
            long p;
#pragma omp for schedule(static) nowait
            for (p = 0; p < planes; p++) {
                const int c = (int)(p % channels);
                const DN_PLAN_T s = shift[c], a = scales[c], b = offset[c];
                for (long m = 0; m < plane; m++)
                    out[p * plane + m] = (source[p * plane + m] - s) * a + b;
            }
        }
        /* static schedules of the same n give each thread the same values in every pass;
         * the channel and rounding passes split planes and blocks, so wait for the others
         * around them */
        const int next = o + 1 < step->ops ? step->op_kind[o + 1] : DN_PLAN_RELU;
        if (step->op_kind[o] == DN_PLAN_CHANNEL || step->op_kind[o] == DN_PLAN_ROUND_HALF
            || next == DN_PLAN_CHANNEL || next == DN_PLAN_ROUND_HALF) {
#pragma omp barrier
        }
    }
#pragma omp barrier
}

/* out = a + b (then max(., 0) with relu) on n values. */
static void DN_PLAN_NAME(dn_plan_add_tasks)(const DN_PLAN_T *a, const DN_PLAN_T *b, DN_PLAN_T *out, long n, int relu)
{
    long i;
    if (relu) {
#pragma omp for schedule(static)
        for (i = 0; i < n; i++) {
            const DN_PLAN_T sum = a[i] + b[i];
            out[i] = sum < 0 ? (DN_PLAN_T)0 : sum;
        }
    } else {
#pragma omp for schedule(static)
        for (i = 0; i < n; i++)
            out[i] = a[i] + b[i];
    }
}

/* out[p] = the mean of the plane values of in's plane p, for `planes` planes: summed in
 * order from the first, then divided (global average pooling's kernel too). */
static void DN_PLAN_NAME(dn_plan_mean_tasks)(const DN_PLAN_T *in, long planes, long plane, DN_PLAN_T *out)
{
    long p;
#pragma omp for schedule(static)
    for (p = 0; p < planes; p++) {
        const DN_PLAN_T *values = in + p * plane;
        DN_PLAN_T sum = 0;
        for (long i = 0; i < plane; i++)
            sum += values[i];
        out[p] = sum / (DN_PLAN_T)plane;
    }
}

/* Global average pooling in a team of its own (the layer's kernel). */
static void DN_PLAN_NAME(dn_plan_mean)(const DN_PLAN_T *in, long planes, long plane, DN_PLAN_T *out, int threads)
{
#pragma omp parallel num_threads(threads)
    DN_PLAN_NAME(dn_plan_mean_tasks)(in, planes, plane, out);
}

/* Max-pooling of N images' C planes (a step that follows no convolution): the general
 * kernel of kernels/pooling.pyx, whose compares it repeats in the same window order, so
 * that every maximum is the same value (padding never wins; the first of a tie, and the
 * first NaN, win).  The windows wholly inside a row run side by side (a loop along the
 * output row that the compiler vectorises), the others one at a time. */
#define DN_PLAN_TAKES(value, best) ((value) > (best) || ((value) != (value) && (best) == (best)))
static void DN_PLAN_NAME(dn_plan_pool_tasks)(const dn_plan_step *step, const DN_PLAN_T *in, DN_PLAN_T *out, int N)
{
    const int H = step->H, W = step->W, OH = step->OH, OW = step->OW, sw = step->sw, pw = step->pw, kw = step->kw;
    const long planes = (long)N * step->C;
    /* outputs [lo, hi) of a row have every window column inside the plane */
    int lo = (pw + sw - 1) / sw, hi = W - kw + pw >= 0 ? (W - kw + pw) / sw + 1 : 0;
    hi = hi < OW ? hi : OW;
    lo = lo < hi ? lo : hi;
    long p;
#pragma omp for schedule(static)
    for (p = 0; p < planes; p++) {
        const DN_PLAN_T *source = in + p * H * W;
        DN_PLAN_T *target = out + p * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            const int top = oy * step->sh - step->ph;
            const int y0 = top > 0 ? top : 0, y_stop = top + step->kh < H ? top + step->kh : H;
            DN_PLAN_T *row_out = target + (size_t)oy * OW;
            for (int ox = lo; ox < hi; ox++)
                row_out[ox] = source[(size_t)y0 * W + ox * sw - pw];
            for (int iy = y0; iy < y_stop; iy++)
                for (int kx = 0; kx < kw; kx++) {
                    const DN_PLAN_T *row = source + (size_t)iy * W + kx - pw;
                    for (int ox = lo; ox < hi; ox++) {
                        const DN_PLAN_T value = row[ox * sw], best = row_out[ox];
                        row_out[ox] = DN_PLAN_TAKES(value, best) ? value : best;
                    }
                }
            for (int ox = 0; ox < OW; ox++) {
                if (ox == lo && lo < hi) {   /* the windows done above */
                    ox = hi - 1;
                    continue;
                }
                const int left = ox * sw - pw;
                const int x0 = left > 0 ? left : 0, x_stop = left + kw < W ? left + kw : W;
                DN_PLAN_T best = source[(size_t)y0 * W + x0];
                for (int iy = y0; iy < y_stop; iy++)
                    for (int ix = x0; ix < x_stop; ix++) {
                        const DN_PLAN_T value = source[(size_t)iy * W + ix];
                        best = DN_PLAN_TAKES(value, best) ? value : best;
                    }
                row_out[ox] = best;
            }
        }
    }
}
#undef DN_PLAN_TAKES

/* One Concat branch's output (in_size values an image) into its channels of the Concat's
 * output (out_size values an image, from offset on). */
static void DN_PLAN_NAME(dn_plan_concat_tasks)(const dn_plan_step *step, const DN_PLAN_T *in, DN_PLAN_T *out, int N)
{
    int n;
#pragma omp for schedule(static)
    for (n = 0; n < N; n++)
        memcpy(out + (size_t)n * step->out_size + step->offset, in + (size_t)n * step->in_size,
               (size_t)step->in_size * sizeof(DN_PLAN_T));
}

/* The signs of `count` values of `plane` apart from `first` (channels), packed into Cw words:
 * bit c % 64 of word c / 64 set where value c is not >= 0 (negative or NaN). */
static inline void DN_PLAN_NAME(dn_plan_pack_signs)(const DN_PLAN_T *first, long plane, int count, int Cw,
                                                     uint64_t *words)
{
    for (int w = 0; w < Cw; w++)
        words[w] = 0;
    for (int c = 0; c < count; c++)
        words[c >> 6] |= (uint64_t)!(first[(size_t)c * plane] >= 0) << (c & 63);
}

/* A BinaryConvolution's tasks: images, or bands of output rows with fewer images than
 * threads; each packs its image's signs (pixels x Cw words), then per output pixel gathers
 * the words of its window inside the image and counts each filter's mismatches there. */
static void DN_PLAN_NAME(dn_plan_binary_conv_tasks)(const dn_plan_step *step, const DN_PLAN_T *in, DN_PLAN_T *out,
                                                     int N, dn_plan_scratch *scratch, int team)
{
    const int C = step->C, H = step->H, W = step->W, OH = step->OH, OW = step->OW, Cw = step->Cw;
    const int kh = step->kh, kw = step->kw, FN = step->FN, words = kh * kw * Cw;
    const long P = (long)OH * OW;
    int bands = N >= team ? 1 : (team + N - 1) / N;
    if (bands > OH)
        bands = OH;
    const DN_PLAN_T *bias = (const DN_PLAN_T *)step->bias;
    uint64_t *signs = scratch->signs, *window = signs + (size_t)H * W * Cw;
    int *offsets = (int *)(window + words);   /* each gathered word's offset in a filter */
    int task;
#pragma omp for schedule(dynamic)
    for (task = 0; task < N * bands; task++) {
        const int n = task / bands, band = task % bands;
        const int r0 = band * OH / bands, r1 = (band + 1) * OH / bands;
        const DN_PLAN_T *image = in + (size_t)n * step->in_size;
        for (long p = 0; p < (long)H * W; p++)
            DN_PLAN_NAME(dn_plan_pack_signs)(image + p, (long)H * W, C, Cw, signs + p * Cw);
        DN_PLAN_T *image_out = out + (size_t)n * step->out_size;
        for (int oy = r0; oy < r1; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int K = 0;
                for (int ky = 0; ky < kh; ky++) {
                    const int iy = oy * step->sh - step->ph + ky;
                    for (int kx = 0; kx < kw; kx++) {
                        const int ix = ox * step->sw - step->pw + kx;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        for (int c = 0; c < Cw; c++, K++) {
                            window[K] = signs[((size_t)iy * W + ix) * Cw + c];
                            offsets[K] = (ky * kw + kx) * Cw + c;
                        }
                    }
                }
                const long inside = (long)C * (K / Cw);   /* C * positions inside the image */
                for (int f = 0; f < FN; f++) {
                    const uint64_t *filter = step->sign_filters + (size_t)f * words;
                    long mismatches = 0;
                    for (int k = 0; k < K; k++)
                        mismatches += __builtin_popcountll(window[k] ^ filter[offsets[k]]);
                    image_out[(size_t)f * P + (size_t)oy * OW + ox] = (DN_PLAN_T)(inside - 2 * mismatches) + bias[f];
                }
            }
    }
}

/* A BinaryAffine's tasks: one sample each, its Kin signs packed, then each output's count. */
static void DN_PLAN_NAME(dn_plan_binary_affine_tasks)(const dn_plan_step *step, const DN_PLAN_T *in, DN_PLAN_T *out,
                                                       int N, dn_plan_scratch *scratch)
{
    const int Cw = step->Cw;
    const DN_PLAN_T *bias = (const DN_PLAN_T *)step->bias;
    uint64_t *signs = scratch->signs;
    int n;
#pragma omp for schedule(static)
    for (n = 0; n < N; n++) {
        DN_PLAN_NAME(dn_plan_pack_signs)(in + (size_t)n * step->Kin, 1, step->Kin, Cw, signs);
        for (int j = 0; j < step->M; j++) {
            const uint64_t *w = step->sign_filters + (size_t)j * Cw;
            long mismatches = 0;
            for (int c = 0; c < Cw; c++)
                mismatches += __builtin_popcountll(signs[c] ^ w[c]);
            out[(size_t)n * step->M + j] = (DN_PLAN_T)((long)step->Kin - 2 * mismatches) + bias[j];
        }
    }
}

/* Whether a convolution of this step runs as Winograd on input x (n values): the rule
 * of deepnet.backends.cpu's _forward_plan. */
static int DN_PLAN_NAME(dn_plan_uses_winograd)(const dn_plan_step *step, const DN_PLAN_T *x, long n, int mode,
                                               DN_PLAN_BITS *scan)
{
    if (step->winograd == NULL || mode == DN_PLAN_WINOGRAD_NEVER)
        return 0;
    if (mode == DN_PLAN_WINOGRAD_ALWAYS)
        return 1;
    if (!step->winograd_rule)
        return 0;
    /* max |x| on the bits, as max_abs_bits does (a NaN is larger than any number) */
    const DN_PLAN_BITS magnitude = (DN_PLAN_BITS)~(DN_PLAN_BITS)0 >> 1;
    const DN_PLAN_BITS *bits = (const DN_PLAN_BITS *)x;
#pragma omp single
    *scan = 0;
    DN_PLAN_BITS largest = 0;
    long i;
#pragma omp for schedule(static)
    for (i = 0; i < n; i++) {
        const DN_PLAN_BITS b = bits[i] & magnitude;
        largest = b > largest ? b : largest;
    }
#pragma omp critical(dn_plan_scan)
    if (largest > *scan)
        *scan = largest;
#pragma omp barrier
    DN_PLAN_T X_value;
    memcpy(&X_value, scan, sizeof X_value);
    /* deepnet.backends._winograd._filters_in_range, in double; False for NaN */
    const double X = (double)X_value, largest_value = (double)DN_PLAN_LARGEST;
    return 4 * X <= largest_value && 2.25 * step->W_max <= largest_value
           && X * step->W_max * (81.0 * step->C) <= largest_value;
}

#if DN_PLAN_HALVES
/* A bfloat16 convolution's tasks (float plans only): for each image, or band of output rows
 * with fewer images than threads, the windows' bfloat16 values as pairs (the slot holds
 * bfloat16 values widened, so their upper halves are the bits), the dot GEMM from the bias
 * (each output one thread's, in the instruction's order), then ReLU and the rounding to
 * bfloat16, stored filters first. */
static void dn_plan_bf16_conv_tasks(const dn_plan_step *step, const float *in, float *out, int N,
                                    dn_plan_scratch *scratch, int team)
{
    const int C = step->C, H = step->H, W = step->W, OH = step->OH, OW = step->OW, FN = step->FN;
    const long P = (long)OH * OW, Kp = 2L * step->K2;
    int bands = N >= team ? 1 : (team + N - 1) / N;
    if (bands > OH)
        bands = OH;
    const float *bias = (const float *)step->bias;
    float *sums = (float *)scratch->product;
    int task;
#pragma omp for schedule(dynamic)
    for (task = 0; task < N * bands; task++) {
        const int n = task / bands, band = task % bands;
        const int r0 = band * OH / bands, r1 = (band + 1) * OH / bands;
        const long rows = (long)(r1 - r0) * OW;
        const float *image = in + (size_t)n * step->in_size;
        for (int oy = r0; oy < r1; oy++)
            for (int ox = 0; ox < OW; ox++) {
                uint16_t *row = scratch->bf16_rows + ((long)(oy - r0) * OW + ox) * Kp;
                long q = 0;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < step->kh; i++)
                        for (int j = 0; j < step->kw; j++, q++) {
                            const int iy = oy * step->sh - step->ph + i, ix = ox * step->sw - step->pw + j;
                            row[q] = iy >= 0 && iy < H && ix >= 0 && ix < W
                                         ? (uint16_t)(dn_bf16_f32_bits(image[((size_t)c * H + iy) * W + ix]) >> 16)
                                         : 0;
                        }
                for (; q < Kp; q++)
                    row[q] = 0;
            }
        for (long p = 0; p < rows; p++)
            memcpy(sums + p * FN, bias, (size_t)FN * sizeof(float));
        const uint32_t *A = (const uint32_t *)scratch->bf16_rows;
#if DN_BF16_X86
        if (step->bf16_isa == DN_BF16_AVX512)
            dn_bf16_gemm_rows_avx512(A, step->bf16_filters, sums, 0, rows, 0, FN, FN, step->K2);
        else if (step->bf16_isa == DN_BF16_AVX2)
            dn_bf16_gemm_rows_avx2(A, step->bf16_filters, sums, 0, rows, 0, FN, FN, step->K2);
        else
#endif
            dn_bf16_gemm_rows_scalar(A, step->bf16_filters, sums, 0, rows, 0, FN, FN, step->K2);
        float *image_out = out + (size_t)n * step->out_size + (size_t)r0 * OW;
        for (long p = 0; p < rows; p++)
            for (int f = 0; f < FN; f++) {
                const float value = sums[p * FN + f];
                image_out[(size_t)f * P + p] = dn_bf16_to_float(dn_float_to_bf16(step->relu && value < 0 ? 0.0f : value));
            }
    }
}
#endif

/* A convolution step's tasks: whole images, or with fewer images than threads bands of an
 * image.  A band of the direct kernel is a range of output rows (of pooled rows where it
 * pools); of Winograd a range of rows of 2x2 tiles, computed on a padded copy of just the
 * input rows it reads (its own image to the Winograd kernel: each tile reads the same 4x4
 * pixels as in the whole image, and each tile's sums run over the channels in the same
 * order, so the band gives the whole image's values). */
static void DN_PLAN_NAME(dn_plan_conv_tasks)(const dn_plan_step *step, const DN_PLAN_T *in, DN_PLAN_T *out,
                                             int N, int winograd, dn_plan_scratch *scratch, int thread,
                                             int team)
{
    const int C = step->C, H = step->H, W = step->W, ph = step->ph, pw = step->pw;
    const int Hp = H + 2 * ph, Wp = W + 2 * pw, OH = step->OH, OW = step->OW, ld = step->ld;
    const int PH = OH / 2, PW = OW / 2;
    const int units = step->pooled ? PH : winograd ? (OH + 1) / 2 : OH;
    int bands = N >= team ? 1 : (team + N - 1) / N;
    if (bands > units)
        bands = units;
    DN_PLAN_T *padded = (DN_PLAN_T *)step->padded + (size_t)thread * step->padded_size;
    DN_PLAN_T *product = (DN_PLAN_T *)scratch->product;
    const DN_PLAN_T *bias = (const DN_PLAN_T *)step->bias;
    int task;
#pragma omp for schedule(dynamic)
    for (task = 0; task < N * bands; task++) {
        const int n = task / bands, band = task % bands;
        const int u0 = band * units / bands, u1 = (band + 1) * units / bands;
        const int per_unit = step->pooled || winograd ? 2 : 1;
        const int r0 = per_unit * u0, r1 = per_unit * u1 < OH ? per_unit * u1 : OH;   /* output rows */
        /* the padded rows [first, first + count) the band reads, at buffer rows from
         * `base` (the padded image's own rows for the direct kernel, 0 for Winograd's) */
        const int first = winograd ? r0 : r0 * step->sh;
        const int count = winograd ? r1 - r0 + 2 : (r1 - 1) * step->sh + step->kh - first;
        const int base = winograd ? 0 : first, plane_rows = winograd ? count : Hp;
        const DN_PLAN_T *image = in + (size_t)n * step->in_size;
        /* unpadded, the direct kernel reads the image where it is (the same layout) */
        const int in_place = !winograd && ph == 0 && pw == 0;
        for (int c = 0; c < (in_place ? 0 : C); c++)
            for (int b = 0; b < count; b++) {
                const int y = first + b - ph;
                DN_PLAN_T *row = padded + ((size_t)c * plane_rows + base + b) * Wp;
                if (y >= 0 && y < H)   /* the columns of the border stay zero from the allocation */
                    memcpy(row + pw, image + ((size_t)c * H + y) * W, (size_t)W * sizeof(DN_PLAN_T));
                else
                    memset(row, 0, (size_t)Wp * sizeof(DN_PLAN_T));
            }
        if (winograd)
            DN_PLAN_WINOGRAD(padded, C, r1 - r0, OW, (const DN_PLAN_T *)step->winograd, ld,
                             (DN_PLAN_T *)scratch->rows, (DN_PLAN_T *)scratch->V, (DN_PLAN_T *)scratch->M,
                             scratch->row_offset, scratch->step_offset, product);
        else
            DN_PLAN_GEMM((r1 - r0) * OW, ld, step->K, in_place ? image : padded, step->pixel_offsets + (size_t)r0 * OW,
                         step->window_steps, (const DN_PLAN_T *)step->direct, ld, product, ld, 0);
        DN_PLAN_T *image_out = out + (size_t)n * step->out_size;
        if (!step->pooled) {
            DN_PLAN_STORE(product, ld, (r1 - r0) * OW, step->FN, bias, step->relu, image_out + (size_t)r0 * OW,
                          OH * OW);
        } else {
            DN_PLAN_T *pooled_rows = (DN_PLAN_T *)scratch->pooled_rows;
            DN_PLAN_POOL(product, ld, bias, step->relu, step->FN, OW, u1 - u0, PW, pooled_rows, NULL);
            DN_PLAN_STORE(pooled_rows, ld, (u1 - u0) * PW, step->FN, NULL, 0, image_out + (size_t)u0 * PW,
                          PH * PW);
        }
    }
}

/* Run the plan's steps on N images: slots[0] is the input, slots[1] the output, the others
 * buffers of the largest step output for N images; scratch is one per thread. */
static void DN_PLAN_NAME(dn_plan_run)(const dn_plan_step *steps, int count, DN_PLAN_T *const *slots, int N,
                                      dn_plan_scratch *scratch, int threads, int winograd_mode)
{
    DN_PLAN_BITS scan = 0;
#pragma omp parallel num_threads(threads)
    {
        const int thread = omp_get_thread_num(), team = omp_get_num_threads();
        for (int s = 0; s < count; s++) {   /* each step's loop ends with a barrier */
            const dn_plan_step *step = &steps[s];
            const DN_PLAN_T *in = slots[step->src];
            DN_PLAN_T *target = slots[step->dst];
            if (step->kind == DN_PLAN_CONV && step->bf16_filters != NULL) {
#if DN_PLAN_HALVES
                dn_plan_bf16_conv_tasks(step, (const float *)in, (float *)target, N, &scratch[thread], team);
#endif
            } else if (step->kind == DN_PLAN_CONV) {
                const int winograd = DN_PLAN_NAME(dn_plan_uses_winograd)(step, in, N * step->in_size, winograd_mode,
                                                                         &scan);
                DN_PLAN_NAME(dn_plan_conv_tasks)(step, in, target, N, winograd, &scratch[thread], thread, team);
            } else if (step->kind == DN_PLAN_AFFINE) {
                DN_PLAN_NAME(dn_plan_affine_tasks)(in, N, step->Kin, (const DN_PLAN_T *)step->weights, step->ldw,
                                                   step->M, (const DN_PLAN_T *)step->bias, target);
            } else if (step->kind == DN_PLAN_ACTIVATE) {
                DN_PLAN_NAME(dn_plan_activate_tasks)(step, in, target, N);
            } else if (step->kind == DN_PLAN_ADD) {
                DN_PLAN_NAME(dn_plan_add_tasks)(in, slots[step->other], target, N * step->in_size, step->relu);
            } else if (step->kind == DN_PLAN_MEAN) {
                DN_PLAN_NAME(dn_plan_mean_tasks)(in, N * step->out_size, step->plane, target);
            } else if (step->kind == DN_PLAN_MAX_POOL) {
                DN_PLAN_NAME(dn_plan_pool_tasks)(step, in, target, N);
            } else if (step->kind == DN_PLAN_BINARY_CONV) {
                DN_PLAN_NAME(dn_plan_binary_conv_tasks)(step, in, target, N, &scratch[thread], team);
            } else if (step->kind == DN_PLAN_BINARY_AFFINE) {
                DN_PLAN_NAME(dn_plan_binary_affine_tasks)(step, in, target, N, &scratch[thread]);
            } else {
                DN_PLAN_NAME(dn_plan_concat_tasks)(step, in, target, N);
            }
        }
    }
}

#undef DN_PLAN_T
#undef DN_PLAN_NAME
#undef DN_PLAN_GEMM
#undef DN_PLAN_WINOGRAD
#undef DN_PLAN_STORE
#undef DN_PLAN_POOL
#undef DN_PLAN_BITS
#undef DN_PLAN_LARGEST
#undef DN_PLAN_HALVES
