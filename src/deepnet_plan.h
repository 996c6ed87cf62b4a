/* A compiled inference plan: a whole network run in one call, one OpenMP team for all of
 * its steps, with no Python between the layers and no allocation (kernels/plan.pyx builds
 * the steps and owns every buffer).
 *
 * Each step computes exactly what the layer's own kernel computes, so that the plan is
 * bit-identical to model.predict:
 *   convolution: the gather GEMM of src/deepnet_gather_gemm.h, or Winograd F(2x2, 3x3)
 *                (src/deepnet_winograd.h) chosen per call by the rule of
 *                deepnet.backends._winograd (its range check included), then bias, ReLU and
 *                the fused 2x2 max-pooling as kernels/conv.pyx does them;
 *   affine:      dn_plan_affine_tasks, which the Affine layer's kernel runs too;
 *                or, for a bfloat16 model (float plans only), the columns of each window times
 *                the filters in vdpbf16ps's dot products (src/deepnet_bf16.h: the instruction
 *                or its emulation, the same floats), from the bias, ReLU'd and rounded to
 *                bfloat16, as deepnet.backends.bf16's conv_forward;
 *   activation:  ReLU (value < 0 ? 0 : value) and inference Dropout's scaling, in place;
 *   pooling:     max-pooling of any window, stride and padding that does not follow a
 *                convolution, with kernels/pooling.pyx's compares (padding never wins, the
 *                first of a tie and the first NaN win);
 *   concat:      one branch's output copied into its channels of a Concat's output;
 *   binary:      BinaryConvolution and BinaryAffine (deepnet.nn.binary): the signs of the
 *                input packed into 64-bit words (a bit set where a value is not >= 0), then
 *                for each output the window's XOR with the filter's sign bits counted
 *                (mismatches m over the C * positions products inside the input), and
 *                (C * positions - 2 m) + bias: the integer sum of the +-1 products, exact,
 *                as the layer's float and bit paths both give it.
 * A task computes whole output entries, the same sum in the same order whichever thread
 * runs it, so the results do not depend on the thread count.  With fewer images than
 * threads, the direct convolution splits each image into bands of output rows (of pooled
 * rows where it pools), so that a batch of one keeps every thread busy.
 */
#ifndef DEEPNET_PLAN_H
#define DEEPNET_PLAN_H

#include <float.h>
#include "deepnet_bf16.h"
#include "deepnet_isa.h"
#include "deepnet_openmp.h"

enum {
    DN_PLAN_CONV = 0, DN_PLAN_AFFINE = 1, DN_PLAN_ACTIVATE = 2, DN_PLAN_ADD = 3, DN_PLAN_MEAN = 4,
    DN_PLAN_MAX_POOL = 5, DN_PLAN_CONCAT = 6, DN_PLAN_BINARY_CONV = 7, DN_PLAN_BINARY_AFFINE = 8
};
enum { DN_PLAN_RELU = 0, DN_PLAN_SCALE = 1, DN_PLAN_CHANNEL = 2, DN_PLAN_ROUND_HALF = 3, DN_PLAN_ROUND_BF16 = 4 };
enum { DN_PLAN_WINOGRAD_NEVER = 0, DN_PLAN_WINOGRAD_AUTO = 1, DN_PLAN_WINOGRAD_ALWAYS = 2 };
#define DN_PLAN_MAX_OPS 8          /* activation operations merged into one step */
#define DN_PLAN_AFFINE_ROWS 4      /* an affine task: 4 samples x 16 outputs */
#define DN_PLAN_AFFINE_COLUMNS 16  /* W's rows padded to a multiple of it */

typedef struct {
    int kind;
    int src, dst, other;             /* slots: 0 the input, 1 the output, 2... buffers */
    long in_size, out_size;          /* elements of one image's input and output */
    /* DN_PLAN_CONV: C x H x W images, FN filters of kh x kw, output OH x OW (pooled: halved);
     * DN_PLAN_MAX_POOL: C planes of H x W, kh x kw windows, output OH x OW */
    int C, H, W, FN, kh, kw, sh, sw, ph, pw, OH, OW, relu, pooled;
    int K, ld;                       /* window positions; columns of the filter matrices */
    const void *direct;              /* K x ld */
    const void *winograd;            /* 16*C x ld, or NULL where Winograd cannot run */
    int winograd_rule;               /* "auto" runs Winograd here (when in range) */
    double W_max;                    /* max |W|, for the range check */
    const void *bias;                /* FN (conv) or M (affine) entries */
    const uint32_t *bf16_filters;    /* a bfloat16 convolution's (NULL otherwise): K2 x FN pairs */
    int K2, bf16_isa;                /* pairs of window values; src/deepnet_bf16.h's path */
    const int *window_steps;         /* K offsets of the window positions in a padded image */
    const int *pixel_offsets;        /* OH*OW offsets of the windows' corners */
    void *padded;                    /* one zero-bordered padded image per thread */
    long padded_size;                /* elements of one of them */
    /* DN_PLAN_AFFINE: out (M) = x (Kin) @ weights (Kin x M, rows ldw apart) + bias */
    int Kin, M, ldw;
    const void *weights;
    /* DN_PLAN_ACTIVATE: ops applied in order (in place where dst == src); DN_PLAN_CHANNEL is
     * batch normalisation's (value - shift[c]) * scale[c] + offset[c], c the channel of
     * planes of op_plane values; DN_PLAN_ROUND_HALF and DN_PLAN_ROUND_BF16 (float only)
     * round each value to the nearest float16 or bfloat16, where a model of that dtype
     * stores a layer's result */
    int ops;
    int op_kind[DN_PLAN_MAX_OPS];
    double op_scale[DN_PLAN_MAX_OPS];
    const void *op_shift[DN_PLAN_MAX_OPS], *op_scales[DN_PLAN_MAX_OPS], *op_offset[DN_PLAN_MAX_OPS];
    long op_plane[DN_PLAN_MAX_OPS];
    int op_channels[DN_PLAN_MAX_OPS];
    /* DN_PLAN_ADD: dst = src + other.  DN_PLAN_MEAN: dst (C) = the means of src's C planes
     * of plane values (global average pooling) */
    long plane;
    /* DN_PLAN_CONCAT: dst[n, offset : offset + in_size] = src[n] (out_size values an image) */
    long offset;
    /* DN_PLAN_BINARY_CONV (the geometry above, no padded copy) and DN_PLAN_BINARY_AFFINE
     * (Kin inputs, M outputs): the filters' sign bits, FN x kh*kw x Cw words (M x Cw) */
    const uint64_t *sign_filters;
    int Cw;
} dn_plan_step;

typedef struct {                     /* one thread's scratch, sized for the largest step */
    void *product;                   /* pixels x ld */
    void *pooled_rows;               /* pooled pixels x ld */
    void *rows, *V, *M;              /* Winograd's */
    int *row_offset, *step_offset;
    uint16_t *bf16_rows;             /* a bfloat16 convolution's window columns, pixels x 2*K2 */
    uint64_t *signs;                 /* a binary step's packed input: pixels x Cw words */
} dn_plan_scratch;

#define DN_PLAN_T float
#define DN_PLAN_NAME(name) name##_float
#define DN_PLAN_GEMM dn_gather_sgemm
#define DN_PLAN_WINOGRAD dn_winograd_sconv
#define DN_PLAN_STORE dn_store_transposed_float
#define DN_PLAN_POOL dn_max_pool_2x2_filters_last_float
#define DN_PLAN_BITS uint32_t
#define DN_PLAN_LARGEST FLT_MAX
#define DN_PLAN_HALVES 1
#include "deepnet_plan_body.h"

#define DN_PLAN_T double
#define DN_PLAN_NAME(name) name##_double
#define DN_PLAN_GEMM dn_gather_dgemm
#define DN_PLAN_WINOGRAD dn_winograd_dconv
#define DN_PLAN_STORE dn_store_transposed_double
#define DN_PLAN_POOL dn_max_pool_2x2_filters_last_double
#define DN_PLAN_BITS uint64_t
#define DN_PLAN_LARGEST DBL_MAX
#define DN_PLAN_HALVES 0
#include "deepnet_plan_body.h"

#endif /* DEEPNET_PLAN_H */
