"""Each kernel on the compiled backend next to the pure-NumPy reference, at DeepConvNet's shapes.

Every benchmark group holds one kernel at one layer shape and dtype, e.g.
``conv_forward[conv2 float32]``, and two entries: ``backend=cython`` (the compiled kernels)
and ``backend=numpy`` (deepnet.reference).  Shapes are the ones DeepConvNet sees at batch
100 (see CONV_LAYERS); all six convolutions run in float32, conv2 and conv6 also in
float16 and float64.  Each benchmark checks the shape and dtype of what it computed; the
kernels' values are checked in tests/, not here.

    pytest benches --benchmark-only                          # timings (a few minutes)
    pytest benches --benchmark-only --benchmark-group-by=group --benchmark-columns=min,median,rounds
    pytest benches --benchmark-disable                       # every benchmark once (CI)
"""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet.layers import Affine

BATCH = 100

# name: (input shape, weight shape (FN, C, kh, kw), pad); stride is 1 everywhere.
CONV_LAYERS = {
    "conv1": ((BATCH, 1, 28, 28), (16, 1, 3, 3), 1),
    "conv2": ((BATCH, 16, 28, 28), (16, 16, 3, 3), 1),
    "conv3": ((BATCH, 16, 14, 14), (32, 16, 3, 3), 1),
    "conv4": ((BATCH, 32, 14, 14), (32, 32, 3, 3), 2),
    "conv5": ((BATCH, 32, 8, 8), (64, 32, 3, 3), 1),
    "conv6": ((BATCH, 64, 8, 8), (64, 64, 3, 3), 1),
}
# The input of each 2x2, stride-2 max-pool (the outputs of conv2, conv4 and conv6).
POOL_INPUTS = {
    "pool1": (BATCH, 16, 28, 28),
    "pool2": (BATCH, 32, 16, 16),
    "pool3": (BATCH, 64, 8, 8),
}
# ReLU inputs: one per activation size, the outputs of the convolutions before each pool.
RELU_INPUTS = {
    "conv2": (BATCH, 16, 28, 28),
    "conv4": (BATCH, 32, 16, 16),
    "conv6": (BATCH, 64, 8, 8),
}
# name: (in_features, out_features)
AFFINE_LAYERS = {
    "affine1": (1024, 50),
    "affine2": (50, 10),
}

DTYPES = ["float16", "float32", "float64"]
CONV_CASES = [("float32", layer) for layer in CONV_LAYERS] + [
    (dtype, layer) for dtype in ("float16", "float64") for layer in ("conv2", "conv6")
]
POOL_CASES = [(dtype, layer) for dtype in DTYPES for layer in POOL_INPUTS]
RELU_CASES = [(dtype, layer) for dtype in DTYPES for layer in RELU_INPUTS]
AFFINE_CASES = [(dtype, layer) for dtype in DTYPES for layer in AFFINE_LAYERS]

# The NumPy reference convolution takes up to about half a second per call: time it over a
# fixed, small number of rounds instead of pytest-benchmark's calibrated one-second budget.
SLOW_ROUNDS = 5


def _ids(cases):
    return [f"{layer}-{dtype}" for dtype, layer in cases]


def _bench(benchmark, kernel, dtype, layer, backend, function, *args, slow=False):
    """Time function(*args) on ``backend`` in the group ``kernel[layer dtype]``; return its result."""
    benchmark.group = f"{kernel}[{layer} {dtype}]"
    benchmark.extra_info.update(backend=backend, dtype=dtype, layer=layer, threads=deepnet.get_num_threads())
    with deepnet.backend(backend):
        if slow and backend == "numpy":
            return benchmark.pedantic(function, args, rounds=SLOW_ROUNDS, warmup_rounds=1)
        return benchmark(function, *args)


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _conv_inputs(rng, dtype, layer):
    """x, He-initialised W, b and a dout of the output's shape, for one of CONV_LAYERS."""
    x_shape, w_shape, pad = CONV_LAYERS[layer]
    fan_in = int(np.prod(w_shape[1:]))
    x = _normal(rng, x_shape, dtype)
    W = _normal(rng, w_shape, dtype, scale=np.sqrt(2.0 / fan_in))
    b = _normal(rng, w_shape[0], dtype, scale=0.1)
    out_h = x_shape[2] + 2 * pad - w_shape[2] + 1
    out_w = x_shape[3] + 2 * pad - w_shape[3] + 1
    dout = _normal(rng, (x_shape[0], w_shape[0], out_h, out_w), dtype)
    return x, W, b, pad, dout


@pytest.mark.parametrize("dtype, layer", CONV_CASES, ids=_ids(CONV_CASES))
def test_im2col(benchmark, backend, rng, dtype, layer):
    x, W, _, pad, dout = _conv_inputs(rng, dtype, layer)
    kh, kw = W.shape[2:]
    col = _bench(benchmark, "im2col", dtype, layer, backend, F.im2col, x, kh, kw, 1, pad)
    N, C = x.shape[:2]
    assert col.shape == (N * dout.shape[2] * dout.shape[3], C * kh * kw)
    assert col.dtype == dtype


@pytest.mark.parametrize("dtype, layer", CONV_CASES, ids=_ids(CONV_CASES))
def test_col2im(benchmark, backend, rng, dtype, layer):
    x, W, _, pad, dout = _conv_inputs(rng, dtype, layer)
    kh, kw = W.shape[2:]
    N, C = x.shape[:2]
    col = _normal(rng, (N * dout.shape[2] * dout.shape[3], C * kh * kw), dtype)
    dx = _bench(benchmark, "col2im", dtype, layer, backend, F.col2im, col, x.shape, kh, kw, 1, pad)
    assert dx.shape == x.shape
    assert dx.dtype == dtype


@pytest.mark.parametrize("dtype, layer", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv_forward(benchmark, backend, rng, dtype, layer):
    x, W, b, pad, dout = _conv_inputs(rng, dtype, layer)
    y = _bench(benchmark, "conv_forward", dtype, layer, backend, F.conv2d, x, W, b, 1, pad, slow=True)
    assert y.shape == dout.shape
    assert y.dtype == dtype


@pytest.mark.parametrize("dtype, layer", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv_backward(benchmark, backend, rng, dtype, layer):
    x, W, _, pad, dout = _conv_inputs(rng, dtype, layer)
    dx, dW, db = _bench(
        benchmark, "conv_backward", dtype, layer, backend, F.conv2d_backward, dout, x, W, 1, pad, slow=True
    )
    assert (dx.shape, dW.shape, db.shape) == (x.shape, W.shape, (W.shape[0],))
    assert dx.dtype == dW.dtype == db.dtype == dtype


@pytest.mark.parametrize("dtype, layer", POOL_CASES, ids=_ids(POOL_CASES))
def test_max_pool_forward(benchmark, backend, rng, dtype, layer):
    x = _normal(rng, POOL_INPUTS[layer], dtype)
    y, argmax = _bench(benchmark, "max_pool_forward", dtype, layer, backend, F.max_pool2d, x, 2, 2, 2, 0)
    N, C, H, W = x.shape
    assert y.shape == argmax.shape == (N, C, H // 2, W // 2)
    assert y.dtype == dtype


@pytest.mark.parametrize("dtype, layer", POOL_CASES, ids=_ids(POOL_CASES))
def test_max_pool_backward(benchmark, backend, rng, dtype, layer):
    x = _normal(rng, POOL_INPUTS[layer], dtype)
    with deepnet.backend(backend):
        y, argmax = F.max_pool2d(x, 2, 2, 2, 0)
    dout = _normal(rng, y.shape, dtype)
    dx = _bench(
        benchmark, "max_pool_backward", dtype, layer, backend, F.max_pool2d_backward, dout, argmax, x.shape, 2, 2, 2, 0
    )
    assert dx.shape == x.shape
    assert dx.dtype == dtype


@pytest.mark.parametrize("dtype, layer", RELU_CASES, ids=_ids(RELU_CASES))
def test_relu_forward(benchmark, backend, rng, dtype, layer):
    x = _normal(rng, RELU_INPUTS[layer], dtype)
    y = _bench(benchmark, "relu_forward", dtype, layer, backend, F.relu, x)
    assert y.shape == x.shape
    assert y.dtype == dtype


def _affine_step(layer, x, dout):
    """One forward and one backward pass of an Affine layer."""
    y = layer.forward(x)
    return y, layer.backward(dout)


@pytest.mark.parametrize("dtype, layer", AFFINE_CASES, ids=_ids(AFFINE_CASES))
def test_affine_forward_backward(benchmark, backend, rng, dtype, layer):
    n_in, n_out = AFFINE_LAYERS[layer]
    affine = Affine(_normal(rng, (n_in, n_out), dtype, scale=np.sqrt(2.0 / n_in)), np.zeros(n_out, dtype))
    x = _normal(rng, (BATCH, n_in), dtype)
    dout = _normal(rng, (BATCH, n_out), dtype)
    y, dx = _bench(benchmark, "affine_forward_backward", dtype, layer, backend, _affine_step, affine, x, dout)
    assert (y.shape, dx.shape, affine.dW.shape, affine.db.shape) == ((BATCH, n_out), x.shape, (n_in, n_out), (n_out,))
    assert y.dtype == dx.dtype == affine.dW.dtype == dtype
