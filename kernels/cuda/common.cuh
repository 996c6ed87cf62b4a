// Helpers shared by every deepnet CUDA source.
//
// Storage types: __half (float16), float (float32), double (float64).
// Arithmetic always happens in the "accumulator" type Acc<T>::type: float for
// __half and float, double for double.  Values are converted on load
// (to_acc) and rounded once on store (from_acc<T>).
//
// deepnet/_cuda.py pastes this header into each .cu file before handing the
// text to NVRTC, so CuPy's kernel cache sees header changes too.
#ifndef DEEPNET_COMMON_CUH
#define DEEPNET_COMMON_CUH

#include <cuda_fp16.h>

// Every kernel walks its items with a grid-stride loop: any launch size covers
// all n items, and a launch with one single thread does all the work in order.
#define DEEPNET_FOR_EACH_INDEX(i, n)                                         \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;     \
         i < (n); i += (long long)blockDim.x * gridDim.x)

// Expands M(type) once per supported storage type; used for explicit
// template instantiations so that nvcc type-checks all three dtypes.
#define DEEPNET_FOR_EACH_DTYPE(M) M(__half) M(float) M(double)

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ inline float to_acc(__half v) { return __half2float(v); }
__device__ inline float to_acc(float v) { return v; }
__device__ inline double to_acc(double v) { return v; }

template <typename T>
__device__ inline T from_acc(typename Acc<T>::type v) { return v; }

template <>
__device__ inline __half from_acc<__half>(float v) { return __float2half(v); }  // round to nearest even

// True only for NaN (NaN is the one value that differs from itself).
__device__ inline bool is_nan(float v) { return v != v; }
__device__ inline bool is_nan(double v) { return v != v; }

__device__ inline float acc_exp(float v) { return expf(v); }
__device__ inline double acc_exp(double v) { return exp(v); }
__device__ inline float acc_log(float v) { return logf(v); }
__device__ inline double acc_log(double v) { return log(v); }

#endif  // DEEPNET_COMMON_CUH
