# DeepConvNet's max-pooling (2x2 windows, stride 2, no padding) on one plane: the vectorised
# kernels of src/deepnet_pool.h, for max_pool_forward (max_pool_2x2) and conv_pool_forward
# (the filters-last ones, on its compute_t image before the transpose) (included after
# dtypes.pxi).

from libc.stdint cimport int32_t

cdef extern from "deepnet_pool.h" nogil:
    void dn_max_pool_2x2_float(const float* plane, float* out, int32_t* winners, int W, int OH, int OW)
    void dn_max_pool_2x2_double(const double* plane, double* out, int32_t* winners, int W, int OH, int OW)
    void dn_max_pool_2x2_filters_last_float(const float* product, int ld, const float* bias, bint relu,
                                            int FN, int W, int OH, int OW, float* out, int32_t* winners)
    void dn_max_pool_2x2_filters_last_double(const double* product, int ld, const double* bias, bint relu,
                                             int FN, int W, int OH, int OW, double* out, int32_t* winners)
    void dn_epilogue_rounded_to_half(float* product, int ld, const float* bias, bint relu, int FN, int pixels)


cdef inline void max_pool_2x2(const storage_t* plane, storage_t* out, int32_t* winners,
                              int W, int OH, int OW) noexcept nogil:
    """out (OH x OW) = the maxima of the 2x2 windows of plane (rows W apart), winners their
    flat indexes (float and double; float16 is widened to float first)."""
    if storage_t is float:
        dn_max_pool_2x2_float(plane, out, winners, W, OH, OW)
    elif storage_t is double:
        dn_max_pool_2x2_double(plane, out, winners, W, OH, OW)
