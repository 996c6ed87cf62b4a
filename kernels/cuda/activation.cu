// ReLU forward and backward, one thread per element.
#include "common.cuh"

// y = max(x, 0); NaN stays NaN (as np.maximum(x, 0) does).
template <typename T>
__global__ void relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    DEEPNET_FOR_EACH_INDEX(idx, n) {
        const typename Acc<T>::type v = to_acc(x[idx]);
        y[idx] = (v > 0 || is_nan(v)) ? x[idx] : from_acc<T>(0);
    }
}

// dx = dout * (y > 0).  A real multiplication, so NaN or inf in dout gives NaN
// where y <= 0, exactly like the NumPy expression.
template <typename T>
__global__ void relu_backward(const T* __restrict__ dout, const T* __restrict__ y,
                              T* __restrict__ dx, long long n)
{
    DEEPNET_FOR_EACH_INDEX(idx, n) {
        const typename Acc<T>::type mask = to_acc(y[idx]) > 0 ? 1 : 0;
        dx[idx] = from_acc<T>(to_acc(dout[idx]) * mask);
    }
}

#define DEEPNET_INSTANTIATE(T)                                                   \
    template __global__ void relu_forward<T>(const T*, T*, long long);           \
    template __global__ void relu_backward<T>(const T*, const T*, T*, long long);
DEEPNET_FOR_EACH_DTYPE(DEEPNET_INSTANTIATE)
#undef DEEPNET_INSTANTIATE
