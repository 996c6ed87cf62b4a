# The compiled inference plan (src/deepnet_plan.h) and the Affine layer's kernel.
#
# Plan holds a network's steps as C structs, the arrays they point into, and every buffer a
# call needs: two activation buffers for the largest batch seen so far (grown, never
# shrunk), one zero-bordered padded image per convolution and thread, and one scratch per
# thread.  A call runs all the steps in one OpenMP team without the GIL.

from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

include "dtypes.pxi"
include "checks.pxi"

import numpy as np

cdef extern from "deepnet_plan.h" nogil:
    int dn_bf16_best_isa()
    enum:
        DN_PLAN_CONV
        DN_PLAN_AFFINE
        DN_PLAN_ACTIVATE
        DN_PLAN_ADD
        DN_PLAN_MEAN
        DN_PLAN_MAX_POOL
        DN_PLAN_CONCAT
        DN_PLAN_BINARY_CONV
        DN_PLAN_BINARY_AFFINE
        DN_PLAN_RELU
        DN_PLAN_SCALE
        DN_PLAN_CHANNEL
        DN_PLAN_ROUND_HALF
        DN_PLAN_ROUND_BF16
        DN_PLAN_MAX_OPS
        DN_PLAN_AFFINE_COLUMNS
        DN_PLAN_WINOGRAD_NEVER
        DN_PLAN_WINOGRAD_AUTO
        DN_PLAN_WINOGRAD_ALWAYS
    ctypedef struct dn_plan_step:
        int kind
        int src, dst, other
        long in_size, out_size
        int C, H, W, FN, kh, kw, sh, sw, ph, pw, OH, OW, relu, pooled
        int K, ld
        const void* direct
        const void* winograd
        int winograd_rule
        double W_max
        const void* bias
        const uint32_t* bf16_filters
        int K2, bf16_isa
        const int* window_steps
        const int* pixel_offsets
        void* padded
        long padded_size
        int Kin, M, ldw
        const void* weights
        int ops
        int op_kind[8]
        double op_scale[8]
        const void* op_shift[8]
        const void* op_scales[8]
        const void* op_offset[8]
        long op_plane[8]
        int op_channels[8]
        long plane
        long offset
        const uint64_t* sign_filters
        int Cw
    ctypedef struct dn_plan_scratch:
        void* product
        void* pooled_rows
        void* rows
        void* V
        void* M
        int* row_offset
        int* step_offset
        uint16_t* bf16_rows
        uint64_t* signs
    int DN_WINOGRAD_TILES(int n)
    size_t DN_WINOGRAD_STRIDE(size_t n)
    size_t DN_WINOGRAD_ROWS_SCRATCH(int Cp, int Hp, int Wp)
    int DN_MAX_VBYTES
    void dn_plan_affine_float(const float* x, int N, int K, const float* W, int ldw, int M, const float* bias,
                              float* out, int threads)
    void dn_plan_affine_double(const double* x, int N, int K, const double* W, int ldw, int M,
                               const double* bias, double* out, int threads)
    void dn_plan_mean_float(const float* x, long planes, long plane, float* out, int threads)
    void dn_plan_mean_double(const double* x, long planes, long plane, double* out, int threads)
    void dn_plan_run_float(const dn_plan_step* steps, int count, float* const* slots, int N,
                           dn_plan_scratch* scratch, int threads, int winograd_mode)
    void dn_plan_run_double(const dn_plan_step* steps, int count, double* const* slots, int N,
                            dn_plan_scratch* scratch, int threads, int winograd_mode)

WINOGRAD_MODES = {"never": DN_PLAN_WINOGRAD_NEVER, "auto": DN_PLAN_WINOGRAD_AUTO, "always": DN_PLAN_WINOGRAD_ALWAYS}


def affine_forward(const compute_t[:, ::1] x, const compute_t[:, ::1] W, const compute_t[::1] b,
                   compute_t[:, ::1] out, int n_threads):
    """out = x @ W[:, :M] + b (M = b's length), each sum from the first feature up (the
    plan's affine step).  W's columns are padded to a multiple of AFFINE_COLUMNS (past M
    they are read, never used)."""
    cdef int N = x.shape[0], K = x.shape[1], M = b.shape[0], ldw = W.shape[1]
    if W.shape[0] != K or ldw < M or ldw % DN_PLAN_AFFINE_COLUMNS:
        raise ValueError(f"deepnet affine_forward: W must have {K} rows and at least {M} columns, "
                         f"a multiple of {DN_PLAN_AFFINE_COLUMNS}, got {dims(W.shape, 2)}")
    check_shape("affine_forward", "out", dims(out.shape, 2), (N, M))
    if N == 0 or M == 0:
        return
    cdef compute_t zero = 0
    # empty x (K == 0): the sums are 0, and &x[0, 0] is out of bounds
    cdef const compute_t* x_data = &x[0, 0] if K else &zero
    cdef const compute_t* W_data = &W[0, 0] if K else &zero
    with nogil:
        if compute_t is float:
            dn_plan_affine_float(x_data, N, K, W_data, ldw, M, &b[0], &out[0, 0], n_threads)
        else:
            dn_plan_affine_double(x_data, N, K, W_data, ldw, M, &b[0], &out[0, 0], n_threads)


AFFINE_COLUMNS = DN_PLAN_AFFINE_COLUMNS


def global_average_pool(const compute_t[:, ::1] x, compute_t[::1] out, int n_threads):
    """out[p] = the mean of x's row p (a plane of an image): summed in order, then divided
    (the plan's mean step)."""
    check_shape("global_average_pool", "out", dims(out.shape, 1), (x.shape[0],))
    if x.shape[0] == 0:
        return
    cdef compute_t zero = 0
    cdef const compute_t* data = &x[0, 0] if x.shape[1] else &zero
    with nogil:
        if compute_t is float:
            dn_plan_mean_float(data, x.shape[0], x.shape[1], &out[0], n_threads)
        else:
            dn_plan_mean_double(data, x.shape[0], x.shape[1], &out[0], n_threads)


cdef int* int_offsets(list values) except NULL:
    cdef int* out = <int*>malloc(max(len(values), 1) * sizeof(int))
    if out == NULL:
        raise MemoryError("deepnet Plan: out of memory for the offsets")
    for i, v in enumerate(values):
        out[i] = v
    return out


cdef class Plan:
    """Steps built by deepnet.models.compiled (one dict each), run by run(x, out, threads,
    winograd_mode).  A step reads slot "src" (and "other") and writes slot "dst": slot 0
    is the input, slot 1 the output, slots 2... buffers the plan owns."""

    cdef dn_plan_step* steps
    cdef int count
    cdef object dtype
    cdef list keep            # the arrays the steps point into
    cdef list offsets         # malloc'd offset arrays
    cdef int threads          # threads the scratch is allocated for
    cdef dn_plan_scratch* scratch
    cdef size_t itemsize
    cdef size_t product_size, pooled_size, rows_size, V_size, M_size, offsets_size, bf16_rows_size, signs_size
    cdef dict slot_sizes      # slot -> elements of one image's value in it (as the steps go)
    cdef dict buffer_sizes    # slot -> elements of one image's largest value in it
    cdef list buffers         # slots 2...: arrays for `capacity` images
    cdef size_t addresses[64] # their data, by slot
    cdef int capacity
    cdef readonly long in_size, out_size

    def __cinit__(self):
        self.steps = NULL
        self.scratch = NULL
        self.count = 0
        self.threads = 0
        self.offsets = []

    def __init__(self, list steps, dtype, long in_size):
        """steps: dicts, one per step (see deepnet.models.compiled); in_size: the elements of one input."""
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"deepnet Plan: float32 or float64, got {self.dtype}")
        if not steps:
            raise ValueError("deepnet Plan: needs at least one step")
        if in_size < 1:
            raise ValueError(f"deepnet Plan: in_size must be positive, got {in_size}")
        self.itemsize = self.dtype.itemsize
        self.keep = []
        self.steps = <dn_plan_step*>calloc(len(steps), sizeof(dn_plan_step))
        if self.steps == NULL:
            raise MemoryError("deepnet Plan: out of memory for the steps")
        self.count = len(steps)
        self.in_size = in_size
        self.product_size = self.pooled_size = self.rows_size = self.V_size = self.M_size = 1
        self.offsets_size = self.bf16_rows_size = self.signs_size = 1
        self.slot_sizes = {0: in_size}
        self.buffer_sizes = {}
        for i, spec in enumerate(steps):
            src, dst, other = spec["src"], spec["dst"], spec.get("other", spec["src"])
            if src not in self.slot_sizes or other not in self.slot_sizes or not 0 < dst < 64:
                raise ValueError(f"deepnet Plan: step {i} reads slot {src} or {other} before any step "
                                 f"writes it, or writes slot {dst}")
            if dst == 1 and i != self.count - 1:
                raise ValueError("deepnet Plan: only the last step writes the output (slot 1)")
            self.steps[i].src, self.steps[i].dst, self.steps[i].other = src, dst, other
            self._set_step(&self.steps[i], spec, self.slot_sizes[src])
            if self.slot_sizes[other] != self.steps[i].in_size:
                raise ValueError(f"deepnet Plan: step {i} adds slots of {self.slot_sizes[src]} and "
                                 f"{self.slot_sizes[other]} values")
            self.slot_sizes[dst] = self.steps[i].out_size
            self.buffer_sizes[dst] = max(self.buffer_sizes.get(dst, 0), self.steps[i].out_size)
        if self.steps[self.count - 1].dst != 1:
            raise ValueError("deepnet Plan: the last step must write the output (slot 1)")
        self.out_size = self.slot_sizes[1]
        self.capacity = 0
        self.buffers = []

    cdef const void* _data(self, array, dtype=None) except NULL:
        array = np.ascontiguousarray(array, dtype=self.dtype if dtype is None else dtype)
        array.flags.writeable = False
        self.keep.append(array)
        return <const void*><size_t>array.ctypes.data  # NumPy allocates even an empty array

    cdef tuple _set_windows(self, dn_plan_step* step, dict spec, long in_size, str what):
        """The window geometry a convolution, pooling or binary convolution step shares: C x H x W
        images after a step of in_size outputs, kh x kw windows, strides and padding; (OH, OW)."""
        step.C, step.H, step.W = spec["C"], spec["H"], spec["W"]
        step.kh, step.kw = spec["kh"], spec["kw"]
        step.sh, step.sw, step.ph, step.pw = spec["sh"], spec["sw"], spec["ph"], spec["pw"]
        if <object>step.C * step.H * step.W != in_size:
            raise ValueError(f"deepnet Plan: a {what} of {step.C}x{step.H}x{step.W} images after a step of "
                             f"{in_size} outputs")
        step.OH, step.OW = window_output("Plan", step.H, step.W, step.kh, step.kw, step.sh, step.sw, step.ph, step.pw)
        return step.OH, step.OW

    cdef _set_step(self, dn_plan_step* step, dict spec, long in_size):
        cdef int lanes, Cp, tiles
        kind = spec["kind"]
        step.in_size = in_size
        if kind == "conv":
            step.kind = DN_PLAN_CONV
            step.FN = spec["FN"]
            OH, OW = self._set_windows(step, spec, in_size, "convolution")
            step.relu, step.pooled = spec["relu"], spec["pooled"]
            if step.pooled and (OH < 2 or OW < 2):
                raise ValueError(f"deepnet Plan: 2x2 pooling needs a 2x2 output at least, got {OH}x{OW}")
            direct = spec["direct"]
            step.K, step.ld = direct.shape
            if step.K != step.C * step.kh * step.kw or step.ld < step.FN or step.FN < 1:
                raise ValueError(f"deepnet Plan: filter matrix of shape {direct.shape} for {step.FN} "
                                 f"filters of {step.C}x{step.kh}x{step.kw}")
            step.direct = self._data(direct)
            winograd = spec["winograd"]
            step.winograd = NULL
            if winograd is not None:
                check_shape("Plan", "Winograd filters", winograd.shape, (16 * step.C, step.ld))
                step.winograd = self._data(winograd)
            step.winograd_rule = spec["winograd_rule"]
            step.W_max = spec["W_max"]
            check_shape("Plan", "bias", np.shape(spec["bias"]), (step.FN,))
            bias = np.zeros(step.ld, dtype=self.dtype)
            bias[: step.FN] = spec["bias"]
            step.bias = self._data(bias)
            step.bf16_filters = NULL
            pairs = spec.get("bf16_filters")
            if pairs is not None:  # a bfloat16 model's: the dot GEMM, not the filter matrices
                if self.dtype != np.dtype(np.float32) or step.pooled:
                    raise ValueError("deepnet Plan: a bfloat16 convolution runs in a float32 plan, unpooled")
                step.K2 = (step.K + 1) // 2
                check_shape("Plan", "bfloat16 filter pairs", np.shape(pairs), (step.K2, step.FN))
                step.bf16_filters = <const uint32_t*>self._data(pairs, np.uint32)
                step.bf16_isa = dn_bf16_best_isa()
                self.bf16_rows_size = max(self.bf16_rows_size, <size_t>OH * OW * 2 * step.K2)
                self.product_size = max(self.product_size, <size_t>OH * OW * step.FN)
            Hp, Wp = step.H + 2 * step.ph, step.W + 2 * step.pw
            fits_int("Plan", "padded image", <object>step.C * Hp * Wp)
            fits_int("Plan", "product", <object>OH * OW * step.ld)
            self.offsets.append(<size_t>int_offsets(
                [(c * Hp + i) * Wp + j for c in range(step.C) for i in range(step.kh) for j in range(step.kw)]))
            step.window_steps = <const int*><size_t>self.offsets[len(self.offsets) - 1]
            self.offsets.append(<size_t>int_offsets(
                [oy * step.sh * Wp + ox * step.sw for oy in range(OH) for ox in range(OW)]))
            step.pixel_offsets = <const int*><size_t>self.offsets[len(self.offsets) - 1]
            step.padded = NULL
            step.padded_size = step.C * Hp * Wp
            step.out_size = step.FN * ((OH // 2) * (OW // 2) if step.pooled else OH * OW)
            self.product_size = max(self.product_size, <size_t>OH * OW * step.ld)
            self.pooled_size = max(self.pooled_size, <size_t>(OH // 2) * (OW // 2) * step.ld)
            if step.winograd != NULL:
                lanes = DN_MAX_VBYTES // self.itemsize
                Cp = (step.C + lanes - 1) // lanes * lanes
                tiles = DN_WINOGRAD_TILES(OH) * DN_WINOGRAD_TILES(OW)
                self.rows_size = max(self.rows_size, DN_WINOGRAD_ROWS_SCRATCH(Cp, OH + 2, OW + 2))
                self.V_size = max(self.V_size, 16 * DN_WINOGRAD_STRIDE(<size_t>Cp * tiles))
                self.M_size = max(self.M_size, 16 * DN_WINOGRAD_STRIDE(<size_t>tiles * step.ld))
                self.offsets_size = max(self.offsets_size, <size_t>tiles, <size_t>step.C)
        elif kind == "affine":
            step.kind = DN_PLAN_AFFINE
            weights = spec["weights"]
            step.Kin, step.M = weights.shape
            if step.Kin != in_size:
                raise ValueError(f"deepnet Plan: an affine layer of {step.Kin} inputs after a step of {in_size} outputs")
            step.ldw = (max(step.M, 1) + DN_PLAN_AFFINE_COLUMNS - 1) // DN_PLAN_AFFINE_COLUMNS * DN_PLAN_AFFINE_COLUMNS
            padded = np.zeros((max(step.Kin, 1), step.ldw), dtype=self.dtype)
            padded[: step.Kin, : step.M] = weights
            step.weights = self._data(padded)
            check_shape("Plan", "affine bias", np.shape(spec["bias"]), (step.M,))
            step.bias = self._data(spec["bias"])
            step.out_size = step.M
        elif kind == "activate":
            step.kind = DN_PLAN_ACTIVATE
            ops = spec["ops"]
            if not 0 < len(ops) <= DN_PLAN_MAX_OPS:
                raise ValueError(f"deepnet Plan: 1 to {DN_PLAN_MAX_OPS} activation operations, got {len(ops)}")
            step.ops = len(ops)
            for o, op in enumerate(ops):
                if op[0] == "relu":
                    step.op_kind[o] = DN_PLAN_RELU
                elif op[0] == "scale":
                    step.op_kind[o] = DN_PLAN_SCALE
                    step.op_scale[o] = op[1]
                elif op[0] == "round_half":
                    if self.dtype != np.dtype(np.float32):
                        raise ValueError(f"deepnet Plan: rounding to float16 is a float32 plan's, not {self.dtype}'s")
                    step.op_kind[o] = DN_PLAN_ROUND_HALF
                elif op[0] == "round_bf16":
                    if self.dtype != np.dtype(np.float32):
                        raise ValueError(f"deepnet Plan: rounding to bfloat16 is a float32 plan's, not {self.dtype}'s")
                    step.op_kind[o] = DN_PLAN_ROUND_BF16
                elif op[0] == "channel":
                    _, shift, scale, offset, plane = op
                    channels = len(scale)
                    if plane < 1 or channels * plane != in_size:
                        raise ValueError(f"deepnet Plan: {channels} channels of {plane} values after a step "
                                         f"of {in_size} outputs")
                    for name, values in (("shift", shift), ("offset", offset)):
                        check_shape("Plan", name, np.shape(values), (channels,))
                    step.op_kind[o] = DN_PLAN_CHANNEL
                    step.op_shift[o] = self._data(shift)
                    step.op_scales[o] = self._data(scale)
                    step.op_offset[o] = self._data(offset)
                    step.op_plane[o] = plane
                    step.op_channels[o] = channels
                else:
                    raise ValueError(f"deepnet Plan: unknown activation {op[0]!r}")
            step.out_size = in_size
        elif kind == "add":
            step.kind = DN_PLAN_ADD
            step.relu = spec.get("relu", False)
            step.out_size = in_size
        elif kind == "mean":
            step.kind = DN_PLAN_MEAN
            plane = spec["plane"]
            if plane < 1 or in_size % plane:
                raise ValueError(f"deepnet Plan: planes of {plane} values after a step of {in_size} outputs")
            step.plane = plane
            step.out_size = in_size // plane
        elif kind == "max_pool":
            step.kind = DN_PLAN_MAX_POOL
            OH, OW = self._set_windows(step, spec, in_size, "pooling")
            if step.ph >= step.kh or step.pw >= step.kw:
                raise ValueError(f"deepnet Plan: every pooling window needs a pixel: pad ({step.ph}, {step.pw}) "
                                 f"must be smaller than the window ({step.kh}, {step.kw})")
            fits_int("Plan", "pooled plane", <object>step.H * step.W)
            step.out_size = step.C * OH * OW
        elif kind == "binary_conv":
            step.kind = DN_PLAN_BINARY_CONV
            step.FN = spec["FN"]
            OH, OW = self._set_windows(step, spec, in_size, "binary convolution")
            if step.FN < 1:
                raise ValueError(f"deepnet Plan: a binary convolution needs a filter, got {step.FN}")
            step.Cw = (step.C + 63) // 64
            fits_int("Plan", "packed image", <object>step.H * step.W * step.Cw)
            check_shape("Plan", "sign filters", np.shape(spec["sign_filters"]),
                        (step.FN, step.kh * step.kw, step.Cw))
            step.sign_filters = <const uint64_t*>self._data(spec["sign_filters"], np.uint64)
            check_shape("Plan", "bias", np.shape(spec["bias"]), (step.FN,))
            step.bias = self._data(spec["bias"])
            # the packed image, a window's words and their offsets (ints, two to a word)
            self.signs_size = max(self.signs_size, <size_t>step.H * step.W * step.Cw
                                  + <size_t>step.kh * step.kw * step.Cw * 2)
            step.out_size = step.FN * OH * OW
        elif kind == "binary_affine":
            step.kind = DN_PLAN_BINARY_AFFINE
            step.Kin, step.M = spec["Kin"], spec["M"]
            if step.Kin != in_size or step.M < 1:
                raise ValueError(f"deepnet Plan: a binary affine layer of {step.Kin} inputs after a step of "
                                 f"{in_size} outputs")
            step.Cw = (step.Kin + 63) // 64
            check_shape("Plan", "sign filters", np.shape(spec["sign_filters"]), (step.M, step.Cw))
            step.sign_filters = <const uint64_t*>self._data(spec["sign_filters"], np.uint64)
            check_shape("Plan", "bias", np.shape(spec["bias"]), (step.M,))
            step.bias = self._data(spec["bias"])
            self.signs_size = max(self.signs_size, <size_t>step.Cw)
            step.out_size = step.M
        elif kind == "concat":
            step.kind = DN_PLAN_CONCAT
            step.offset, step.out_size = spec["offset"], spec["total"]
            if step.offset < 0 or step.offset + in_size > step.out_size:
                raise ValueError(f"deepnet Plan: a Concat branch of {in_size} values at {step.offset} "
                                 f"of an output of {step.out_size}")
        else:
            raise ValueError(f"deepnet Plan: unknown step kind {kind!r}")

    cdef _ensure_threads(self, int threads):
        """Scratch and padded images for `threads` threads (allocated once, grown)."""
        if threads <= self.threads:
            return
        self._free_scratch()
        cdef dn_plan_scratch* scratch = <dn_plan_scratch*>calloc(threads, sizeof(dn_plan_scratch))
        if scratch == NULL:
            raise MemoryError("deepnet Plan: out of memory for the per-thread scratch")
        self.scratch = scratch
        self.threads = threads
        cdef int t
        for t in range(threads):
            scratch[t].product = malloc(self.product_size * self.itemsize)
            scratch[t].pooled_rows = malloc(self.pooled_size * self.itemsize)
            scratch[t].rows = malloc(self.rows_size * self.itemsize)
            scratch[t].V = malloc(self.V_size * self.itemsize)
            scratch[t].M = malloc(self.M_size * self.itemsize)
            scratch[t].row_offset = <int*>malloc(self.offsets_size * sizeof(int))
            scratch[t].step_offset = <int*>malloc(self.offsets_size * sizeof(int))
            scratch[t].bf16_rows = <uint16_t*>malloc(self.bf16_rows_size * sizeof(uint16_t))
            scratch[t].signs = <uint64_t*>malloc(self.signs_size * sizeof(uint64_t))
            if (scratch[t].bf16_rows == NULL or scratch[t].signs == NULL or scratch[t].product == NULL or scratch[t].pooled_rows == NULL or scratch[t].rows == NULL
                    or scratch[t].V == NULL or scratch[t].M == NULL or scratch[t].row_offset == NULL
                    or scratch[t].step_offset == NULL):
                self._free_scratch()
                raise MemoryError("deepnet Plan: out of memory for the per-thread scratch")
        cdef int s
        for s in range(self.count):
            if self.steps[s].kind == DN_PLAN_CONV:
                # zeroed: the borders stay zero, each call copies only the interior
                self.steps[s].padded = calloc(max(<size_t>threads * self.steps[s].padded_size, 1), self.itemsize)
                if self.steps[s].padded == NULL:
                    self._free_scratch()
                    raise MemoryError("deepnet Plan: out of memory for the padded images")

    cdef _free_scratch(self):
        cdef int t, s
        if self.scratch != NULL:
            for t in range(self.threads):
                free(self.scratch[t].product)
                free(self.scratch[t].pooled_rows)
                free(self.scratch[t].rows)
                free(self.scratch[t].V)
                free(self.scratch[t].M)
                free(self.scratch[t].row_offset)
                free(self.scratch[t].step_offset)
                free(self.scratch[t].bf16_rows)
                free(self.scratch[t].signs)
            free(self.scratch)
            self.scratch = NULL
        if self.steps != NULL:
            for s in range(self.count):
                free(self.steps[s].padded)
                self.steps[s].padded = NULL
        self.threads = 0

    def reserve(self, int batch, int threads):
        """Allocate now what a call on `batch` images with `threads` threads needs."""
        if batch < 0 or threads < 1:
            raise ValueError(f"deepnet Plan.reserve: batch >= 0 and threads >= 1, got {batch} and {threads}")
        self._ensure_threads(threads)
        if batch > self.capacity:
            self.buffers = []
            for slot in range(2, max(self.buffer_sizes) + 1):
                size = <object>batch * self.buffer_sizes.get(slot, 0)
                fits_int("Plan", "batch's activations", size)
                self.buffers.append(np.empty(max(size, 1), self.dtype))
                self.addresses[slot] = self.buffers[slot - 2].ctypes.data
            self.capacity = batch

    def run(self, const compute_t[:, ::1] x, compute_t[:, ::1] out, int threads, str winograd_mode):
        """out (N, out_size) = the plan on x (N, in_size), x and out in the plan's dtype."""
        if sizeof(compute_t) != self.itemsize:
            raise TypeError(f"deepnet Plan.run: {self.dtype} arrays expected")
        cdef int N = x.shape[0]
        check_shape("Plan.run", "x", dims(x.shape, 2), (N, self.in_size))
        check_shape("Plan.run", "out", dims(out.shape, 2), (N, self.out_size))
        mode = WINOGRAD_MODES.get(winograd_mode)
        if mode is None:
            raise ValueError(f"deepnet Plan.run: winograd_mode one of {sorted(WINOGRAD_MODES)}, got {winograd_mode!r}")
        if N == 0:
            return
        if N > self.capacity or threads > self.threads:
            self.reserve(N, threads)
        cdef compute_t* slots[64]
        cdef int slot
        slots[0] = <compute_t*>&x[0, 0]  # never written: no step writes slot 0
        slots[1] = &out[0, 0]
        for slot in range(2, 2 + len(self.buffers)):
            slots[slot] = <compute_t*>self.addresses[slot]
        cdef int winograd = mode
        with nogil:
            if compute_t is float:
                dn_plan_run_float(self.steps, self.count, slots, N, self.scratch, threads, winograd)
            else:
                dn_plan_run_double(self.steps, self.count, slots, N, self.scratch, threads, winograd)

    def __dealloc__(self):
        self._free_scratch()
        for address in self.offsets:
            free(<void*><size_t>address)
        free(self.steps)
