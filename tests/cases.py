"""The tests' one source of backends, dtypes and kernel geometries (random and fixed).

Batch 1..8, channels 1..17, H != W, odd sizes, kernel 1..7, stride 1..3, pad 0..3: every
case is valid (the kernel fits the padded input), drawn from a fixed seed so failures repeat.
"""

from collections import namedtuple

import numpy as np

import deepnet

# The CPU backends this machine has (the compiled kernels, "cython", where built) and the
# floating dtypes: conftest's ``backend`` and ``dtype`` fixtures run a test on each.
BACKENDS = ("cython", "numpy") if deepnet.kernels_compiled() else ("numpy",)
DTYPES = (np.float16, np.float32, np.float64)


def random_geometries(count, seed=1234, pool=False):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        N, C = int(rng.integers(1, 9)), int(rng.integers(1, 18))
        H, W = (int(v) for v in rng.integers(1, 16, size=2))
        if H == W:
            continue
        kh, kw = (int(v) for v in rng.integers(1, 8, size=2))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        if pool:  # a pool window must be wider than its padding
            pad = (min(pad[0], kh - 1), min(pad[1], kw - 1))
        if kh > H + 2 * pad[0] or kw > W + 2 * pad[1]:
            continue
        cases.append(dict(x_shape=(N, C, H, W), kh=kh, kw=kw, stride=stride, pad=pad))
    return cases


def random_windows(count, seed, pool=False):
    """random_geometries as (x shape, kh, kw, stride, pad) tuples (the CUDA tests' form)."""
    return [(c["x_shape"], c["kh"], c["kw"], c["stride"], c["pad"]) for c in random_geometries(count, seed, pool)]


def case_id(case):
    return "N{}C{}H{}W{}-k{}x{}-s{}{}-p{}{}".format(
        *case["x_shape"], case["kh"], case["kw"], *case["stride"], *case["pad"]
    )


# Relative tolerances by dtype for results that involve sums (GEMM, col2im).
RTOL = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}


def max_relative_error(actual, expected):
    """max |a - e| / max(1, max |e|): relative to the result's scale, NaN-safe."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


# ============================================================ fixed geometries
#
# One form for every fixed convolution geometry: the input's shape (N, C, H, W), the filter
# count, and (kh, kw), (sh, sw), (ph, pw).  A test module takes the lists it needs (some
# reshape them into their own parameters); a test that adds special cases of its own says
# so where it defines them.

Conv = namedtuple("Conv", "x_shape filters kernel stride pad")


def conv(x_shape, filters, kernel=3, stride=1, pad=1):
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return Conv(tuple(x_shape), filters, pair(kernel), pair(stride), pair(pad))


# The compiled backward computes dx in two ways: as the convolution of the padded dout with
# the flipped filters (stride 1, pad < kernel, enough channels) or by col2im.  These take
# each way, with filter counts around the GEMM tile's width (16), odd sizes and
# DeepConvNet's shapes (tests/test_kernels.py).
DX_PATHS = [
    conv((3, 16, 28, 28), 16, 3, 1, 1),  # DeepConvNet conv2: transposed
    conv((2, 32, 14, 14), 32, 3, 1, 2),  # conv4, pad 2: transposed, no g padding
    conv((2, 64, 8, 8), 64, 3, 1, 1),  # conv6
    conv((2, 1, 28, 28), 16, 3, 1, 1),  # conv1, one channel: col2im
    conv((3, 9, 7, 5), 17, (3, 2), 1, (0, 1)),  # odd sizes, 17 filters: transposed
    conv((2, 20, 6, 9), 33, (2, 3), 1, (1, 2)),  # pad 2 = kernel - 1 in x: transposed
    conv((2, 20, 6, 9), 15, (2, 3), 1, (2, 0)),  # pad 2 >= kernel 2 in y: col2im
    conv((2, 18, 9, 11), 24, 3, (2, 1), 1),  # stride 2: col2im
]

# Vertical and horizontal padding that differ, on non-square kernels and images, on every
# dx path: the transposed convolution (stride 1, pad < kernel, enough channels), Winograd's
# (3x3) and col2im (few channels, strides) (tests/test_input_gradient.py).
NON_SQUARE_PADDING = [
    conv((2, 16, 9, 12), 16, 3, 1, (1, 2)),  # transposed / Winograd
    conv((2, 16, 12, 9), 16, 3, 1, (2, 0)),
    conv((2, 32, 7, 8), 32, 3, 1, (0, 1)),
    conv((2, 16, 8, 11), 12, (3, 5), 1, (1, 2)),  # transposed, non-square kernels
    conv((2, 16, 11, 8), 12, (5, 3), 1, (2, 0)),
    conv((2, 16, 7, 9), 8, (2, 4), 1, (1, 3)),
    conv((2, 1, 9, 12), 16, (3, 5), 1, (1, 2)),  # col2im: one channel (DeepConvNet's first)
    conv((2, 3, 12, 9), 5, (5, 3), 1, (2, 0)),
    conv((2, 4, 11, 13), 6, (3, 4), (2, 1), (2, 1)),  # col2im: strides
]

# Square inputs for the backward without the input's gradient: DeepConvNet's first layer
# (col2im path), a transposed one, a Winograd-sized one and a strided one
# (tests/test_input_gradient.py).
WEIGHT_GRADIENT = [
    conv((3, 1, 12, 12), 16, 3, 1, 1),
    conv((3, 16, 9, 9), 16, 3, 1, 1),
    conv((3, 32, 7, 7), 32, 3, 1, 2),
    conv((3, 3, 11, 11), 8, 5, 2, 2),
]

# 3x3, stride 1 (Winograd's F(2x2, 3x3)): DeepConvNet's five 3x3 layers with 16+ channels
# first (tests/test_winograd.py takes those five alone for its error bound), then odd and
# tiny sizes (a last tile half outside the image), channel counts off the vector width, pad 0.
WINOGRAD = [
    conv((3, 16, 28, 28), 16, pad=1),
    conv((2, 16, 14, 14), 32, pad=1),
    conv((2, 32, 14, 14), 32, pad=2),
    conv((2, 32, 7, 7), 64, pad=1),
    conv((2, 64, 8, 8), 64, pad=1),
    conv((3, 17, 7, 9), 19, pad=1),
    conv((2, 33, 5, 6), 16, pad=0),
    conv((2, 3, 3, 3), 5, pad=2),
    conv((2, 1, 1, 1), 2, pad=1),
    conv((2, 20, 3, 5), 24, pad=0),
]

# Convolutions followed by 2x2 max pooling (stride 1): DeepConvNet's three pooled layers;
# odd outputs (the last row and column are dropped by the pooling); channel counts off the
# vector width; a 5x5 kernel (tests/test_fusion.py).
POOLED = [
    conv((4, 16, 28, 28), 16, 3, pad=1),
    conv((3, 32, 14, 14), 32, 3, pad=2),
    conv((2, 64, 7, 7), 64, 3, pad=1),
    conv((3, 3, 9, 11), 7, 3, pad=1),
    conv((2, 5, 8, 7), 9, 5, pad=0),
]

# The pooled backward, 3x3 then 2x2 max pooling: DeepConvNet's conv2 and conv4 shapes
# (smaller), odd outputs whose last row and column no window covers, and a Winograd-sized
# layer (tests/test_pooled_backward.py).
POOLED_BACKWARD = [
    conv((3, 16, 10, 10), 16, pad=1),
    conv((3, 8, 6, 6), 32, pad=2),
    conv((3, 3, 7, 9), 5, pad=1),
    conv((3, 32, 6, 6), 32, pad=1),
]

# Windows (convolution or pooling; the test picks the filter count) beside the random ones:
# the MNIST DeepConvNet's first layer, a 2x2 pool and a window the size of the input
# (tests/test_cuda.py).
WINDOWS = [
    conv((3, 1, 28, 28), None, 3, 1, 1),
    conv((2, 16, 14, 14), None, 2, 2, 0),
    conv((1, 2, 7, 5), None, (7, 5), 1, 0),
]
