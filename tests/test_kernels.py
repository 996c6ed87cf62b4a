"""Compiled kernels against the pure-NumPy reference, on many random geometries."""
import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet import reference as R
from cases import DTYPES, RTOL, case_id, max_relative_error, random_geometries

pytestmark = pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")

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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_equals_reference_exactly(case, dtype, rng):
    x = random_input(rng, case["x_shape"], dtype)
    got = F.im2col(x, case["kh"], case["kw"], case["stride"], case["pad"])
    expected = R.im2col(x, case["kh"], case["kw"], case["stride"], case["pad"])
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_col2im_equals_reference(case, dtype, rng):
    x_shape, kh, kw = case["x_shape"], case["kh"], case["kw"]
    cols_shape = R.im2col(np.zeros(x_shape), kh, kw, case["stride"], case["pad"]).shape
    col = random_input(rng, cols_shape, dtype)
    got = F.col2im(col, x_shape, kh, kw, case["stride"], case["pad"])
    expected = R.col2im(col, x_shape, kh, kw, case["stride"], case["pad"])
    assert got.dtype == dtype and got.shape == x_shape
    assert max_relative_error(got, expected) <= RTOL[dtype]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[:25], ids=case_id)
def test_conv_forward_and_backward_equal_reference(case, dtype, rng):
    x = random_input(rng, case["x_shape"], dtype)
    Wt, b = weights_for(rng, case, dtype)
    assert_conv_equals_reference(x, Wt, b, case["stride"], case["pad"], rng)


# The compiled backward computes dx in two ways: as the convolution of the padded dout
# with the flipped filters (stride 1, pad < kernel, enough channels) or by col2im.  These
# geometries take each way, with filter counts around the GEMM tile's width (16), odd
# sizes and DeepConvNet's shapes.
PATH_CASES = [
    # (x shape, filters, kernel, stride, pad)
    ((3, 16, 28, 28), 16, (3, 3), (1, 1), (1, 1)),    # DeepConvNet conv2: transposed
    ((2, 32, 14, 14), 32, (3, 3), (1, 1), (2, 2)),    # conv4, pad 2: transposed, no g padding
    ((2, 64, 8, 8), 64, (3, 3), (1, 1), (1, 1)),      # conv6
    ((2, 1, 28, 28), 16, (3, 3), (1, 1), (1, 1)),     # conv1, one channel: col2im
    ((3, 9, 7, 5), 17, (3, 2), (1, 1), (0, 1)),       # odd sizes, 17 filters: transposed
    ((2, 20, 6, 9), 33, (2, 3), (1, 1), (1, 2)),      # pad 2 = kernel - 1 in x: transposed
    ((2, 20, 6, 9), 15, (2, 3), (1, 1), (2, 0)),      # pad 2 >= kernel 2 in y: col2im
    ((2, 18, 9, 11), 24, (3, 3), (2, 1), (1, 1)),     # stride 2: col2im
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,filters,kernel,stride,pad", PATH_CASES)
def test_conv_backward_both_dx_paths_equal_reference(x_shape, filters, kernel, stride, pad, dtype, rng):
    x = random_input(rng, x_shape, dtype)
    Wt, b = weights_for(rng, dict(x_shape=x_shape, kh=kernel[0], kw=kernel[1]), dtype, filters=filters)
    assert_conv_equals_reference(x, Wt, b, stride, pad, rng)


@pytest.mark.parametrize("dtype", DTYPES)
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
    assert np.array_equal(np.take_along_axis(x.reshape(2, 3, -1), argmax.reshape(2, 3, -1), 2),
                          y.reshape(2, 3, -1))


def test_max_pool_window_of_minus_infinity_points_inside_the_input():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, argmax = F.max_pool2d(x, 2, 2, stride=1, pad=1)
    assert np.isneginf(y).all()
    assert argmax.min() >= 0 and argmax.max() < 9


@pytest.mark.parametrize("dtype", DTYPES)
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
            "conv+relu": (F.conv2d(x8, W16, b16, 1, 1, relu=True),
                          R.relu_forward(R.conv_forward(x8, W16, b16, (1, 1), (1, 1)))),
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


def test_results_identical_with_one_and_two_threads(rng):
    x = rng.standard_normal((8, 16, 14, 13)).astype(np.float32)
    Wt, b = weights_for(rng, dict(x_shape=x.shape, kh=3, kw=3), np.float32, filters=16)

    def run_all():
        y = F.conv2d(x, Wt, b, 1, 1)
        dout = np.cos(y)
        pooled, argmax = F.max_pool2d(x, 3, 3, 2, 1)
        return [F.im2col(x, 3, 3, 1, 1), y, *F.conv2d_backward(dout, x, Wt, 1, 1), pooled, argmax,
                F.max_pool2d_backward(np.sin(pooled), argmax, x.shape, 3, 3, 2, 1)]

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


def test_float16_is_stored_as_half_and_computed_in_float32(rng):
    """The float16 convolution equals the float32 one on the same (half-representable) data,
    rounded once: it does not accumulate in half precision."""
    x = rng.standard_normal((4, 16, 10, 10)).astype(np.float16)
    Wt, b = weights_for(rng, dict(x_shape=x.shape, kh=3, kw=3), np.float16, filters=8)
    y16 = F.conv2d(x, Wt, b, 1, 1)
    y32 = F.conv2d(x.astype(np.float32), Wt.astype(np.float32), b.astype(np.float32), 1, 1)
    np.testing.assert_array_equal(y16, y32.astype(np.float16))


@pytest.mark.parametrize("dtype", DTYPES)
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


@pytest.mark.parametrize("dtype", DTYPES)
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


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_ties_zeros_infinities_and_nan_like_the_reference(dtype, rng):
    """DeepConvNet's 2x2/stride-2 pooling has its own vectorised kernel: same winners as the
    reference on inputs full of ties, signed zeros, infinities and NaN."""
    values = np.array([-0.0, 0.0, 1.0, -1.0, 2.0, np.inf, -np.inf, np.nan], dtype=dtype)
    x = rng.choice(values, size=(3, 4, 9, 10))
    y, argmax = F.max_pool2d(x, 2, 2)
    y_ref, argmax_ref = R.max_pool_forward(x, 2, 2, (2, 2), (0, 0))
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref)


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values_like_the_reference(dtype):
    x = np.array([-np.inf, -1.0, -0.0, 0.0, 1e-7, 1.0, np.inf, np.nan], dtype=dtype)
    y = F.relu(x)
    np.testing.assert_array_equal(y, R.relu_forward(x))
    for dout_value in (-2.0, 3.0, np.inf, -np.inf, np.nan):
        dout = np.full(x.shape, dout_value, dtype=dtype)
        with np.errstate(invalid="ignore"):
            expected = R.relu_backward(dout, y)
        np.testing.assert_array_equal(F.relu_backward(dout, y), expected)


def test_convolution_of_zero_channels_is_the_bias(rng):
    """An empty sum: the gather GEMM must still write its result (zeros), not leave it unset."""
    x = np.ones((2, 0, 5, 5), np.float32)
    Wt = np.ones((3, 0, 3, 3), np.float32)
    b = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(F.conv2d(x, Wt, b, 1, 1), R.conv_forward(x, Wt, b, (1, 1), (1, 1)))
    dout = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    for got, expected in zip(F.conv2d_backward(dout, x, Wt, 1, 1), R.conv_backward(dout, x, Wt, (1, 1), (1, 1))):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_kernels_refuse_what_would_read_out_of_bounds():
    """The raw kernels check the layouts they rely on (the wrappers always pass them)."""
    from deepnet._kernels import conv

    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="conv_forward: filter matrices need columns padded to a multiple of 16, got 3"):
        conv.conv_forward(x, np.ones((9, 3), np.float32), np.zeros(3, np.float32),
                          np.empty((1, 3, 4, 4), np.float32), 3, 3, 1, 1, 1, 1, False, 1)
    with pytest.raises(ValueError, match="transposed convolution needs stride 1 and pad < kernel"):
        conv.conv_backward(x, np.ones((1, 16, 2, 2), np.float32), np.ones((1, 16, 2, 2), np.float32),
                           np.ones((144, 16), np.float32), True, np.empty_like(x),
                           np.zeros((1, 9, 16), np.float32), np.zeros((1, 16), np.float32),
                           3, 3, 2, 2, 1, 1, False, 1)


def test_images_too_large_for_int_offsets_are_refused():
    from deepnet import _cpu

    with pytest.raises(ValueError, match=r"deepnet.conv2d: one image is too large .* output would have 4295491600"):
        _cpu._check_image_size((1, 1, 16385, 16385), (1, 1, 1, 1), (1, 1), (0, 0), "deepnet.conv2d")
    _cpu._check_image_size((100, 64, 8, 8), (64, 64, 3, 3), (1, 1), (1, 1), "deepnet.conv2d")  # DeepConvNet: fine
