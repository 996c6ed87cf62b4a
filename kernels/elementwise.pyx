# Element-wise kernels: ReLU forward and backward (float16 without numpy's slow half loops),
# the float16 casts, a byte comparison and Adam's update.

from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp

include "dtypes.pxi"

cdef extern from "deepnet_adam.h" nogil:
    void dn_adam_float(float* param, const float* grad, float* m, float* v, long n,
                       float one_minus_beta1, float one_minus_beta2, float lr_t, float eps)
    void dn_adam_double(double* param, const double* grad, double* m, double* v, long n,
                        double one_minus_beta1, double one_minus_beta2, double lr_t, double eps)

ctypedef fused real_t:
    float
    double

# Elements per task of an element-wise pass: the chunks do not depend on the thread count.
DEF CHUNK = 8192


cdef check_lengths(str kernel, Py_ssize_t n, Py_ssize_t m, Py_ssize_t k=-1):
    """The arrays of an element-wise kernel have the same length."""
    if m != n or (k >= 0 and k != n):
        raise ValueError(f"deepnet {kernel}: the arrays must have the same length, got "
                         f"{n}, {m}" + (f", {k}" if k >= 0 else ""))


def relu_forward(const storage_t[::1] x, storage_t[::1] y, int n_threads):
    """y = max(x, 0); NaN stays NaN (it is not < 0)."""
    check_lengths("relu_forward", x.shape[0], y.shape[0])
    cdef Py_ssize_t i
    for i in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        if storage_t is half_t:  # on the bits: negative = sign set and not NaN
            y[i] = 0 if (x[i] & 0x8000) and (x[i] & 0x7fff) <= 0x7c00 else x[i]
        else:
            y[i] = 0 if x[i] < 0 else x[i]


def relu_backward(const storage_t[::1] dout, const storage_t[::1] y, storage_t[::1] dx, int n_threads):
    """dx = dout * (y > 0): a multiplication, so NaN in dout stays NaN as in the reference."""
    check_lengths("relu_backward", dout.shape[0], y.shape[0], dx.shape[0])
    cdef Py_ssize_t i
    for i in prange(dout.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        if storage_t is half_t:  # dout * 0 on the bits: NaN for Inf or NaN, else 0 with dout's sign
            if is_positive(y[i]):
                dx[i] = dout[i]
            elif (dout[i] & 0x7fff) >= 0x7c00:
                dx[i] = 0x7e00
            else:
                dx[i] = dout[i] & 0x8000
        else:
            dx[i] = dout[i] * is_positive(y[i])


def float_to_half(const float[::1] source, half_t[::1] target, int n_threads):
    """Round float32 to float16 (nearest even), F16C where the CPU has it."""
    check_lengths("float_to_half", source.shape[0], target.shape[0])
    cdef Py_ssize_t i
    for i in prange(source.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        target[i] = dn_float_to_half(source[i])


def half_to_float(const half_t[::1] source, float[::1] target, int n_threads):
    """Widen float16 to float32 (exact), F16C where the CPU has it."""
    check_lengths("half_to_float", source.shape[0], target.shape[0])
    cdef Py_ssize_t i
    for i in prange(source.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        target[i] = dn_half_to_float(source[i])


ctypedef fused float_bits_t:
    uint16_t
    uint32_t
    uint64_t


cdef inline float_bits_t chunk_max_magnitude(const float_bits_t* x, Py_ssize_t n) noexcept nogil:
    """max(x[i] with the sign bit cleared): positive floats order as their bits."""
    cdef float_bits_t best = 0, value
    cdef float_bits_t magnitude = <float_bits_t>(~(<float_bits_t>1 << (8 * sizeof(float_bits_t) - 1)))
    cdef Py_ssize_t i
    for i in range(n):
        value = x[i] & magnitude
        best = value if value > best else best
    return best


def max_abs_bits(const float_bits_t[::1] x, int n_threads):
    """The bits of max |x| for an array of floats viewed as unsigned ints of their size
    (float16 as uint16, float32 as uint32, float64 as uint64): NaN's bits are above
    infinity's, so a NaN counts as the largest.  0 for an empty array.  One pass,
    vectorised on the integers (a float maximum does not vectorise without fast-math)."""
    cdef Py_ssize_t n = x.shape[0], chunks = (n + CHUNK - 1) // CHUNK, chunk
    cdef float_bits_t best = 0
    if n == 0:
        return 0
    cdef float_bits_t* maxima = <float_bits_t*>malloc(chunks * sizeof(float_bits_t))
    if maxima == NULL:
        raise MemoryError("deepnet max_abs_bits: out of memory")
    for chunk in prange(chunks, nogil=True, schedule="static", num_threads=n_threads):
        maxima[chunk] = chunk_max_magnitude(&x[chunk * CHUNK], min(CHUNK, n - chunk * CHUNK))
    for chunk in range(chunks):
        best = maxima[chunk] if maxima[chunk] > best else best
    free(maxima)
    return best


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b):
    """True when a and b hold the same bytes (memcmp: np.array_equal took 3x as long on
    the 147 KB of a 64x64 filter bank, and compares values, where -0.0 == 0.0)."""
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0] == 0:
        return True
    cdef int different
    with nogil:
        different = memcmp(&a[0], &b[0], a.shape[0])
    return different == 0


def adam_update(real_t[::1] param, const real_t[::1] grad, real_t[::1] m, real_t[::1] v,
                double one_minus_beta1, double one_minus_beta2, double lr_t, double eps,
                int n_threads):
    """One Adam step in place (src/deepnet_adam.h): the same bits as the NumPy update, whose
    scalars NumPy also rounds to the arrays' type first."""
    check_lengths("adam_update", param.shape[0], grad.shape[0], m.shape[0])
    check_lengths("adam_update", param.shape[0], v.shape[0])
    cdef Py_ssize_t n = param.shape[0], chunk, start
    if n == 0:
        return
    for chunk in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule="static", num_threads=n_threads):
        start = chunk * CHUNK
        if real_t is float:
            dn_adam_float(&param[start], &grad[start], &m[start], &v[start], min(CHUNK, n - start),
                          <float>one_minus_beta1, <float>one_minus_beta2, <float>lr_t, <float>eps)
        else:
            dn_adam_double(&param[start], &grad[start], &m[start], &v[start], min(CHUNK, n - start),
                           one_minus_beta1, one_minus_beta2, lr_t, eps)
