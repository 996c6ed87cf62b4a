# Sliding-window copies shared by im2col.pyx and conv.pyx (include after dtypes.pxi).
#
# A "row" of the column matrix is one window offset (i, j) of one input plane: its OH*OW
# entries are plane[oy*sh - ph + i, ox*sw - pw + j] (zero outside the plane).  The
# functions take raw pointers and a step between consecutive entries, so callers can lay
# the columns out as (C*kh*kw, OH*OW) (step 1) or transposed (step C*kh*kw).

cdef inline int first_inside(int j, int pad, int stride, int out_size) noexcept nogil:
    """First output position o whose input o*stride - pad + j is >= 0; out_size when there
    is none (padding wider than the whole output row)."""
    cdef int lo = pad - j
    return 0 if lo <= 0 else min(out_size, (lo + stride - 1) // stride)


cdef inline int stop_inside(int j, int pad, int stride, int size, int out_size) noexcept nogil:
    """One past the last output position whose input o*stride - pad + j is < size (never
    before first_inside)."""
    cdef int hi = size - 1 + pad - j
    cdef int stop = 0 if hi < 0 else min(out_size, hi // stride + 1)
    return max(stop, first_inside(j, pad, stride, out_size))


cdef inline void unfold_row(const storage_t* plane, column_t* out, Py_ssize_t step,
                            int i, int j, int H, int W, int OH, int OW,
                            int sh, int sw, int ph, int pw) noexcept nogil:
    """out[(oy*OW + ox)*step] = plane[oy*sh - ph + i, ox*sw - pw + j], zero outside."""
    cdef int ox_first = first_inside(j, pw, sw, OW)
    cdef int ox_stop = stop_inside(j, pw, sw, W, OW)
    cdef int oy, ox, iy
    cdef column_t* line
    cdef const storage_t* source
    for oy in range(OH):
        line = out + oy * OW * step
        iy = oy * sh - ph + i
        if iy < 0 or iy >= H:
            for ox in range(OW):
                line[ox * step] = 0
            continue
        source = plane + iy * W - pw + j
        for ox in range(ox_first):
            line[ox * step] = 0
        if step == 1 and sw == 1:  # the common case, as contiguous loops the compiler vectorises
            if storage_t is half_t and column_t is float:
                dn_halves_to_floats(source + ox_first, line + ox_first, ox_stop - ox_first)
            else:
                for ox in range(ox_first, ox_stop):
                    store(&line[ox], load(source[ox]))
        else:
            for ox in range(ox_first, ox_stop):
                store(&line[ox * step], load(source[ox * sw]))
        for ox in range(ox_stop, OW):
            line[ox * step] = 0


cdef inline void fold_row(const column_t* col, Py_ssize_t step, compute_t* plane,
                          int i, int j, int H, int W, int OH, int OW,
                          int sh, int sw, int ph, int pw) noexcept nogil:
    """The adjoint of unfold_row: plane[...] += col[(oy*OW + ox)*step] at the same places."""
    cdef int ox_first = first_inside(j, pw, sw, OW)
    cdef int ox_stop = stop_inside(j, pw, sw, W, OW)
    cdef int oy, ox, iy
    cdef compute_t* target
    for oy in range(OH):
        iy = oy * sh - ph + i
        if iy < 0 or iy >= H:
            continue
        target = plane + iy * W - pw + j
        if step == 1 and sw == 1:
            for ox in range(ox_first, ox_stop):
                target[ox] += <compute_t>load(col[oy * OW + ox])
        else:
            for ox in range(ox_first, ox_stop):
                target[ox * sw] += <compute_t>load(col[(oy * OW + ox) * step])
