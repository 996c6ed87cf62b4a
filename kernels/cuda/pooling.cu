// Max pooling over (kh, kw) windows with stride (sh, sw) and padding (ph, pw).
//
// Padding positions are skipped (they never win).  argmax holds the flat index
// y*W + x of the winner inside the (H, W) plane of the unpadded input.  Like
// np.argmax: ties go to the first element in row-major window order, and the
// first NaN wins.  Every window holds at least one real pixel (pad < window).
#include "common.cuh"

// One thread per output element (n, c, oy, ox).
template <typename T>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 int* __restrict__ argmax,
                                 int N, int C, int H, int W, int kh, int kw,
                                 int sh, int sw, int ph, int pw, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const int ox = (int)(idx % OW);
        const int oy = (int)((idx / OW) % OH);
        const long long plane = idx / ((long long)OW * OH);  // n * C + c
        const T* x_plane = x + plane * H * W;

        int best_index = -1;
        typename Acc<T>::type best = 0;
        for (int i = 0; i < kh; ++i) {
            const int row = oy * sh - ph + i;
            if (row < 0 || row >= H) continue;
            for (int j = 0; j < kw; ++j) {
                const int column = ox * sw - pw + j;
                if (column < 0 || column >= W) continue;
                const typename Acc<T>::type v = to_acc(x_plane[row * W + column]);
                // Once a NaN holds the lead it keeps it; otherwise a NaN or a
                // strictly larger value takes over (equal values do not).
                if (best_index < 0 || (!is_nan(best) && (is_nan(v) || v > best))) {
                    best = v;
                    best_index = row * W + column;
                }
            }
        }
        y[idx] = x_plane[best_index];
        argmax[idx] = best_index;
    }
}

// One thread per input pixel (n, c, row, column): sums dout over the windows
// that could contain the pixel and chose it as their argmax.  A gather, so it
// needs no atomics and the result does not depend on thread scheduling.
template <typename T>
__global__ void max_pool_backward(const T* __restrict__ dout,
                                  const int* __restrict__ argmax, T* __restrict__ dx,
                                  int N, int C, int H, int W, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const int column = (int)(idx % W);
        const int row = (int)((idx / W) % H);
        const long long plane = idx / ((long long)W * H);  // n * C + c
        const long long out_plane = plane * OH * OW;
        const int flat = row * W + column;

        typename Acc<T>::type sum = 0;
        for (int i = 0; i < kh; ++i) {
            const int ty = row + ph - i;           // == oy * sh for a covering window
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= OH) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = column + pw - j;    // == ox * sw for a covering window
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= OW) continue;
                const long long o = out_plane + oy * OW + ox;
                if (argmax[o] == flat) sum += to_acc(dout[o]);
            }
        }
        dx[idx] = from_acc<T>(sum);
    }
}

#define DEEPNET_INSTANTIATE(T)                                                          \
    template __global__ void max_pool_forward<T>(const T*, T*, int*, int, int, int, int, \
                                                 int, int, int, int, int, int, int, int); \
    template __global__ void max_pool_backward<T>(const T*, const int*, T*, int, int,    \
                                                  int, int, int, int, int, int, int,     \
                                                  int, int, int);
DEEPNET_FOR_EACH_DTYPE(DEEPNET_INSTANTIATE)
#undef DEEPNET_INSTANTIATE
