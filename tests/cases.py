"""The tests' one source of backends, dtypes and kernel geometries (random and fixed).

Batch 1..8, channels 1..17, H != W, odd sizes, kernel 1..7, stride 1..3, pad 0..3: every
case is valid (the kernel fits the padded input), drawn from a fixed seed so failures repeat.
"""
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


def case_id(case):
    return "N{}C{}H{}W{}-k{}x{}-s{}{}-p{}{}".format(*case["x_shape"], case["kh"], case["kw"],
                                                   *case["stride"], *case["pad"])


# Relative tolerances by dtype for results that involve sums (GEMM, col2im).
RTOL = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}


def max_relative_error(actual, expected):
    """max |a - e| / max(1, max |e|): relative to the result's scale, NaN-safe."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(actual - expected).max(initial=0.0)) / scale
