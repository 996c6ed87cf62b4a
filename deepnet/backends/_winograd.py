"""When the CPU backend runs a convolution as Winograd F(2x2, 3x3): the measured rule and the range check.

Part of deepnet.backends.cpu (which re-exports these names): the rule of channel counts
measured per build and CPU (uses_winograd), the bounds within which Winograd's transforms
stay finite (winograd_in_range), and the adjoint of its filter transform
(_winograd_filter_gradient).
"""

import math
import struct

import numpy as np

from deepnet._config import get_num_threads, get_winograd
from deepnet._dtypes import compute_dtype
from deepnet._kernels import elementwise as _elementwise
from deepnet._kernels import openmp_helpers as _openmp


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
# direct kernel elsewhere; the check is one pass over the input (max_abs_bits, vectorised
# on the integers, threaded for large inputs), cheap against the convolution, and one
# over the filters, which the forward pass keeps with their prepared matrix
# (deepnet.backends.cpu._prepared_entry) while the weights are unchanged.  "always"
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


# G of Winograd F(2x2, 3x3) (src/deepnet_winograd.h)
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def _winograd_filter_gradient(dU, C):
    """dW (FN, C, 3, 3) from the Winograd-domain gradient dU (16*C, FN), row xi*C + c with
    xi = 4 i + j: dW[f, c] = G^T dU[(i, j), c, f] G, the adjoint of the filter transform."""
    FN = dU.shape[1]
    G = WINOGRAD_G.astype(dU.dtype)
    return np.ascontiguousarray(np.einsum("ia,ijcf,jb->fcab", G, dU.reshape(4, 4, C, FN), G, optimize=True))
