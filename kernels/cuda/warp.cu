// Bilinear image warps for data augmentation (the CUDA twin of kernels/warp.pyx).
//
// Output pixel (r, c) of image n samples its input plane at
//     theta[n] @ (r + d[n, 0, r, c], c + d[n, 1, r, c], 1)     (d = 0 for affine_warp)
// in pixel units, pixel centres at integers; neighbours outside the plane count as
// fill (scipy.ndimage's order=1, mode="grid-constant").  A position outside
// (-1, H) x (-1, W), or NaN, gives fill before any float -> int conversion, so no
// position can overflow an int or read out of bounds.  Positions are computed in
// double, the interpolation in Acc<T>.
#include "common.cuh"

template <typename T>
__device__ inline typename Acc<T>::type sample(const T* __restrict__ plane, int H, int W,
                                               double y, double x, typename Acc<T>::type fill)
{
    if (!(y > -1.0 && y < H && x > -1.0 && x < W)) return fill;  // also catches NaN
    const double row = floor(y), column = floor(x);             // in [-1, H-1], [-1, W-1]
    const int iy = (int)row, ix = (int)column;
    const typename Acc<T>::type ty = (typename Acc<T>::type)(y - row);
    const typename Acc<T>::type tx = (typename Acc<T>::type)(x - column);
    const bool up = iy >= 0, down = iy + 1 < H, left = ix >= 0, right = ix + 1 < W;
    const long long at = (long long)iy * W + ix;
    const typename Acc<T>::type v00 = up && left ? to_acc(plane[at]) : fill;
    const typename Acc<T>::type v01 = up && right ? to_acc(plane[at + 1]) : fill;
    const typename Acc<T>::type v10 = down && left ? to_acc(plane[at + W]) : fill;
    const typename Acc<T>::type v11 = down && right ? to_acc(plane[at + W + 1]) : fill;
    const typename Acc<T>::type top = v00 + tx * (v01 - v00);
    const typename Acc<T>::type bottom = v10 + tx * (v11 - v10);
    return top + ty * (bottom - top);
}

// The output pixel idx = ((n * C + c) * H + r) * W + col, at position (u, v) before theta.
template <typename T>
__device__ inline void warp_pixel(const T* __restrict__ x, const double* __restrict__ theta,
                                  T* __restrict__ out, long long idx, int C, int H, int W,
                                  double u, double v, double fill)
{
    const long long plane = idx / ((long long)H * W);  // n * C + c
    const double* t = theta + (plane / C) * 6;
    out[idx] = from_acc<T>(sample(x + plane * H * W, H, W, t[0] * u + t[1] * v + t[2],
                                  t[3] * u + t[4] * v + t[5], (typename Acc<T>::type)fill));
}

// One thread per output element (n, c, r, col); theta is (N, 2, 3).
template <typename T>
__global__ void affine_warp(const T* __restrict__ x, const double* __restrict__ theta,
                            T* __restrict__ out, int N, int C, int H, int W, double fill)
{
    const long long total = (long long)N * C * H * W;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const int column = (int)(idx % W);
        const int row = (int)((idx / W) % H);
        warp_pixel(x, theta, out, idx, C, H, W, row, column, fill);
    }
}

// As affine_warp, the position displaced first by displacement (N, 2, H, W).
template <typename T>
__global__ void elastic_warp(const T* __restrict__ x, const double* __restrict__ displacement,
                             const double* __restrict__ theta, T* __restrict__ out,
                             int N, int C, int H, int W, double fill)
{
    const long long total = (long long)N * C * H * W;
    const long long pixels = (long long)H * W;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const long long q = idx % pixels;                        // r * W + col
        const double* d = displacement + (idx / (pixels * C)) * 2 * pixels;
        warp_pixel(x, theta, out, idx, C, H, W, (double)(q / W) + d[q], (double)(q % W) + d[pixels + q],
                   fill);
    }
}

#define DEEPNET_INSTANTIATE(T)                                                                  \
    template __global__ void affine_warp<T>(const T*, const double*, T*, int, int, int, int,    \
                                            double);                                            \
    template __global__ void elastic_warp<T>(const T*, const double*, const double*, T*, int,   \
                                             int, int, int, double);
DEEPNET_FOR_EACH_DTYPE(DEEPNET_INSTANTIATE)
#undef DEEPNET_INSTANTIATE
