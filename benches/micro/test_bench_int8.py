"""The int8 convolution (deepnet._kernels.int8.conv_int8) against the float32 one, at DeepConvNet's layers.

Every group, e.g. ``conv_int8_vs_float32[conv2]``, holds one inference layer of DeepConvNet at
batch 100 (convolution + ReLU, + 2x2 max-pool where the network pools; the affine layers as
1x1 convolutions) and its entries: ``kernel=float32`` (deepnet.functional's conv2d or
conv2d_max_pool2d on the compiled backend) and ``kernel=int8-<path>`` (conv_int8 on the
default path, and on every other path this CPU runs).  Each benchmark checks the shape and
dtype of what it computed; the values are checked in tests/test_int8_kernels.py.

    pytest benches/micro/test_bench_int8.py --benchmark-only --benchmark-group-by=group
    pytest benches/micro/test_bench_int8.py --benchmark-disable     # every benchmark once (CI)
    OMP_NUM_THREADS=1 python benches/micro/test_bench_int8.py [path ...]   # CPU time a call, one thread

A path named ``<path>-direct`` (e.g. ``avx2-direct``) runs conv_int8 with winograd=False: the
direct loop where the avx2 path would take its integer Winograd.
"""

import sys
import time

import numpy as np
import pytest

import deepnet
from deepnet import functional as F

K = pytest.importorskip("deepnet._kernels.int8", reason="deepnet's compiled kernels are not built")

BATCH = 100

# name: (input (C, H, W), filters (FN, kh, kw), pad, pooled); stride 1 everywhere.
LAYERS = {
    "conv1": ((1, 28, 28), (16, 3, 3), 1, False),
    "conv2": ((16, 28, 28), (16, 3, 3), 1, True),
    "conv3": ((16, 14, 14), (32, 3, 3), 1, False),
    "conv4": ((32, 14, 14), (32, 3, 3), 2, True),
    "conv5": ((32, 8, 8), (64, 3, 3), 1, False),
    "conv6": ((64, 8, 8), (64, 3, 3), 1, True),
    "affine1": ((1024, 1, 1), (50, 1, 1), 0, False),
    "affine2": ((50, 1, 1), (10, 1, 1), 0, False),
}
KERNELS = ["float32"] + [f"int8-{path}" for path in K.paths()]


@pytest.fixture
def rng():
    return np.random.default_rng(20261206)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv_int8_vs_float32(benchmark, rng, layer, kernel):
    if not deepnet.kernels_compiled():
        pytest.skip("deepnet's compiled kernels are not built")
    (C, H, W), (FN, kh, kw), pad, pooled = LAYERS[layer]
    OH, OW = H + 2 * pad - kh + 1, W + 2 * pad - kw + 1
    shape = (BATCH, FN, OH // 2, OW // 2) if pooled else (BATCH, FN, OH, OW)
    benchmark.group = f"conv_int8_vs_float32[{layer}]"
    benchmark.extra_info.update(kernel=kernel, layer=layer, threads=deepnet.get_num_threads())
    if kernel == "float32":
        x = rng.random((BATCH, C, H, W), dtype=np.float32)
        w = (rng.standard_normal((FN, C, kh, kw)) * np.sqrt(2.0 / (C * kh * kw))).astype(np.float32)
        b = np.zeros(FN, np.float32)
        with deepnet.backend("cython"):
            if pooled:
                y = benchmark(F.conv2d_max_pool2d, x, w, b, 1, pad, relu=True)
            else:
                y = benchmark(F.conv2d, x, w, b, 1, pad, relu=True)
        assert y.shape == shape and y.dtype == np.float32
        return
    x = rng.integers(0, 256, (BATCH, C, H, W), dtype=np.uint8)
    filters = K.pack_filters(rng.integers(-127, 128, (FN, C, kh, kw)).astype(np.int8))
    bias = rng.integers(-1000, 1000, FN).astype(np.int32)
    scale = np.full(FN, 1e-4, np.float32)
    out = np.empty(shape, np.uint8)
    path = kernel.removeprefix("int8-")
    n_threads = deepnet.get_num_threads()
    y = benchmark(
        K.conv_int8,
        x,
        3,
        filters,
        (1, 1),
        (pad, pad),
        bias,
        scale,
        0,
        True,
        pooled,
        out,
        path=path,
        n_threads=n_threads,
    )
    assert y is out and y.shape == shape and y.dtype == np.uint8


def _cpu_time(function, calls=20, repeats=5):
    """The best, over repeats, of the mean process CPU time of a call (robust on a loaded machine)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            function()
        best = min(best, (time.process_time() - start) / calls)
    return best


def main(paths):
    """Print each layer's float32 and int8 CPU time per call and their ratio, then the totals."""
    deepnet.set_num_threads(1)
    rng = np.random.default_rng(20261206)
    totals = dict.fromkeys(["float32", *paths], 0.0)
    for layer, ((C, H, W), (FN, kh, kw), pad, pooled) in LAYERS.items():
        x = rng.random((BATCH, C, H, W), dtype=np.float32)
        w = rng.standard_normal((FN, C, kh, kw)).astype(np.float32)
        b = np.zeros(FN, np.float32)
        conv = F.conv2d_max_pool2d if pooled else F.conv2d
        times = {"float32": _cpu_time(lambda: conv(x, w, b, 1, pad, relu=True))}
        xq = rng.integers(0, 256, (BATCH, C, H, W), dtype=np.uint8)
        filters = K.pack_filters(rng.integers(-127, 128, (FN, C, kh, kw)).astype(np.int8))
        bias, scale = np.zeros(FN, np.int32), np.full(FN, 1e-3, np.float32)
        OH, OW = H + 2 * pad - kh + 1, W + 2 * pad - kw + 1
        out = np.empty((BATCH, FN, OH // 2, OW // 2) if pooled else (BATCH, FN, OH, OW), np.uint8)
        for name in paths:
            path, direct = name.removesuffix("-direct"), name.endswith("-direct")
            times[name] = _cpu_time(
                lambda: K.conv_int8(
                    xq,
                    3,
                    filters,
                    (1, 1),
                    (pad, pad),
                    bias,
                    scale,
                    0,
                    True,
                    pooled,
                    out,
                    path=path,
                    winograd=False if direct else None,
                )
            )
        for name, seconds in times.items():
            totals[name] += seconds
        print(
            f"{layer:8s} " + " | ".join(f"{n} {t * 1e3:6.2f} ms x{times['float32'] / t:4.2f}" for n, t in times.items())
        )
    print("total    " + " | ".join(f"{n} {t * 1e3:6.2f} ms x{totals['float32'] / t:4.2f}" for n, t in totals.items()))


if __name__ == "__main__":
    main(sys.argv[1:] or [K.best_path()])
