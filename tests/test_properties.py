"""Property-based tests: the compiled kernels against the NumPy reference over the whole valid
parameter space, degenerate shapes included.

Hypothesis draws the geometries: empty batches, no channels or no filters, 1x1, 1xW and empty
(all-padding) images, padding as wide as the window and wider, strides beyond the window,
non-square windows, odd batches and filter counts around the GEMM tile (16).  The examples
are derandomized, so a failure repeats; DEEPNET_FUZZ_EXAMPLES sets how many each test runs
(the AddressSanitizer job of .ci/run runs many more, as an edge-geometry fuzz).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepnet
from deepnet import functional as F
from deepnet import reference as R
from cases import RTOL, max_relative_error

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.asan,
    pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built"),
]

FUZZ = settings(
    max_examples=int(os.environ.get("DEEPNET_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
DTYPES = st.sampled_from([np.float16, np.float32, np.float64])


@st.composite
def windows(draw, pool=False):
    """(x shape, kh, kw, stride, pad) of a valid window: it fits the padded input; for pooling
    every window also holds a pixel (pad < window, images not empty).  The window is often
    about as large as the padded input, where the padding meets the edges (left padding
    wider than the whole output row, windows of padding only)."""
    N, C = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    kernel, stride, pad, size = [], [], [], []
    for _ in range(2):  # vertical, then horizontal
        n = draw(st.integers(1 if pool else 0, 9))
        p = draw(st.integers(0 if n else 1, 6))  # an empty image needs padding
        slack = draw(st.one_of(st.integers(0, 2), st.integers(0, 12)))  # room beyond the window
        k = min(max(n + 2 * p - slack, p + 1 if pool else 1), n + 2 * p)
        size.append(n)
        kernel.append(k)
        stride.append(draw(st.integers(1, 7)))
        pad.append(p)
    return (N, C, *size), kernel[0], kernel[1], tuple(stride), tuple(pad)


def random_array(seed, shape, dtype):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


SEEDS = st.integers(0, 2**32 - 1)


@FUZZ
@given(window=windows(), dtype=DTYPES, seed=SEEDS)
def test_im2col_and_col2im_equal_the_reference(window, dtype, seed):
    x_shape, kh, kw, stride, pad = window
    x = random_array(seed, x_shape, dtype)
    with deepnet.backend("cython"):
        col = F.im2col(x, kh, kw, stride, pad)
        np.testing.assert_array_equal(col, R.im2col(x, kh, kw, stride, pad))  # a copy: exact
        assert col.dtype == dtype
        dcol = random_array(seed + 1, col.shape, dtype)
        # Each pixel sums its windows in the reference's order (window offset by offset).
        np.testing.assert_array_equal(
            F.col2im(dcol, x_shape, kh, kw, stride, pad), R.col2im(dcol, x_shape, kh, kw, stride, pad)
        )


@FUZZ  # 17, 33 and 48 filters: the gather GEMM's wide AVX-512 tile and a narrow remainder
@given(
    window=windows(),
    filters=st.sampled_from([0, 1, 2, 5, 15, 16, 17, 33, 48]),
    relu=st.booleans(),
    dtype=DTYPES,
    seed=SEEDS,
)
def test_convolution_forward_and_backward_equal_the_reference(window, filters, relu, dtype, seed):
    x_shape, kh, kw, stride, pad = window
    x = random_array(seed, x_shape, dtype)
    W = (
        random_array(seed + 1, (filters, x_shape[1], kh, kw), np.float64) / np.sqrt(max(1, x_shape[1] * kh * kw))
    ).astype(dtype)
    b = random_array(seed + 2, filters, dtype)
    with deepnet.backend("cython"):
        y = F.conv2d(x, W, b, stride, pad, relu=relu)
        y_ref = R.conv_forward(x, W, b, stride, pad, relu=relu)
        assert y.shape == y_ref.shape and y.dtype == dtype
        assert max_relative_error(y, y_ref) <= RTOL[dtype]
        dout = random_array(seed + 3, y.shape, dtype)
        grads = F.conv2d_backward(dout, x, W, stride, pad, relu_out=y if relu else None)
    grads_ref = R.conv_backward(dout, x, W, stride, pad, relu_out=y if relu else None)
    for name, got, expected in zip(("dx", "dW", "db"), grads, grads_ref):
        assert got.shape == expected.shape and got.dtype == dtype, name
        assert max_relative_error(got, expected) <= RTOL[dtype], name


@FUZZ
@given(window=windows(pool=True), dtype=DTYPES, seed=SEEDS, ties=st.booleans())
def test_max_pooling_forward_and_backward_equal_the_reference(window, dtype, seed, ties):
    x_shape, kh, kw, stride, pad = window
    x = random_array(seed, x_shape, dtype)
    if ties:  # few distinct values: every window has ties (the first one wins)
        x = np.round(x).astype(dtype)
    with deepnet.backend("cython"):
        y, argmax = F.max_pool2d(x, kh, kw, stride, pad)
        y_ref, argmax_ref = R.max_pool_forward(x, kh, kw, stride, pad)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(argmax, argmax_ref)
        dout = random_array(seed + 1, y.shape, dtype)
        # The scatter sums each pixel's windows in compute precision in the reference's order.
        np.testing.assert_array_equal(
            F.max_pool2d_backward(dout, argmax, x_shape, kh, kw, stride, pad),
            R.max_pool_backward(dout, argmax, x_shape, kh, kw, stride, pad),
        )


@FUZZ
@given(window=windows(), seed=SEEDS)
def test_results_do_not_depend_on_the_thread_count(window, seed):
    x_shape, kh, kw, stride, pad = window
    x = random_array(seed, x_shape, np.float32)
    W = random_array(seed + 1, (17, x_shape[1], kh, kw), np.float32)
    b = random_array(seed + 2, 17, np.float32)
    results = []
    with deepnet.backend("cython"):
        for threads in (1, 3):
            deepnet.set_num_threads(threads)
            try:
                y = F.conv2d(x, W, b, stride, pad)
                results.append([y, *F.conv2d_backward(np.cos(y), x, W, stride, pad)])
            finally:
                deepnet.set_num_threads(None)
    for one, three in zip(*results):
        np.testing.assert_array_equal(one, three)
