// Convolution helpers: im2col, its adjoint col2im, and the bias add that turns
// the GEMM result (N*OH*OW, FN) into the NCHW output (N, FN, OH, OW).
//
// Layout of col (the book's order), shape (N*OH*OW, C*kh*kw):
//     row    = (n * OH + oy) * OW + ox
//     column = (c * kh + i) * kw + j
//     col[row, column] = x[n, c, oy*sh - ph + i, ox*sw - pw + j]  (0 outside the image)
#include "common.cuh"

// One thread per element of col.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col,
                       int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int OH, int OW)
{
    const long long ncols = (long long)C * kh * kw;
    const long long total = (long long)N * OH * OW * ncols;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const long long row = idx / ncols;
        const int column = (int)(idx % ncols);

        const int j = column % kw;
        const int i = (column / kw) % kh;
        const int c = column / (kw * kh);

        const int ox = (int)(row % OW);
        const int oy = (int)((row / OW) % OH);
        const long long n = row / ((long long)OW * OH);

        const int y = oy * sh - ph + i;
        const int x_ = ox * sw - pw + j;
        const bool inside = (y >= 0 && y < H && x_ >= 0 && x_ < W);
        col[idx] = inside ? x[((n * C + c) * H + y) * W + x_] : from_acc<T>(0);
    }
}

// One thread per image pixel (n, c, y, x): gathers the col entries of every
// window that covers the pixel and sums them, so no atomics are needed.
// Kernel row i of window row oy touches image row oy*sh - ph + i, so the
// pixel row y is covered by (oy, i) exactly when y + ph - i == oy*sh.
template <typename T>
__global__ void col2im(const T* __restrict__ col, T* __restrict__ x,
                       int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int OH, int OW)
{
    const long long ncols = (long long)C * kh * kw;
    const long long total = (long long)N * C * H * W;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const int x_ = (int)(idx % W);
        const int y = (int)((idx / W) % H);
        const int c = (int)((idx / ((long long)W * H)) % C);
        const long long n = idx / ((long long)W * H * C);

        typename Acc<T>::type sum = 0;
        for (int i = 0; i < kh; ++i) {
            const int ty = y + ph - i;
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= OH) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = x_ + pw - j;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= OW) continue;
                const long long row = (n * OH + oy) * OW + ox;
                sum += to_acc(col[row * ncols + (c * kh + i) * kw + j]);
            }
        }
        x[idx] = from_acc<T>(sum);
    }
}

// y[n, f, p] = y2d[n*OHW + p, f] + b[f], with p = oy*OW + ox and OHW = OH*OW.
// One thread per output element: adds the bias and transposes NHWC -> NCHW.
// y2d is the GEMM result in the accumulator type (float32 for float16), so
// float16 outputs are rounded once, after the bias is added.
template <typename T>
__global__ void add_bias_nchw(const typename Acc<T>::type* __restrict__ y2d,
                              const T* __restrict__ b, T* __restrict__ y,
                              int N, int FN, int OHW)
{
    const long long total = (long long)N * FN * OHW;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const int p = (int)(idx % OHW);
        const int f = (int)((idx / OHW) % FN);
        const long long n = idx / ((long long)OHW * FN);
        const long long row = n * OHW + p;
        y[idx] = from_acc<T>(y2d[row * FN + f] + to_acc(b[f]));
    }
}

#define DEEPNET_INSTANTIATE(T)                                                        \
    template __global__ void im2col<T>(const T*, T*, int, int, int, int, int, int,    \
                                       int, int, int, int, int, int);                 \
    template __global__ void col2im<T>(const T*, T*, int, int, int, int, int, int,    \
                                       int, int, int, int, int, int);                 \
    template __global__ void add_bias_nchw<T>(const typename Acc<T>::type*, const T*, T*, \
                                              int, int, int);
DEEPNET_FOR_EACH_DTYPE(DEEPNET_INSTANTIATE)
#undef DEEPNET_INSTANTIATE
