"""The "cython" backend: thin wrappers that allocate outputs and call the compiled kernels.

Same functions and contract as deepnet.backends.reference (the contract: deepnet.backends),
and conv_pool_forward, an optional op.  (Old import path: deepnet._cpu, which re-exports
this module.)  float16 arrays are handed to the
kernels viewed as uint16; their arithmetic runs in float32 (compute_dtype).
"""

import math
import struct
import weakref

import numpy as np

from deepnet._config import get_num_threads, get_winograd
from deepnet._kernels import conv as _conv
from deepnet._kernels import elementwise as _elementwise
from deepnet._kernels import im2col as _unfold
from deepnet._kernels import openmp_helpers as _openmp
from deepnet._kernels import pooling as _pooling
from deepnet._dtypes import compute_dtype, output_hw
from deepnet.backends import _shared


ELEMENTWISE_PARALLEL_SIZE = 1 << 15  # elements from which an element-wise pass is worth threading
DW_CHUNKS = 16  # partial sums of dW and db: enough chunks to keep the cores busy, few to add up


def _bits(a):
    """The array as the kernels see it: float16 as its raw uint16 bits."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def _geometry(stride, pad, images=None, **flags):
    """The trailing kernel arguments: strides, pads, any flags, the thread count (no more
    threads than images for the kernels that share out whole images)."""
    threads = get_num_threads() if images is None else max(1, min(get_num_threads(), images))
    return (stride[0], stride[1], pad[0], pad[1], *flags.values(), threads)


def _fold(cols, x_shape, kh, kw, stride, pad):
    """col2im of per-image columns (N, C*kh*kw, OH*OW) (any strides), in compute_dtype."""
    x = np.empty(x_shape, dtype=compute_dtype(cols.dtype))
    _unfold.col2im(_bits(cols), x, kh, kw, *_geometry(stride, pad))
    return x


def im2col(x, kh, kw, stride, pad):
    N, C = x.shape[:2]
    out_h, out_w = output_hw(x.shape, kh, kw, stride, pad)
    out_hw = out_h * out_w
    col = np.empty((N, out_hw, C * kh * kw), dtype=x.dtype)
    # The book's layout is the per-image layout with the last two axes swapped.
    _unfold.im2col(_bits(x), _bits(col).transpose(0, 2, 1), kh, kw, *_geometry(stride, pad))
    return col.reshape(N * out_hw, C * kh * kw)


def col2im(col, x_shape, kh, kw, stride, pad):
    out_h, out_w = output_hw(x_shape, kh, kw, stride, pad)
    per_image = col.reshape(x_shape[0], out_h * out_w, col.shape[1]).transpose(0, 2, 1)
    return _fold(per_image, x_shape, kh, kw, stride, pad).astype(col.dtype, copy=False)


def _padded_columns(n, dtype):
    """n rounded up to whole tiles of the convolutions' gather GEMM (for dtype)."""
    multiple = _conv.column_multiple(np.dtype(dtype).itemsize)
    return -(-n // multiple) * multiple


def _filter_columns(matrix, dtype):
    """A (rows, n) filter matrix in dtype with its columns zero-padded to whole GEMM tiles."""
    rows, n = matrix.shape
    padded = np.zeros((rows, _padded_columns(n, dtype)), dtype=dtype)
    padded[:, :n] = matrix
    return padded


# Winograd F(2x2, 3x3) (src/deepnet_winograd.h): 2.25x fewer multiplies than the direct
# convolution, but its transforms cost memory passes that only pay with enough channels,
# and how many depends on how fast the direct kernel is: on the build's vector width, and
# on a 512-bit build on whether the CPU runs its 512-bit FMAs at full rate.  Measured per
# layer with benches/analysis/winograd_layers.py (batch 100, 2 threads, float32, ms Winograd/direct),
# then in DeepConvNet's whole training step:
# - AVX-512 on Intel Xeon (two 512-bit FMA units, 2026-12-04, with the wide tile of
#   src/deepnet_gather_gemm.h; 21 rounds, twice): forward 32->32 at 14x14 pad 2 1.64/1.62,
#   32->64 at 8x8 0.75/0.94, 64->64 1.36/1.80, 16->32 at 14x14 0.84/0.70; backward with dx
#   Winograd/direct 32->32 3.70/3.53, 32->64 2.22/2.22, 64->64 3.65/4.36; dx from 32 then
#   tied in the whole training step (4,011 vs 4,019 img/s, 16 alternating processes).
#   Once the input transform's transpose was vectorised (31 rounds, twice): dx 32->32
#   3.14/3.27 and 3.16/3.30, 32->64 1.94/2.00 and 2.03/2.07, and the training step with dx
#   from 32 against from 64 was faster in 19 of 24 alternating processes (+0.7% and +1.5%,
#   medians of two runs of 12).  So the forward pass and dx from 32, dW direct.
# - AVX-512 on AMD Zen 4 (each 512-bit FMA as two 256-bit halves, so the direct kernel is
#   FMA-bound at half the Xeon's peak; 2026-12-04 evening, 21 and 2 x 31 rounds):
#   forward 16->16 at 28x28 2.37/2.50, 2.30/2.39, 2.10/2.36; 16->32 1.32/1.63, 1.55/1.64,
#   1.47/1.60; 32->32 2.20/3.04; 64->64 1.86/2.77.  Backward, dx Winograd / dx and dW
#   Winograd: 32->32 4.73/4.32, 4.95/4.53, 4.97/4.49; 64->64 5.12/5.22, 5.10/4.87,
#   5.04/4.68; 16->16 (dx direct 5.13) 5.10/5.02.  Whole training and inference steps,
#   the rules alternating step by step in one process (60-100 steps, three runs), against
#   the Xeon rule: forward and dx from 16, dW from 32 +8.5%, +3.9%, +5.1% training and
#   +4.5%, +3.5%, +3.0% inference; dW direct instead +3.7% and +3.3% training.  So the
#   forward pass and dx from 16 channels, dW from 32.
# - 256-bit build (Zen 3, AVX2): 16->16 at 28x28 forward 4.47/5.11, dx+dW 11.25/8.54;
#   16->32 at 14x14 1.96/2.10, 3.85/3.96; 32->32 3.55/5.31, 7.18/7.48; 64->64 4.90/5.83,
#   10.94/11.20.  An x86-64-v3 build on Zen 4 measured the Zen 4 rule +2.4%, +2.6% and
#   -0.2% against this one (training, 80-150 alternating steps): not enough to differ.
#   So the forward pass from 16 channels, dx from 32, dW direct: on Zen 3
#   the backward pass with dx direct vs with dW Winograd too was 16->16 at 28x28
#   11.14/12.21 in benches/analysis/winograd_layers.py (25 rounds), but in DeepConvNet's whole
#   training step that one layer made the step 2-4% slower (three runs of 30 alternating
#   steps), and bare layers of 16-64 channels at 28x28 and 56x56 ran 0.91-1.23x the direct
#   time.  The direct dW GEMM (rows C*9, steps the pixels) is an efficient shape;
#   Winograd's 16 GEMMs over the tiles of one image are small, and its transforms read
#   and write 4x the image and the output gradient.
def _measured_winograd_rule(vector_bits, splits_512bit_fmas):
    """The fewest input and output channels from which each pass runs as Winograd under
    "auto", for a build of vector_bits on a CPU that does or does not split its 512-bit
    FMAs: the measurements above; a CPU not measured gets the rule of its build's kind."""
    if vector_bits < 512:
        return {"forward": 16, "dx": 32, "dW": math.inf}
    if splits_512bit_fmas:
        return {"forward": 16, "dx": 16, "dW": 32}
    return {"forward": 32, "dx": 32, "dW": math.inf}


def _describe_winograd_rule(rule, vector_bits, splits_512bit_fmas):
    weight_gradient = "the weight gradient direct" if rule["dW"] == math.inf else f">= {rule['dW']} (weight gradient)"
    cpu = f"{vector_bits}-bit build" + (
        ", 512-bit FMAs in two halves (AMD Zen 4)" if vector_bits >= 512 and splits_512bit_fmas else ""
    )
    return (
        f"3x3 stride-1 convolutions with >= {rule['forward']} input and output channels (forward), "
        f">= {rule['dx']} (input gradient); {weight_gradient}; the rule measured for a {cpu}"
    )


_BUILD_AND_CPU = (_openmp.vector_bits(), _openmp.splits_512bit_fmas())
WINOGRAD_MIN_CHANNELS = _measured_winograd_rule(*_BUILD_AND_CPU)  # in and out
WINOGRAD_RULE = _describe_winograd_rule(WINOGRAD_MIN_CHANNELS, *_BUILD_AND_CPU)


def uses_winograd(W_shape, stride, pad, which="forward"):
    """True when the ``which`` pass ("forward", "dx" or "dW") of a convolution with filters
    of W_shape runs as Winograd (see get_winograd)."""
    return _uses_winograd(W_shape, stride, pad, which, get_winograd())


def _uses_winograd(W_shape, stride, pad, which, mode):
    """uses_winograd under the Winograd mode ``mode``."""
    if mode == "never":
        return False
    FN, C, kh, kw = W_shape
    if not ((kh, kw) == (3, 3) and stride == (1, 1) and max(pad) <= 2):
        return False
    return mode == "always" or min(C, FN) >= WINOGRAD_MIN_CHANNELS[which]


# Winograd's range.  Its transforms make values larger than the direct kernel's partial
# sums ever get, so that float32 inputs near its largest value (±1e38) overflow to
# Inf/NaN where the direct kernel's result is finite.  With X = max |input|, Wm = max |W|
# and K the channels summed (src/deepnet_winograd.h): the input transform B^T d B adds 4
# values (|V| <= 4 X), the filter transform G g G^T 3 x 3 halves (|U| <= 2.25 Wm), each
# of the 16 GEMMs sums K products (|M| <= 9 K X Wm) and the output transform A^T M A 9 of
# them, so every intermediate and the result lie within 81 K X Wm (the direct kernel's
# within 9 K X Wm).  The weight gradient's transforms: |V| <= 4 X, |Z| = |A g A^T| <= 4 G
# (G = max |dout|), dU sums 16 products over the N images' T tiles and dW = G^T dU G adds
# 2.25x: within 36 N T X G.  "auto" runs Winograd only where these bounds stay below the
# compute dtype's largest value (a NaN input counts as outside), and falls back to the
# direct kernel elsewhere; the check is one pass over the input and the filters
# (max_abs_bits, vectorised on the integers), cheap against the convolution.  "always"
# runs Winograd regardless: outside the range it can overflow where the direct kernel
# does not.
def _max_abs(a):
    """max |a| (NaN if a holds a NaN), one pass over a C-contiguous float array."""
    if a.size == 0:
        return 0.0
    scan, bits_format, float_format = _SCANS[a.dtype]
    # Small arrays on one thread: waking the OpenMP team costs more than their scan.
    threads = get_num_threads() if a.size >= SCAN_PARALLEL_SIZE else 1
    return float_format.unpack(struct.pack(bits_format, scan(a.reshape(-1).view(bits_format), threads)))[0]


# Per float dtype: max_abs_bits for the unsigned integers of its size (picked here, not
# by the fused function's dispatch on every call), their struct format, the float's, and
# the largest finite value of its compute dtype (winograd_in_range's limit).
_SCANS = {
    np.dtype(f): (_elementwise.max_abs_bits[unsigned], "=" + u, struct.Struct("=" + f))
    for f, u, unsigned in (("e", "H", "uint16_t"), ("f", "I", "uint32_t"), ("d", "Q", "uint64_t"))
}
_LARGEST = {dtype: float(np.finfo(compute_dtype(dtype)).max) for dtype in _SCANS}
SCAN_PARALLEL_SIZE = 1 << 16  # elements from which max_abs_bits is worth threading


def winograd_in_range(which, W, a, b=None, out_hw=None):
    """Whether the ``which`` pass of a Winograd convolution with filters W stays finite by
    the bounds above: "forward" (a = x), "dx" (a = dout) or "dW" (a = x, b = dout,
    out_hw the output's size)."""
    if which == "dW":
        X, G, largest = _max_abs(a), _max_abs(b), _LARGEST[W.dtype]
        tiles = -(-out_hw[0] // 2) * -(-out_hw[1] // 2)
        # X * G first: no overflow of a part.  Each comparison is False for NaN.
        return 4 * X <= largest and 4 * G <= largest and X * G * (36.0 * a.shape[0] * tiles) <= largest
    return _filters_in_range(which, W, _max_abs(W), _max_abs(a))


def _filters_in_range(which, W, W_max, X):
    """winograd_in_range of a "forward" or "dx" pass, given W_max = max |W| and X = max |a|."""
    largest = _LARGEST[W.dtype]
    channels = W.shape[1] if which == "forward" else W.shape[0]
    return 4 * X <= largest and 2.25 * W_max <= largest and X * W_max * (81.0 * channels) <= largest


def _winograd_pass(which, W, stride, pad, a, b=None, out_hw=None):
    """uses_winograd, and under "auto" within Winograd's range (winograd_in_range)."""
    mode = get_winograd()
    if not _uses_winograd(W.shape, stride, pad, which, mode):
        return False
    return mode == "always" or winograd_in_range(which, W, a, b, out_hw)


def _forward_plan(W, stride, pad, x, threads_busy=True):
    """(winograd, filter matrix) of a forward pass: _winograd_pass("forward", ...), with the
    filters' max |W| taken from their prepared matrix's entry (computed once per value of
    the weights).  threads_busy=False (fewer images than threads) runs it direct."""
    mode = get_winograd()
    if threads_busy and _uses_winograd(W.shape, stride, pad, "forward", mode):
        matrix, W_max = _prepared_entry(W, True)
        if mode == "always" or _filters_in_range("forward", W, W_max, _max_abs(x)):
            return True, matrix
    return False, _prepared_filters(W, False)


def _winograd_filters(W, acc, flipped=False):
    """The filters' Winograd transform as the kernels take it, (16*C, FN padded) in acc;
    flipped: the transposed convolution's (16*FN, C padded) for dx (conv.winograd_filters;
    NumPy operations on the 3x3 slices, with their temporaries, took 1.6 ms for 64x64
    filters, as long as the layer's batch-1 forward pass)."""
    FN, C = W.shape[:2]
    rows, columns = (16 * FN, C) if flipped else (16 * C, FN)
    out = np.zeros((rows, _padded_columns(columns, acc)), dtype=acc)
    _conv.winograd_filters(_bits(np.ascontiguousarray(W)), out, flipped)
    return out


# G of Winograd F(2x2, 3x3) (src/deepnet_winograd.h)
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def _winograd_filter_gradient(dU, C):
    """dW (FN, C, 3, 3) from the Winograd-domain gradient dU (16*C, FN), row xi*C + c with
    xi = 4 i + j: dW[f, c] = G^T dU[(i, j), c, f] G, the adjoint of the filter transform."""
    FN = dU.shape[1]
    G = WINOGRAD_G.astype(dU.dtype)
    return np.ascontiguousarray(np.einsum("ia,ijcf,jb->fcab", G, dU.reshape(4, 4, C, FN), G, optimize=True))


def conv_forward(x, W, b, stride, pad, relu=False):
    N = x.shape[0]
    FN, C, kh, kw = W.shape
    y = np.empty((N, FN) + output_hw(x.shape, kh, kw, stride, pad), dtype=x.dtype)
    # Winograd's tasks are whole images: with fewer images than threads, bands of the direct one
    winograd, matrix = _forward_plan(W, stride, pad, x, N >= get_num_threads())
    _conv.conv_forward(
        _bits(x),
        matrix,
        _bias(b, W),
        _bits(y),
        kh,
        kw,
        *_geometry(stride, pad, relu=relu, winograd=winograd),
    )
    return y


def conv_pool_forward(x, W, b, stride, pad, relu=False, argmax=False):
    """conv_forward then 2x2 stride-2 max-pooling, fused: pooled, or (pooled, argmax) with
    argmax; None (the caller makes the two calls) with fewer images than threads, where
    the direct kernel's bands of rows keep every thread busy.  float16 inference is pooled
    in float32 and then rounded: the same values as the two calls (rounding is monotonic;
    a zero's sign can differ), and the float32 pooling kernel is the fast one
    (benches/models/fusion.py: DeepConvNet inference, batch 100, 2 threads, Zen 3, fused / layer
    by layer: float32 1.10-1.15x, float64 1.07-1.08x, float16 1.21x; pooling the halves had
    made it 0.94-1.00x).  float16 training rounds the outputs before pooling them (a tie
    after rounding goes to the first, as in the separate pass), so that its winners and
    pooled bits are those of the two calls."""
    N = x.shape[0]
    if N < get_num_threads():
        return None
    FN, C, kh, kw = W.shape
    OH, OW = output_hw(x.shape, kh, kw, stride, pad)
    pooled = np.empty((N, FN, OH // 2, OW // 2), dtype=x.dtype)
    winners = np.empty(pooled.shape, dtype=np.int32) if argmax else None
    winograd, matrix = _forward_plan(W, stride, pad, x)
    _conv.conv_pool_forward(
        _bits(x),
        matrix,
        _bias(b, W),
        _bits(pooled),
        kh,
        kw,
        *_geometry(stride, pad, relu=relu, winograd=winograd),
        argmax=winners,
    )
    return (pooled, winners) if argmax else pooled


def _forward_filters(W, b, winograd):
    """The filter matrix and bias as conv_forward's kernels take them, in the compute dtype
    (the filter matrix from _prepared_filters)."""
    return _prepared_filters(W, winograd), _bias(b, W)


def _bias(b, W):
    """The bias as conv_forward's kernels take it, in the compute dtype."""
    return b.astype(compute_dtype(W.dtype), copy=False)


# Each live weight array's prepared filter matrix, reused while the array's bytes are
# unchanged: at batch 1 preparing it (a transposed, padded copy, or the Winograd transform)
# cost a fifth of DeepConvNet's inference, and a fresh matrix each call is a cold one.  A
# snapshot of the weights is compared byte for byte at every reuse, so an update in place
# is always seen.  (id(W), winograd) -> (weak reference to W, snapshot, read-only matrix,
# max |W|);
# an entry goes when its array does.
_prepared = {}


def _prepared_filters(W, winograd):
    """W's filter matrix for the direct kernel, or with winograd for Winograd's, reused
    while W's bytes are unchanged (see _prepared)."""
    return _prepared_entry(W, winograd)[0]


def _prepared_entry(W, winograd):
    """(_prepared_filters(W, winograd), max |W|): the entry's matrix and the filters'
    largest magnitude (for winograd_in_range), both computed once per value of W."""
    key = (id(W), winograd)
    entry = _prepared.get(key)
    if entry is not None:
        reference, snapshot, matrix, W_max = entry
        if (
            reference() is W
            and snapshot.shape == W.shape
            and snapshot.dtype == W.dtype
            and _elementwise.same_bytes(_bytes(snapshot), _bytes(W))
        ):
            return matrix, W_max
    matrix = _filter_matrix(W, winograd)
    matrix.flags.writeable = False
    W_max = _max_abs(W)
    _prepared[key] = (weakref.ref(W, lambda _, key=key: _prepared.pop(key, None)), W.copy(), matrix, W_max)
    return matrix, W_max


def _bytes(a):
    """A C-contiguous array's bytes, as a flat uint8 view."""
    return a.reshape(-1).view(np.uint8)


def _filter_matrix(W, winograd):
    FN, C, kh, kw = W.shape
    acc = compute_dtype(W.dtype)
    if winograd:
        return _winograd_filters(W, acc)
    return _filter_columns(cast(W, acc).reshape(FN, C * kh * kw).T, acc)


def conv_backward(dout, x, W, stride, pad, relu_out=None, input_gradient=True, pool_argmax=None):
    FN, C, kh, kw = W.shape
    acc = compute_dtype(x.dtype)
    # With stride 1, dx is a convolution of dout with the flipped filters (needs pad <=
    # kernel - 1); for few channels the padded columns would waste more than col2im costs.
    transposed = (
        input_gradient and stride == (1, 1) and pad[0] < kh and pad[1] < kw and 2 * C >= _padded_columns(1, acc)
    )
    winograd = transposed and _winograd_pass("dx", W, stride, pad, dout)
    if not input_gradient:
        dx_filters = np.zeros((0, 0), dtype=acc)  # not read; its dtype picks the kernel
    elif winograd:
        dx_filters = _winograd_filters(W, acc, flipped=True)
    elif transposed:
        dx_filters = _filter_columns(cast(W, acc)[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(FN * kh * kw, C), acc)
    else:
        dx_filters = _filter_columns(cast(W, acc).reshape(FN, C * kh * kw), acc)  # col2im
    winograd_dW = _winograd_pass("dW", W, stride, pad, x, dout, output_hw(x.shape, kh, kw, stride, pad))
    dx = np.empty_like(x) if input_gradient else None
    # dW (or Winograd's dU) is summed per chunk of images; the chunks do not depend on the
    # thread count.
    chunks = min(x.shape[0], DW_CHUNKS)
    rows = 16 * C if winograd_dW else C * kh * kw
    dW_t_per_chunk = np.zeros((chunks, rows, _padded_columns(FN, acc)), dtype=acc)
    db_per_chunk = np.zeros((chunks, FN), dtype=acc)
    # The ReLU mask is applied as dout is read: without relu_out, dout itself is passed
    # as the (unused) mask.  With pool_argmax, dout is a following 2x2 max-pooling's
    # output gradient, scattered to the winners as it is read, and relu_out the
    # convolution's output or the pooling's (the kernel tells them by their shape).
    mask = dout if relu_out is None else relu_out
    _conv.conv_backward(
        _bits(x),
        _bits(dout),
        _bits(mask),
        dx_filters,
        transposed,
        winograd,
        winograd_dW,
        None if dx is None else _bits(dx),
        dW_t_per_chunk,
        db_per_chunk,
        kh,
        kw,
        *_geometry(stride, pad, images=chunks, relu=relu_out is not None),
        pool_argmax=pool_argmax,
    )
    db = db_per_chunk.sum(axis=0)
    dW_t = dW_t_per_chunk.sum(axis=0)[:, :FN]
    dW = _winograd_filter_gradient(dW_t, C) if winograd_dW else dW_t.T.reshape(W.shape)
    return dx, cast(dW, W.dtype), cast(db, W.dtype)


def max_pool_forward(x, pool_h, pool_w, stride, pad):
    out_shape = x.shape[:2] + output_hw(x.shape, pool_h, pool_w, stride, pad)
    out = np.empty(out_shape, dtype=x.dtype)
    argmax = np.empty(out_shape, dtype=np.int32)
    _pooling.max_pool_forward(
        _bits(x), _bits(out), argmax, pool_h, pool_w, *_geometry(stride, pad)[:-1], _elementwise_threads(x.size)
    )
    return out, argmax


def max_pool_backward(dout, argmax, x_shape, pool_h, pool_w, stride, pad):
    dx = np.empty(x_shape, dtype=dout.dtype)
    _pooling.max_pool_backward(_bits(dout), argmax, _bits(dx), _elementwise_threads(dx.size))
    return dx


def _elementwise_threads(size):
    """Threads for an element-wise pass (ReLU, pooling, casts): one for small arrays, where
    starting threads costs more than it saves."""
    return get_num_threads() if size >= ELEMENTWISE_PARALLEL_SIZE else 1


def relu_forward(x):
    y = np.empty_like(x)
    _elementwise.relu_forward(_bits(x).reshape(-1), _bits(y).reshape(-1), _elementwise_threads(x.size))
    return y


def relu_backward(dout, y):
    dx = np.empty_like(dout)
    _elementwise.relu_backward(
        _bits(dout).reshape(-1), _bits(y).reshape(-1), _bits(dx).reshape(-1), _elementwise_threads(dout.size)
    )
    return dx


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """The reference's adam_update (deepnet.backends._shared) in one pass
    (src/deepnet_adam.h), the same bits.  The gradient is read through a contiguous copy
    if it is not contiguous (the convolutions' dW are transposed views); a parameter or
    state that is not contiguous and writable float32 or float64, all of one dtype, takes
    the reference's NumPy code."""
    updated = (param, m, v)
    if (
        param.dtype in (np.float32, np.float64)
        and grad.dtype == param.dtype
        and grad.shape == param.shape
        and all(a.dtype == param.dtype and a.flags.c_contiguous and a.flags.writeable for a in updated)
    ):
        _elementwise.adam_update(
            param.reshape(-1),
            np.ascontiguousarray(grad).reshape(-1),
            m.reshape(-1),
            v.reshape(-1),
            1 - beta1,
            1 - beta2,
            lr_t,
            eps,
            _elementwise_threads(param.size),
        )
    else:
        _shared.adam_update(param, grad, m, v, lr_t, beta1, beta2, eps)


def cast(a, dtype):
    """a as dtype; float16 <-> float32 convert in the kernels (numpy's half casts are
    scalar loops, and very slow for values below float16's normal range, which small
    gradients often are)."""
    if a.dtype == np.float32 and dtype == np.float16:
        out = np.empty(a.shape, dtype=np.float16)
        _elementwise.float_to_half(
            np.ascontiguousarray(a).reshape(-1), _bits(out).reshape(-1), _elementwise_threads(a.size)
        )
        return out
    if a.dtype == np.float16 and dtype == np.float32:
        out = np.empty(a.shape, dtype=np.float32)
        _elementwise.half_to_float(
            _bits(np.ascontiguousarray(a)).reshape(-1), out.reshape(-1), _elementwise_threads(a.size)
        )
        return out
    return a.astype(dtype, copy=False)


# -- batch normalisation (kernels/batchnorm.pyx) --------------------------------------------

from deepnet._kernels import batchnorm as _batchnorm  # noqa: E402


def batch_norm_sums(x, shift):
    sums = np.empty((2, x.shape[1]), dtype=np.float64)
    _batchnorm.batch_norm_sums(_bits(x), shift, sums, _elementwise_threads(x.size))
    return sums


def channel_affine(x, shift, scale, offset, relu=False):
    y = np.empty_like(x)
    _batchnorm.channel_affine(_bits(x), shift, scale, offset, _bits(y), relu, _elementwise_threads(x.size))
    return y


def batch_norm_backward_sums(dout, x, mean, inv_std, relu_out=None):
    sums = np.empty((2, x.shape[1]), dtype=np.float64)
    mask = dout if relu_out is None else relu_out
    _batchnorm.batch_norm_backward_sums(
        _bits(dout), _bits(x), _bits(mask), relu_out is not None, mean, inv_std, sums, _elementwise_threads(x.size)
    )
    return sums


def batch_norm_dx(dout, x, mean, inv_std, gamma, mean_dout, mean_dout_xhat, relu_out=None):
    dx = np.empty_like(x)
    mask = dout if relu_out is None else relu_out
    _batchnorm.batch_norm_dx(
        _bits(dout),
        _bits(x),
        _bits(mask),
        relu_out is not None,
        mean,
        inv_std,
        gamma,
        mean_dout,
        mean_dout_xhat,
        _bits(dx),
        _elementwise_threads(x.size),
    )
    return dx


# ---------------------------------------------------------------- image warps (augmentation)

from deepnet._kernels import warp as _warp  # noqa: E402  (kept with its section)


def _warp_threads(x):
    """No more threads than (n, c) planes (one plane per task)."""
    return max(1, min(get_num_threads(), x.shape[0] * x.shape[1]))


def affine_warp(x, theta, fill):
    out = np.empty_like(x)
    _warp.affine_warp(_bits(x), theta, fill, _bits(out), _warp_threads(x))
    return out


def elastic_warp(x, displacement, theta, fill):
    out = np.empty_like(x)
    _warp.elastic_warp(_bits(x), displacement, theta, fill, _bits(out), _warp_threads(x))
    return out
