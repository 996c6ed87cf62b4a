// Softmax with cross-entropy loss for x of shape (N, K) and integer labels t
// of shape (N,) (one-hot targets are turned into labels by the caller).
// Follows the book: y = exp(x - max) / sum(exp(x - max)) per row, and
// loss = -mean(log(y[n, t[n]] + 1e-7)).  Labels must lie in [0, K).
#include "common.cuh"

// One thread per row: writes the probabilities y and the row's loss
// -log(y[n, t[n]] + 1e-7) (the caller takes the mean in float64).
template <typename T>
__global__ void softmax_cross_entropy_forward(const T* __restrict__ x,
                                              const int* __restrict__ t,
                                              T* __restrict__ y,
                                              double* __restrict__ row_loss,
                                              int N, int K)
{
    typedef typename Acc<T>::type acc_t;
    DEEPNET_FOR_EACH_INDEX(n, N) {
        const T* x_row = x + n * K;
        T* y_row = y + n * K;

        acc_t row_max = to_acc(x_row[0]);
        for (int k = 1; k < K; ++k) {
            const acc_t v = to_acc(x_row[k]);
            if (v > row_max) row_max = v;
        }
        acc_t total = 0;
        for (int k = 0; k < K; ++k) total += acc_exp(to_acc(x_row[k]) - row_max);
        for (int k = 0; k < K; ++k) {
            y_row[k] = from_acc<T>(acc_exp(to_acc(x_row[k]) - row_max) / total);
        }
        // Use the stored (rounded) probability, as the book's y[t] does.
        const acc_t p = to_acc(y_row[t[n]]);
        row_loss[n] = -(double)acc_log(p + (acc_t)1e-7);
    }
}

// dx = (y - onehot(t)) / N, one thread per element of y.
template <typename T>
__global__ void softmax_cross_entropy_backward(const T* __restrict__ y,
                                               const int* __restrict__ t,
                                               T* __restrict__ dx, int N, int K)
{
    const long long total = (long long)N * K;
    DEEPNET_FOR_EACH_INDEX(idx, total) {
        const long long n = idx / K;
        const int k = (int)(idx % K);
        typename Acc<T>::type v = to_acc(y[idx]);
        if (k == t[n]) v -= 1;
        dx[idx] = from_acc<T>(v / N);
    }
}

#define DEEPNET_INSTANTIATE(T)                                                       \
    template __global__ void softmax_cross_entropy_forward<T>(const T*, const int*,  \
                                                              T*, double*, int, int); \
    template __global__ void softmax_cross_entropy_backward<T>(const T*, const int*, \
                                                               T*, int, int);
DEEPNET_FOR_EACH_DTYPE(DEEPNET_INSTANTIATE)
#undef DEEPNET_INSTANTIATE
