"""Compiled kernels against the pure-NumPy reference, on many random geometries."""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet import reference as R
from cases import DX_PATHS, RTOL, case_id, max_relative_error, random_geometries

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.asan,
    pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built"),
]

CASES = random_geometries(40)
POOL_CASES = random_geometries(30, seed=99, pool=True)


def random_input(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def weights_for(rng, case, dtype, filters=None):
    N, C, H, W = case["x_shape"]
    filters = filters or int(rng.integers(1, 9))
    fan_in = C * case["kh"] * case["kw"]
    Wt = (rng.standard_normal((filters, C, case["kh"], case["kw"])) / np.sqrt(fan_in)).astype(dtype)
    return Wt, rng.standard_normal(filters).astype(dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_equals_reference_exactly(case, dtype, rng):
    x = random_input(rng, case["x_shape"], dtype)
    got = F.im2col(x, case["kh"], case["kw"], case["stride"], case["pad"])
    expected = R.im2col(x, case["kh"], case["kw"], case["stride"], case["pad"])
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_col2im_equals_reference(case, dtype, rng):
    x_shape, kh, kw = case["x_shape"], case["kh"], case["kw"]
    cols_shape = R.im2col(np.zeros(x_shape), kh, kw, case["stride"], case["pad"]).shape
    col = random_input(rng, cols_shape, dtype)
    got = F.col2im(col, x_shape, kh, kw, case["stride"], case["pad"])
    expected = R.col2im(col, x_shape, kh, kw, case["stride"], case["pad"])
    assert got.dtype == dtype and got.shape == x_shape
    assert max_relative_error(got, expected) <= RTOL[dtype]


@pytest.mark.parametrize("case", CASES[:20], ids=case_id)
def test_col2im_is_the_adjoint_of_im2col(case, backend, rng):
    """<im2col(x), y> == <x, col2im(y)> in float64, for both backends."""
    x = rng.standard_normal(case["x_shape"])
    args = (case["kh"], case["kw"], case["stride"], case["pad"])
    with deepnet.backend(backend):
        col = F.im2col(x, *args)
        y = rng.standard_normal(col.shape)
        lhs = float(np.sum(col * y))
        rhs = float(np.sum(x * F.col2im(y, x.shape, *args)))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def assert_conv_equals_reference(x, Wt, b, stride, pad, rng):
    """Forward and backward (dx, dW, db) of the compiled conv against the reference."""
    dtype = x.dtype.type
    y = F.conv2d(x, Wt, b, stride, pad)
    y_ref = R.conv_forward(x, Wt, b, stride, pad)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert max_relative_error(y, y_ref) <= RTOL[dtype]

    dout = random_input(rng, y.shape, dtype)
    grads = F.conv2d_backward(dout, x, Wt, stride, pad)
    grads_ref = R.conv_backward(dout, x, Wt, stride, pad)
    for name, got, expected in zip(("dx", "dW", "db"), grads, grads_ref):
        assert got.dtype == dtype and got.shape == expected.shape, name
        assert max_relative_error(got, expected) <= RTOL[dtype], name


@pytest.mark.parametrize("case", CASES[:25], ids=case_id)
def test_conv_forward_and_backward_equal_reference(case, dtype, rng):
    x = random_input(rng, case["x_shape"], dtype)
    Wt, b = weights_for(rng, case, dtype)
    assert_conv_equals_reference(x, Wt, b, case["stride"], case["pad"], rng)


# The two ways the compiled backward computes dx (cases.DX_PATHS says which case takes which).
PATH_CASES = DX_PATHS


@pytest.mark.parametrize("x_shape,filters,kernel,stride,pad", PATH_CASES)
def test_conv_backward_both_dx_paths_equal_reference(x_shape, filters, kernel, stride, pad, dtype, rng):
    x = random_input(rng, x_shape, dtype)
    Wt, b = weights_for(rng, dict(x_shape=x_shape, kh=kernel[0], kw=kernel[1]), dtype, filters=filters)
    assert_conv_equals_reference(x, Wt, b, stride, pad, rng)


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_max_pool_equals_reference(case, dtype, rng):
    x = random_input(rng, case["x_shape"], dtype)
    geometry = (case["kh"], case["kw"], case["stride"], case["pad"])
    y, argmax = F.max_pool2d(x, *geometry)
    y_ref, argmax_ref = R.max_pool_forward(x, *geometry)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert y.dtype == dtype and argmax.dtype == np.int32

    dout = random_input(rng, y.shape, dtype)
    dx = F.max_pool2d_backward(dout, argmax, x.shape, *geometry)
    dx_ref = R.max_pool_backward(dout, argmax, x.shape, *geometry)
    assert dx.dtype == dtype
    assert max_relative_error(dx, dx_ref) <= RTOL[dtype]


def test_max_pool_padding_never_wins(rng):
    x = -1.0 - rng.random((2, 3, 5, 4))  # every value below the zero padding
    y, argmax = F.max_pool2d(x, 3, 3, stride=2, pad=2)
    assert (y < 0).all()
    assert np.array_equal(np.take_along_axis(x.reshape(2, 3, -1), argmax.reshape(2, 3, -1), 2), y.reshape(2, 3, -1))


def test_max_pool_window_of_minus_infinity_points_inside_the_input():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, argmax = F.max_pool2d(x, 2, 2, stride=1, pad=1)
    assert np.isneginf(y).all()
    assert argmax.min() >= 0 and argmax.max() < 9


def test_nan_and_inf_propagate_like_the_reference(dtype, rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    x[0, 1, 2, 3] = np.nan
    x[1, 2, 4, 1] = np.inf
    Wt, b = weights_for(rng, dict(x_shape=x.shape, kh=3, kw=3), dtype, filters=4)
    # 8 x 8 pixels and 16 filters: whole blocks of the vectorised bias + ReLU epilogue.
    x8 = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    x8[0, 1, 2, 3] = np.nan
    x8[1, 2, 4, 1] = -np.inf
    W16, b16 = weights_for(rng, dict(x_shape=x8.shape, kh=3, kw=3), dtype, filters=16)
    with np.errstate(invalid="ignore"):
        outputs = {
            "conv": (F.conv2d(x, Wt, b, 1, 1), R.conv_forward(x, Wt, b, (1, 1), (1, 1))),
            "conv+relu": (
                F.conv2d(x8, W16, b16, 1, 1, relu=True),
                R.relu_forward(R.conv_forward(x8, W16, b16, (1, 1), (1, 1))),
            ),
            "pool": (F.max_pool2d(x, 2, 2)[0], R.max_pool_forward(x, 2, 2, (2, 2), (0, 0))[0]),
            "relu": (F.relu(x), R.relu_forward(x)),
        }
    for name, (got, expected) in outputs.items():
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected), err_msg=name)
        assert np.isnan(got).any(), name  # the NaN was neither dropped nor zeroed


@pytest.mark.parametrize("layout", ["fortran", "sliced", "transposed", "read-only"])
def test_awkward_memory_layouts_give_the_contiguous_result(layout, rng):
    base = rng.standard_normal((3, 4, 11, 9)).astype(np.float32)
    if layout == "fortran":
        x = np.asfortranarray(base)
    elif layout == "sliced":
        x = np.repeat(base, 2, axis=3)[..., ::2]
    elif layout == "transposed":
        x = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    else:
        x = base.copy()
        x.setflags(write=False)
    assert np.array_equal(x, base)
    Wt, b = weights_for(rng, dict(x_shape=base.shape, kh=3, kw=3), np.float32, filters=5)
    Wt.setflags(write=False)
    np.testing.assert_array_equal(F.im2col(x, 3, 3, 2, 1), F.im2col(base, 3, 3, 2, 1))
    np.testing.assert_array_equal(F.conv2d(x, Wt, b, 1, 1), F.conv2d(base, Wt, b, 1, 1))
    for got, expected in zip(F.max_pool2d(x, 3, 3, 2, 1), F.max_pool2d(base, 3, 3, 2, 1)):
        np.testing.assert_array_equal(got, expected)


def test_convolution_without_bias_is_the_one_with_a_zero_bias(backend, rng):
    x = random_input(rng, (2, 3, 6, 5), np.float32)
    Wt, b = weights_for(rng, dict(x_shape=x.shape, kh=3, kw=2), np.float32, filters=4)
    with deepnet.backend(backend):
        np.testing.assert_array_equal(F.conv2d(x, Wt, None, 1, 1), F.conv2d(x, Wt, np.zeros_like(b), 1, 1))


def test_results_identical_with_one_and_two_threads(rng):
    x = rng.standard_normal((8, 16, 14, 13)).astype(np.float32)
    Wt, b = weights_for(rng, dict(x_shape=x.shape, kh=3, kw=3), np.float32, filters=16)

    def run_all():
        y = F.conv2d(x, Wt, b, 1, 1)
        dout = np.cos(y)
        pooled, argmax = F.max_pool2d(x, 3, 3, 2, 1)
        return [
            F.im2col(x, 3, 3, 1, 1),
            y,
            *F.conv2d_backward(dout, x, Wt, 1, 1),
            pooled,
            argmax,
            F.max_pool2d_backward(np.sin(pooled), argmax, x.shape, 3, 3, 2, 1),
        ]

    previous = deepnet.get_num_threads()
    try:
        deepnet.set_num_threads(1)
        one = run_all()
        deepnet.set_num_threads(2)
        two = run_all()
    finally:
        deepnet.set_num_threads(None)
    assert deepnet.get_num_threads() == previous
    for a, b_ in zip(one, two):
        np.testing.assert_array_equal(a, b_)


def widened(a):
    """float16 values as float32 (exact)."""
    return a.astype(np.float32)


def assert_rounded_once(got16, got32):
    """A float16 result is the float32 result rounded to half (nearest even), bit for bit."""
    assert got16.dtype == np.float16
    np.testing.assert_array_equal(got16.view(np.uint16), got32.astype(np.float16).view(np.uint16))


# Where a float16 kernel promises "computed in float32, rounded once to float16", its result
# must be the float32 kernel's on the same (widened) values, rounded by numpy: a rounding
# mode other than nearest-even, or a sum kept in half precision, changes some bits.
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,filters,kernel,stride,pad", PATH_CASES)
def test_float16_convolution_is_the_float32_one_rounded_once(x_shape, filters, kernel, stride, pad, relu, rng):
    x = random_input(rng, x_shape, np.float16)
    Wt, b = weights_for(rng, dict(x_shape=x_shape, kh=kernel[0], kw=kernel[1]), np.float16, filters=filters)
    y16 = F.conv2d(x, Wt, b, stride, pad, relu=relu)
    y32 = F.conv2d(widened(x), widened(Wt), widened(b), stride, pad, relu=relu)
    assert_rounded_once(y16, y32)
    dout = random_input(rng, y16.shape, np.float16)
    grads16 = F.conv2d_backward(dout, x, Wt, stride, pad, relu_out=y16 if relu else None)
    grads32 = F.conv2d_backward(
        widened(dout), widened(x), widened(Wt), stride, pad, relu_out=widened(y16) if relu else None
    )
    for got16, got32 in zip(grads16, grads32):  # dx (either path), dW, db
        assert_rounded_once(got16, got32)


@pytest.mark.parametrize("case", CASES[:15], ids=case_id)
def test_float16_col2im_and_pooling_backward_are_the_float32_ones_rounded_once(case, rng):
    x_shape, kh, kw, stride, pad = case["x_shape"], case["kh"], case["kw"], case["stride"], case["pad"]
    col = random_input(rng, R.im2col(np.zeros(x_shape), kh, kw, stride, pad).shape, np.float16)
    assert_rounded_once(
        F.col2im(col, x_shape, kh, kw, stride, pad), F.col2im(widened(col), x_shape, kh, kw, stride, pad)
    )
    pad = (min(pad[0], kh - 1), min(pad[1], kw - 1))
    stride = (1, 1)  # overlapping windows: a pixel can win several and sum their gradients
    x = random_input(rng, x_shape, np.float16)
    y, argmax = F.max_pool2d(x, kh, kw, stride, pad)
    dout = random_input(rng, y.shape, np.float16)
    assert_rounded_once(
        F.max_pool2d_backward(dout, argmax, x_shape, kh, kw, stride, pad),
        F.max_pool2d_backward(widened(dout), argmax, x_shape, kh, kw, stride, pad),
    )


@pytest.mark.parametrize("case", CASES[:12], ids=case_id)
def test_conv_fused_with_relu_equals_conv_then_relu(case, dtype, rng):
    x = random_input(rng, case["x_shape"], dtype)
    Wt, b = weights_for(rng, case, dtype)
    stride, pad = case["stride"], case["pad"]
    y = F.conv2d(x, Wt, b, stride, pad, relu=True)
    y_ref = R.relu_forward(R.conv_forward(x, Wt, b, stride, pad))
    assert max_relative_error(y, y_ref) <= RTOL[dtype]
    assert (y >= 0).all()
    dout = random_input(rng, y.shape, dtype)
    grads = F.conv2d_backward(dout, x, Wt, stride, pad, relu_out=y)
    grads_ref = R.conv_backward(R.relu_backward(dout, y), x, Wt, stride, pad)
    for name, got, expected in zip(("dx", "dW", "db"), grads, grads_ref):
        assert max_relative_error(got, expected) <= RTOL[dtype], name


@pytest.mark.parametrize("size", [7, 100_003])  # below and above the threading threshold
def test_relu_equals_reference(dtype, size, rng):
    x = rng.standard_normal(size).astype(dtype).reshape(-1, 1)
    x[::97] = 0
    x[3] = np.nan
    y = F.relu(x)
    np.testing.assert_array_equal(y, R.relu_forward(x))
    dout = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(F.relu_backward(dout, y), R.relu_backward(dout, y))
    assert y.dtype == dtype


def test_max_pool_2x2_ties_zeros_infinities_and_nan_like_the_reference(dtype, rng):
    """DeepConvNet's 2x2/stride-2 pooling has its own vectorised kernel: same winners as the
    reference on inputs full of ties, signed zeros, infinities and NaN."""
    values = np.array([-0.0, 0.0, 1.0, -1.0, 2.0, np.inf, -np.inf, np.nan], dtype=dtype)
    x = rng.choice(values, size=(3, 4, 9, 10))
    y, argmax = F.max_pool2d(x, 2, 2)
    y_ref, argmax_ref = R.max_pool_forward(x, 2, 2, (2, 2), (0, 0))
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_max_pool_2x2_float16_keeps_every_value_and_quiets_a_signalling_nan(rng):
    """float16 2x2 pooling widens each plane to float32 and rounds the maxima back: every
    half (subnormals, the largest, both zeros' signs) comes back bit for bit; a signalling
    NaN comes back as a NaN, quiet."""
    bits = rng.integers(0, 2**16, size=(2, 3, 6, 8), dtype=np.uint16)
    bits[0, 0, 0, 0] = 0x7C01  # a signalling NaN
    x = bits.view(np.float16)
    y, argmax = F.max_pool2d(x, 2, 2)
    y_ref, argmax_ref = R.max_pool_forward(x, 2, 2, (2, 2), (0, 0))
    np.testing.assert_array_equal(argmax, argmax_ref)
    nan = np.isnan(y_ref)
    np.testing.assert_array_equal(y.view(np.uint16)[~nan], y_ref.view(np.uint16)[~nan])
    assert np.isnan(y[nan]).all() and np.isnan(y[0, 0, 0, 0])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_single_image_convolution_split_in_bands_of_rows(threads, rng):
    """With fewer images than threads the forward kernel splits each image into bands of
    output rows; every band size (odd heights included) gives the reference result."""
    x = rng.standard_normal((1, 3, 7, 5))
    Wt, b = weights_for(rng, dict(x_shape=x.shape, kh=3, kw=2), np.float64, filters=4)
    try:
        deepnet.set_num_threads(threads)
        y = F.conv2d(x, Wt, b, (2, 1), (1, 1), relu=True)
    finally:
        deepnet.set_num_threads(None)
    expected = R.relu_forward(R.conv_forward(x, Wt, b, (2, 1), (1, 1)))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_relu_special_values_like_the_reference(dtype):
    x = np.array([-np.inf, -1.0, -0.0, 0.0, 1e-7, 1.0, np.inf, np.nan], dtype=dtype)
    y = F.relu(x)
    np.testing.assert_array_equal(y, R.relu_forward(x))
    for dout_value in (-2.0, 3.0, np.inf, -np.inf, np.nan):
        dout = np.full(x.shape, dout_value, dtype=dtype)
        with np.errstate(invalid="ignore"):
            expected = R.relu_backward(dout, y)
        np.testing.assert_array_equal(F.relu_backward(dout, y), expected)


def test_im2col_padding_wider_than_the_output_row_stays_inside_the_columns():
    """x (2, 9, 1, 1), a 5x5 window, pad (4, 2): the output rows are 1 wide, the left padding
    2; its zero-fill wrote past the end of the columns (heap corruption)."""
    from deepnet._kernels import im2col as unfold

    x = np.arange(18, dtype=np.float32).reshape(2, 9, 1, 1) + 1
    expected = R.im2col(x, 5, 5, (1, 1), (4, 2))  # (2 * 5 * 1, 9 * 25)
    for layout in ("book", "per image"):
        # the columns, followed by a guard of the same size that must stay untouched
        memory = np.full(2 * expected.size, np.nan, dtype=np.float32)
        if layout == "book":
            cols = memory[: expected.size].reshape(2, 5, 225).transpose(0, 2, 1)
        else:
            cols = memory[: expected.size].reshape(2, 225, 5)
        unfold.im2col(x, cols, 5, 5, 1, 1, 4, 2, 1)
        assert np.isnan(memory[expected.size :]).all(), layout
        np.testing.assert_array_equal(cols.transpose(0, 2, 1).reshape(expected.shape), expected)
    np.testing.assert_array_equal(F.im2col(x, 5, 5, 1, (4, 2)), expected)
    col = np.random.default_rng(0).standard_normal(expected.shape)
    np.testing.assert_array_equal(F.col2im(col, x.shape, 5, 5, 1, (4, 2)), R.col2im(col, x.shape, 5, 5, (1, 1), (4, 2)))


# Empty batches, no channels and no filters: empty results of the right shape, or what the
# mathematics says (an empty sum is 0, so with no channels a convolution is its bias).
# This module's own special cases, beside the geometries from cases.py.
EMPTY_CASES = [  # (N, C, FN, H, W, pad)
    (0, 3, 4, 5, 6, 1),
    (2, 0, 4, 5, 6, 1),
    (2, 3, 0, 5, 6, 1),
    (0, 0, 0, 5, 6, 1),
    (3, 2, 17, 0, 4, 2),  # no rows: every window is padding
    (1, 0, 0, 1, 1, 0),
]


@pytest.mark.parametrize("N,C,FN,H,W,pad", EMPTY_CASES)
def test_empty_batches_channels_and_filters(N, C, FN, H, W, pad, dtype, backend, rng):
    x = random_input(rng, (N, C, H, W), dtype)
    Wt = random_input(rng, (FN, C, 3, 3), dtype) if H + 2 * pad >= 3 else random_input(rng, (FN, C, 1, 1), dtype)
    kh, kw = Wt.shape[2:]
    b = np.arange(1, FN + 1).astype(dtype)
    OH, OW = R.output_hw(x.shape, kh, kw, (1, 1), (pad, pad))
    with deepnet.backend(backend):
        col = F.im2col(x, kh, kw, 1, pad)
        assert col.shape == (N * OH * OW, C * kh * kw) and col.dtype == dtype
        back = F.col2im(col, x.shape, kh, kw, 1, pad)
        assert back.shape == x.shape and back.dtype == dtype
        for stride, relu in (((1, 1), False), ((2, 1), True)):
            y = F.conv2d(x, Wt, b, stride, pad, relu=relu)
            OH, OW = R.output_hw(x.shape, kh, kw, stride, (pad, pad))
            if C == 0 or H == 0:  # every product sums nothing: the bias
                np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None], (N, FN, OH, OW)))
            assert y.shape == (N, FN, OH, OW) and y.dtype == dtype
            dout = random_input(rng, y.shape, dtype)
            dx, dW, db = F.conv2d_backward(dout, x, Wt, stride, pad, relu_out=y if relu else None)
            assert (dx.shape, dW.shape, db.shape) == (x.shape, Wt.shape, b.shape)
            assert dx.dtype == dW.dtype == db.dtype == dtype
            if FN == 0 or H == 0:
                assert not dx.any() and not dW.any()
            if N == 0:
                assert not dW.any() and not db.any()
            mask = (y > 0) if relu else 1
            np.testing.assert_allclose(
                db.astype(np.float64),
                (dout.astype(np.float64) * mask).sum(axis=(0, 2, 3)),
                rtol=RTOL[dtype],
                atol=RTOL[dtype],
            )
        if H and W:
            pooled, argmax = F.max_pool2d(x, 2, 2, 1, 1)
            assert pooled.shape == argmax.shape == (N, C, H + 1, W + 1)
            dx = F.max_pool2d_backward(pooled, argmax, x.shape, 2, 2, 1, 1)
            assert dx.shape == x.shape and dx.dtype == dtype
        assert F.relu(x).shape == x.shape and F.relu_backward(x, x).shape == x.shape


def test_kernels_refuse_what_would_read_out_of_bounds():
    """The raw kernels, callable directly, check that the arrays passed fit together (the
    wrappers always pass them so) and that the indexes fit their ints."""
    from deepnet._kernels import conv, elementwise, im2col, pooling

    f32 = np.float32
    x = np.ones((1, 1, 4, 4), f32)
    ones = lambda *shape: np.ones(shape, f32)  # noqa: E731
    winners = lambda *shape: np.zeros(shape, np.int32)  # noqa: E731
    calls = {
        "conv_forward: filter matrices need columns padded to a multiple of 16 \\(at least 3\\), got 3": lambda: (
            conv.conv_forward(x, ones(9, 3), ones(3), ones(1, 3, 4, 4), 3, 3, 1, 1, 1, 1, False, False, 1)
        ),
        "conv_forward: y must have shape \\(1, 3, 4, 4\\), got \\(1, 3, 3, 4\\)": lambda: conv.conv_forward(
            x, ones(9, 16), ones(3), ones(1, 3, 3, 4), 3, 3, 1, 1, 1, 1, False, False, 1
        ),
        "conv_forward: y must have shape \\(1, 3, 4, 4\\), got \\(2, 3, 4, 4\\)": lambda: conv.conv_forward(
            x, ones(9, 16), ones(3), ones(2, 3, 4, 4), 3, 3, 1, 1, 1, 1, False, False, 1
        ),
        "conv_forward: weights_t must have shape \\(9,\\), got \\(8,\\)": lambda: conv.conv_forward(
            x, ones(8, 16), ones(3), ones(1, 3, 4, 4), 3, 3, 1, 1, 1, 1, False, False, 1
        ),
        "conv_forward: bias needs 3 entries, got 2": lambda: conv.conv_forward(
            x, ones(9, 16), ones(2), ones(1, 3, 4, 4), 3, 3, 1, 1, 1, 1, False, False, 1
        ),
        "transposed convolution needs stride 1 and pad < kernel": lambda: conv.conv_backward(
            x,
            ones(1, 16, 2, 2),
            ones(1, 16, 2, 2),
            ones(144, 16),
            True,
            False,
            False,
            ones(1, 1, 4, 4),
            ones(1, 9, 16),
            ones(1, 16),
            3,
            3,
            2,
            2,
            1,
            1,
            False,
            1,
        ),
        "conv_backward: dx must have shape \\(1, 1, 4, 4\\), got \\(1, 1, 4, 3\\)": lambda: conv.conv_backward(
            x,
            ones(1, 16, 4, 4),
            ones(1, 16, 4, 4),
            ones(16, 16),
            False,
            False,
            False,
            ones(1, 1, 4, 3),
            ones(1, 9, 16),
            ones(1, 16),
            3,
            3,
            1,
            1,
            1,
            1,
            False,
            1,
        ),
        "conv_backward: dout must have shape \\(1, 16, 4, 4\\), got \\(1, 16, 5, 4\\)": lambda: conv.conv_backward(
            x,
            ones(1, 16, 5, 4),
            ones(1, 16, 5, 4),
            ones(16, 16),
            False,
            False,
            False,
            ones(1, 1, 4, 4),
            ones(1, 9, 16),
            ones(1, 16),
            3,
            3,
            1,
            1,
            1,
            1,
            False,
            1,
        ),
        "conv_backward: dx_filters must have shape \\(16,\\), got \\(15,\\)": lambda: conv.conv_backward(
            x,
            ones(1, 16, 4, 4),
            ones(1, 16, 4, 4),
            ones(15, 16),
            False,
            False,
            False,
            ones(1, 1, 4, 4),
            ones(1, 9, 16),
            ones(1, 16),
            3,
            3,
            1,
            1,
            1,
            1,
            False,
            1,
        ),
        "conv_forward: Winograd needs a 3x3 kernel with stride 1": lambda: conv.conv_forward(
            x, ones(16, 16), ones(3), ones(1, 3, 2, 2), 3, 3, 2, 2, 1, 1, False, True, 1
        ),
        "conv_forward: weights_t \\(Winograd's\\) must have shape \\(16,\\), got \\(9,\\)": lambda: conv.conv_forward(
            x, ones(9, 16), ones(3), ones(1, 3, 4, 4), 3, 3, 1, 1, 1, 1, False, True, 1
        ),
        "conv_backward: dx by Winograd needs the transposed path": lambda: conv.conv_backward(
            x,
            ones(1, 16, 4, 4),
            ones(1, 16, 4, 4),
            ones(256, 16),
            False,
            True,
            False,
            ones(1, 1, 4, 4),
            ones(1, 9, 16),
            ones(1, 16),
            3,
            3,
            1,
            1,
            1,
            1,
            False,
            1,
        ),
        "conv_backward: dx_filters \\(Winograd's\\) must have shape \\(256,\\), got \\(144,\\)": lambda: (
            conv.conv_backward(
                x,
                ones(1, 16, 4, 4),
                ones(1, 16, 4, 4),
                ones(144, 16),
                True,
                True,
                False,
                ones(1, 1, 4, 4),
                ones(1, 9, 16),
                ones(1, 16),
                3,
                3,
                1,
                1,
                1,
                1,
                False,
                1,
            )
        ),
        "conv_backward: dW by Winograd needs stride 1, got \\(2, 2\\)": lambda: conv.conv_backward(
            x,
            ones(1, 16, 2, 2),
            ones(1, 16, 2, 2),
            ones(16, 16),
            False,
            False,
            True,
            ones(1, 1, 4, 4),
            ones(1, 16, 16),
            ones(1, 16),
            3,
            3,
            2,
            2,
            1,
            1,
            False,
            1,
        ),
        "conv_backward: dW_t_per_chunk \\(Winograd's\\) must have shape \\(1, 16\\), got \\(1, 9\\)": lambda: (
            conv.conv_backward(
                x,
                ones(1, 16, 4, 4),
                ones(1, 16, 4, 4),
                ones(16, 16),
                False,
                False,
                True,
                ones(1, 1, 4, 4),
                ones(1, 9, 16),
                ones(1, 16),
                3,
                3,
                1,
                1,
                1,
                1,
                False,
                1,
            )
        ),
        "conv_backward: dW by Winograd needs a 3x3 kernel, got \\(2, 2\\)": lambda: conv.conv_backward(
            x,
            ones(1, 16, 5, 5),
            ones(1, 16, 5, 5),
            ones(16, 16),
            False,
            False,
            True,
            ones(1, 1, 4, 4),
            ones(1, 16, 16),
            ones(1, 16),
            2,
            2,
            1,
            1,
            1,
            1,
            False,
            1,
        ),
        "im2col: cols must have shape \\(1, 9, 16\\), got \\(1, 9, 15\\)": lambda: im2col.im2col(
            x, ones(1, 9, 15), 3, 3, 1, 1, 1, 1, 1
        ),
        "col2im: cols must have shape \\(1, 9, 16\\), got \\(2, 9, 16\\)": lambda: im2col.col2im(
            ones(2, 9, 16), ones(1, 1, 4, 4), 3, 3, 1, 1, 1, 1, 1
        ),
        "im2col: window \\(7, 3\\) larger than the padded plane \\(6, 6\\)": lambda: im2col.im2col(
            x, ones(1, 21, 1), 7, 3, 1, 1, 1, 1, 1
        ),
        "im2col: needs window and stride >= 1": lambda: im2col.im2col(x, ones(1, 9, 16), 3, 3, 0, 1, 1, 1, 1),
        "im2col: the padded height \\+ stride \\(3221225475\\) does not fit": lambda: im2col.im2col(
            x, ones(1, 1, 1), 1, 1, 2**31 - 1, 1, 2**29, 0, 1
        ),
        "im2col: the padded height \\+ stride \\(2147483653\\) does not fit": lambda: im2col.im2col(
            x, ones(1, 1, 1), 1, 1, 1, 1, 2**30, 0, 1
        ),
        "max_pool_forward: out must have shape \\(1, 1, 2, 2\\), got \\(1, 1, 2, 3\\)": lambda: (
            pooling.max_pool_forward(x, ones(1, 1, 2, 3), winners(1, 1, 2, 3), 2, 2, 2, 2, 0, 0, 1)
        ),
        "max_pool_forward: every window needs a pixel": lambda: pooling.max_pool_forward(
            x, ones(1, 1, 4, 4), winners(1, 1, 4, 4), 2, 2, 2, 2, 2, 2, 1
        ),
        "max_pool_backward: argmax entries must lie in \\[0, 16\\)": lambda: pooling.max_pool_backward(
            ones(1, 1, 2, 2), np.array([[[[0, 16], [1, 2]]]], np.int32), ones(1, 1, 4, 4), 1
        ),
        "max_pool_backward: dout's images and channels must have shape \\(2, 1\\), got \\(1, 1\\)": lambda: (
            pooling.max_pool_backward(ones(1, 1, 2, 2), winners(1, 1, 2, 2), ones(2, 1, 4, 4), 1)
        ),
        "relu_backward: the arrays must have the same length, got 3, 3, 2": lambda: elementwise.relu_backward(
            ones(3), ones(3), ones(2), 1
        ),
        "float_to_half: the arrays must have the same length, got 3, 2": lambda: elementwise.float_to_half(
            ones(3), np.zeros(2, np.uint16), 1
        ),
    }
    for message, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()


def test_column_multiples_fit_the_tile_the_validation_assumes():
    """deepnet.functional bounds one image's buffers with counts padded to GEMM_TILE columns."""
    from deepnet._kernels import conv

    assert all(conv.column_multiple(np.dtype(d).itemsize) <= F.GEMM_TILE for d in (np.float32, np.float64))
