# Preconditions of the compiled kernels (include with `include "checks.pxi"`).
#
# deepnet.functional validates the user's arguments, with the caller's name, before any
# kernel runs.  The kernels are callable directly too, so each keeps O(1) checks of its
# own: the arrays passed fit together and every index fits the kernels' C ints, so that
# no call reads or writes out of bounds.  The sizes are Python ints here: they cannot
# overflow while they are checked.

INT_LIMIT = 2**31


cdef fits_int(str kernel, str name, value):
    """Refuse a size or offset that the kernel's int arithmetic cannot hold."""
    if value >= INT_LIMIT:
        raise ValueError(f"deepnet {kernel}: the {name} ({value}) does not fit the kernel's "
                         f"int indexes (limit {INT_LIMIT - 1})")


cdef tuple window_output(str kernel, H, W, int kh, int kw, int sh, int sw, int ph, int pw):
    """(OH, OW) of a kh x kw window sliding over H x W planes, after checking the geometry."""
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"deepnet {kernel}: needs window and stride >= 1 and pad >= 0, got window "
                         f"({kh}, {kw}), stride ({sh}, {sw}), pad ({ph}, {pw})")
    Hp, Wp = H + 2 * <object>ph, W + 2 * <object>pw
    if kh > Hp or kw > Wp:
        raise ValueError(f"deepnet {kernel}: window ({kh}, {kw}) larger than the padded plane ({Hp}, {Wp})")
    fits_int(kernel, "padded height + stride", Hp + sh)
    fits_int(kernel, "padded width + stride", Wp + sw)
    fits_int(kernel, "padded plane", Hp * Wp)
    return (Hp - kh) // sh + 1, (Wp - kw) // sw + 1


cdef check_shape(str kernel, str name, tuple got, tuple expected):
    if got != expected:
        raise ValueError(f"deepnet {kernel}: {name} must have shape {expected}, got {got}")


cdef tuple dims(const Py_ssize_t* shape, int ndim):
    """The first ndim entries of a memoryview's shape, as a tuple of Python ints."""
    return tuple([shape[i] for i in range(ndim)])
