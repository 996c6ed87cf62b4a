# Element types shared by the kernels (included with `include "dtypes.pxi"`).
#
# float16 arrays reach the kernels viewed as uint16 (`half_t`): they are stored as half and
# converted to float32 on load, back to half on store (src/deepnet_half_isa.h).

from libc.stdint cimport uint16_t

cdef extern from "deepnet_half.h" nogil:
    float dn_half_to_float(uint16_t h)
    uint16_t dn_float_to_half(float f)
    void dn_halves_to_floats(const uint16_t* src, float* dst, long n)
    void dn_floats_to_halves(const float* src, uint16_t* dst, long n)

cdef extern from "deepnet_isa.h":
    int dn_isa_select()
    char* dn_isa_reason

# The kernels' instruction set, chosen once per module at import (src/deepnet_isa.h): a
# RuntimeError, not an ImportError, so that a refused DEEPNET_CPU_VARIANT is not mistaken
# for kernels that were never built.
if dn_isa_select() != 0:
    raise RuntimeError(f"deepnet: {dn_isa_reason.decode()}")

ctypedef uint16_t half_t

ctypedef fused storage_t:
    half_t
    float
    double

ctypedef fused compute_t:
    float
    double


cdef inline double load(storage_t value) noexcept nogil:
    """Read one stored element as a number (exact for every storage type)."""
    if storage_t is half_t:
        return dn_half_to_float(value)
    else:
        return value


cdef inline void store(storage_t* destination, double value) noexcept nogil:
    """Write one number as a stored element (float16: round to nearest even)."""
    if storage_t is half_t:
        destination[0] = dn_float_to_half(<float>value)
    else:
        destination[0] = <storage_t>value


cdef inline bint is_positive(storage_t value) noexcept nogil:
    """value > 0, compared in the stored type (so float loops stay in float and vectorise)."""
    if storage_t is half_t:  # on the bits: sign clear, not zero, not NaN
        return (value & 0x8000) == 0 and value != 0 and value <= 0x7c00
    else:
        return value > 0
