"""Convolution + 2x2 max-pooling fused (conv.conv_pool_forward): equal bit for bit to the two
separate kernels in float32 and float64, winners (argmax, for training) included, equal in
value in float16 inference (pooled before rounding) and bit for bit with its winners
(rounded before pooling), and to the NumPy reference's pooling of the reference
convolution; and the inference pass of Sequential that uses it."""

import numpy as np
import pytest

import deepnet
from deepnet.backends import cpu as _cpu
from deepnet import functional as F
from deepnet import reference as R
from deepnet.nets import DeepConvNet
from cases import POOLED, RTOL, max_relative_error

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.asan,
    pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built"),
]

# (x shape, filters, pad, kernel) of cases.POOLED (square kernels, stride 1).
GEOMETRIES = [(g.x_shape, g.filters, g.pad[0], g.kernel[0]) for g in POOLED]


def random_conv(rng, x_shape, filters, kernel, dtype):
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    W = (rng.standard_normal((filters, C, kernel, kernel)) / np.sqrt(C * kernel**2)).astype(dtype)
    return x, W, rng.standard_normal(filters).astype(dtype)


@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,filters,pad,kernel", GEOMETRIES)
def test_fused_equals_the_two_kernels_bit_for_bit(x_shape, filters, pad, kernel, dtype, relu, winograd, rng):
    x, W, b = random_conv(rng, x_shape, filters, kernel, dtype)
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        fused = _cpu.conv_pool_forward(x, W, b, (1, 1), (pad, pad), relu=relu)
        y = F.conv2d(x, W, b, 1, pad, relu=relu)
        separate = F.max_pool2d(y, 2, 2, 2)[0]
    assert fused is not None and fused.dtype == dtype
    assert fused.shape == separate.shape
    assert np.array_equal(fused, separate)
    reference = R.max_pool_forward(R.conv_forward(x, W, b, (1, 1), (pad, pad), relu=relu), 2, 2, (2, 2), (0, 0))[0]
    assert max_relative_error(fused, reference) <= RTOL[dtype]


@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,filters,pad,kernel", GEOMETRIES)
def test_fused_float16_pools_before_rounding_to_the_same_values(x_shape, filters, pad, kernel, relu, winograd, rng):
    """float16 is pooled in float32 and rounded after: rounding is monotonic, so the maxima
    are the values of the two kernels' round-then-pool (only a zero's sign could differ)."""
    x, W, b = random_conv(rng, x_shape, filters, kernel, np.float16)
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        fused = _cpu.conv_pool_forward(x, W, b, (1, 1), (pad, pad), relu=relu)
        separate = F.max_pool2d(F.conv2d(x, W, b, 1, pad, relu=relu), 2, 2, 2)[0]
    assert fused is not None and fused.dtype == np.float16 and fused.shape == separate.shape
    np.testing.assert_array_equal(fused, separate)
    reference = R.max_pool_forward(
        R.conv_forward(*(a.astype(np.float64) for a in (x, W, b)), (1, 1), (pad, pad), relu=relu), 2, 2, (2, 2), (0, 0)
    )[0]
    assert max_relative_error(fused, reference) <= RTOL[np.float16]


def test_fused_float16_rounds_ties_and_special_values_like_the_two_kernels(rng):
    """A 1x1 filter that adds two channels: sums that round to the same half (1 + 2**-12 and
    1), that overflow to inf (65504 + 16), infinities and NaN."""
    first = rng.choice(np.array([1.0, 65504.0, -65504.0, np.inf, np.nan, 0.0, -1.0], np.float16), size=(3, 1, 8, 10))
    second = rng.choice(np.array([0.0, 2**-12, 2**-11, 16.0, -16.0], np.float16), size=(3, 1, 8, 10))
    x = np.concatenate([first, second], axis=1)
    W = np.ones((1, 2, 1, 1), np.float16)
    b = np.zeros(1, np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        fused = _cpu.conv_pool_forward(x, W, b, (1, 1), (0, 0))
        separate = F.max_pool2d(F.conv2d(x, W, b, 1, 0), 2, 2, 2)[0]
    np.testing.assert_array_equal(fused, separate)
    assert np.isinf(separate).any() and np.isnan(separate).any()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_pools_special_values_and_infinite_biases_like_the_two_kernels(dtype, relu, rng):
    """The fused kernel adds the bias and applies the ReLU before its compares, so even where
    that order matters (inf + -inf is NaN; the first NaN and the first of a tie win; -0) it
    gives the separate passes' bits.  1x1 filters of one weight 1 put the values in the
    product unchanged."""
    values = np.array([1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 3.0], dtype)
    filters = 8
    x = rng.choice(values, size=(3, 1, 6, 10))
    W = np.ones((filters, 1, 1, 1), dtype)
    b = np.array([0.0, -0.0, np.inf, -np.inf, 1.0, -2.0, np.nan, 0.5], dtype)
    with deepnet.backend("cython"), np.errstate(invalid="ignore"):
        fused = _cpu.conv_pool_forward(x, W, b, (1, 1), (0, 0), relu=relu)
        separate = F.max_pool2d(F.conv2d(x, W, b, 1, 0, relu=relu), 2, 2, 2)[0]
    assert fused.tobytes() == separate.tobytes()
    assert np.isnan(separate).any() and np.isinf(separate).any()


@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,filters,pad,kernel", GEOMETRIES)
def test_fused_winners_are_the_pooling_kernels_argmax(x_shape, filters, pad, kernel, dtype, relu, winograd, rng):
    x, W, b = random_conv(rng, x_shape, filters, kernel, dtype)
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        pooled, argmax = F.conv2d_max_pool2d(x, W, b, 1, pad, relu=relu, argmax=True)
        separate, separate_argmax = F.max_pool2d(F.conv2d(x, W, b, 1, pad, relu=relu), 2, 2, 2)
    assert argmax.dtype == np.int32 and argmax.shape == separate_argmax.shape
    assert np.array_equal(argmax, separate_argmax)
    assert pooled.tobytes() == separate.tobytes()


def test_fused_winners_of_ties_and_special_values_are_the_pooling_kernels(rng):
    """Ties (the first in row-major order wins), NaN (the first NaN wins), -0 and 0, and
    ReLU zeros, which tie often: 1x1 filters of weight 1 put the values in the product."""
    values = np.array([1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 3.0, 3.0], np.float32)
    x = rng.choice(values, size=(4, 1, 8, 12))
    W = np.ones((20, 1, 1, 1), np.float32)
    b = np.zeros(20, np.float32)
    for relu in (False, True):
        with deepnet.backend("cython"), np.errstate(invalid="ignore"):
            pooled, argmax = F.conv2d_max_pool2d(x, W, b, 1, 0, relu=relu, argmax=True)
            separate, separate_argmax = F.max_pool2d(F.conv2d(x, W, b, 1, 0, relu=relu), 2, 2, 2)
        assert np.array_equal(argmax, separate_argmax) and pooled.tobytes() == separate.tobytes()


def test_fused_winners_do_not_depend_on_the_thread_count(rng):
    x, W, b = random_conv(rng, (5, 32, 14, 14), 32, 3, np.float32)
    results = []
    try:
        for threads in (1, 2, 3):
            deepnet.set_num_threads(threads)
            results.append(F.conv2d_max_pool2d(x, W, b, 1, 2, relu=True, argmax=True))
    finally:
        deepnet.set_num_threads(None)
    for pooled, argmax in results[1:]:
        assert np.array_equal(pooled, results[0][0]) and np.array_equal(argmax, results[0][1])


@pytest.mark.parametrize("images", [1, 4])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_winners_equal_the_two_kernels_on_every_path(backend, images, dtype, rng):
    """Fused (4 images on the compiled backend) or not (1 image, fewer than the threads;
    the NumPy backend), the winners and pooled bits are those of the separate passes."""
    x, W, b = random_conv(rng, (images, 16, 12, 12), 16, 3, dtype)
    deepnet.set_num_threads(2)
    try:
        with deepnet.backend(backend):
            pooled, argmax = F.conv2d_max_pool2d(x, W, b, 1, 1, relu=True, argmax=True)
            separate, separate_argmax = F.max_pool2d(F.conv2d(x, W, b, 1, 1, relu=True), 2, 2, 2)
        fused = _cpu.conv_pool_forward(x, W, b, (1, 1), (1, 1), relu=True, argmax=True)
    finally:
        deepnet.set_num_threads(None)
    assert np.array_equal(argmax, separate_argmax) and pooled.tobytes() == separate.tobytes()
    assert (fused is None) == (images < 2)


@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,filters,pad,kernel", GEOMETRIES)
def test_fused_float16_winners_are_the_two_kernels_bits(x_shape, filters, pad, kernel, relu, winograd, rng):
    """float16 training rounds each output before pooling, so its pooled output and winners
    are the bits of the separate passes, not only equal values."""
    x, W, b = random_conv(rng, x_shape, filters, kernel, np.float16)
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        pooled, argmax = _cpu.conv_pool_forward(x, W, b, (1, 1), (pad, pad), relu=relu, argmax=True)
        separate, separate_argmax = F.max_pool2d(F.conv2d(x, W, b, 1, pad, relu=relu), 2, 2, 2)
    assert pooled.tobytes() == separate.tobytes()
    np.testing.assert_array_equal(argmax, separate_argmax)


@pytest.mark.parametrize("relu", [False, True])
def test_fused_float16_winners_of_ties_after_rounding_and_special_values(relu, rng):
    """A 1x1 filter that adds two channels: 1 + 2**-12 is larger than 1 in float32 but both
    round to the half 1, a tie that the separate pooling gives to the first; sums that
    overflow to inf (65504 + 16), infinities, NaN, -0 and tiny negatives that the ReLU
    zeroes; biases of -0, inf and NaN.  Pooling before rounding would pick other winners."""
    first = rng.choice(
        np.array([1.0, 65504.0, -65504.0, np.inf, np.nan, 0.0, -0.0, -1.0], np.float16), size=(4, 1, 8, 10)
    )
    second = rng.choice(np.array([0.0, -0.0, 2**-12, -(2**-24), 2**-11, 16.0, -16.0], np.float16), size=(4, 1, 8, 10))
    x = np.concatenate([first, second], axis=1)
    W = np.ones((4, 2, 1, 1), np.float16)
    b = np.array([0.0, -0.0, np.inf, np.nan], np.float16)
    with deepnet.backend("cython"), np.errstate(over="ignore", invalid="ignore"):
        pooled, argmax = _cpu.conv_pool_forward(x, W, b, (1, 1), (0, 0), relu=relu, argmax=True)
        separate, separate_argmax = F.max_pool2d(F.conv2d(x, W, b, 1, 0, relu=relu), 2, 2, 2)
    assert pooled.tobytes() == separate.tobytes()
    np.testing.assert_array_equal(argmax, separate_argmax)
    with np.errstate(over="ignore", invalid="ignore"):  # the ties after rounding are there:
        sums = x.astype(np.float32).sum(axis=1, keepdims=True)
        unrounded_argmax = F.max_pool2d(sums + b[0], 2, 2, 2)[1]
        assert ((sums > 1) & (sums.astype(np.float16) == 1)).any()
    assert not np.array_equal(unrounded_argmax, separate_argmax[:, :1])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_results_do_not_depend_on_the_thread_count(threads, rng):
    x, W, b = random_conv(rng, (5, 16, 14, 14), 32, 3, np.float32)
    with deepnet.backend("cython"):
        deepnet.set_num_threads(1)
        expected = F.conv2d_max_pool2d(x, W, b, 1, 1, relu=True)
        deepnet.set_num_threads(threads)
        try:
            assert np.array_equal(F.conv2d_max_pool2d(x, W, b, 1, 1, relu=True), expected)
        finally:
            deepnet.set_num_threads(None)


def test_fused_takes_read_only_and_strided_arrays(rng):
    x, W, b = random_conv(rng, (2, 8, 10, 20), 8, 3, np.float32)
    strided = x[:, :, :, ::2]
    for a in (x, W, b):
        a.flags.writeable = False
    got = F.conv2d_max_pool2d(strided, W, b, 1, 1)
    assert np.array_equal(got, F.max_pool2d(F.conv2d(strided, W, b, 1, 1), 2, 2, 2)[0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("images", [1, 4])
def test_the_public_function_falls_back_where_fusing_does_not_pay(dtype, images, rng):
    # batches smaller than the thread count take the two kernels: same answer
    x, W, b = random_conv(rng, (images, 16, 12, 12), 16, 3, dtype)
    deepnet.set_num_threads(2)
    try:
        got = F.conv2d_max_pool2d(x, W, b, 1, 1, relu=True)
        assert np.array_equal(got, F.max_pool2d(F.conv2d(x, W, b, 1, 1, relu=True), 2, 2, 2)[0])
        assert (_cpu.conv_pool_forward(x, W, b, (1, 1), (1, 1)) is None) == (images < 2)
    finally:
        deepnet.set_num_threads(None)


def test_the_numpy_backend_gives_the_same_function(rng):
    x, W, b = random_conv(rng, (2, 4, 9, 9), 6, 3, np.float64)
    with deepnet.backend("numpy"):
        got = F.conv2d_max_pool2d(x, W, b, 1, 1, relu=True)
    reference = R.max_pool_forward(R.conv_forward(x, W, b, (1, 1), (1, 1), relu=True), 2, 2, (2, 2), (0, 0))[0]
    assert np.array_equal(got, reference)


def test_the_kernel_refuses_a_pooled_array_of_the_wrong_shape(rng):
    from deepnet._kernels import conv

    x, W, b = random_conv(rng, (2, 4, 8, 8), 16, 3, np.float32)
    weights_t, bias = _cpu._forward_filters(W, b, False)
    with pytest.raises(ValueError, match=r"conv_pool_forward: pooled must have shape \(2, 16, 4, 4\)"):
        conv.conv_pool_forward(
            x, weights_t, bias, np.empty((2, 16, 8, 8), np.float32), 3, 3, 1, 1, 1, 1, False, False, 1
        )
    with pytest.raises(ValueError, match=r"conv_pool_forward: argmax must have shape \(2, 16, 4, 4\)"):
        conv.conv_pool_forward(
            x,
            weights_t,
            bias,
            np.empty((2, 16, 4, 4), np.float32),
            3,
            3,
            1,
            1,
            1,
            1,
            False,
            False,
            1,
            argmax=np.empty((2, 16, 4, 3), np.int32),
        )
    with pytest.raises(ValueError, match="conv_pool_forward: 2x2 pooling needs a 2x2 output"):
        conv.conv_pool_forward(
            np.ascontiguousarray(x[:, :, :3, :]),
            weights_t,
            bias,
            np.empty((2, 16, 0, 4), np.float32),
            3,
            3,
            1,
            1,
            0,
            1,
            False,
            False,
            1,
        )


def test_deepconvnet_inference_fuses_and_equals_the_layer_by_layer_pass(dtype, rng):
    net = DeepConvNet(dtype=dtype, seed=0)
    x = rng.random((6, 1, 28, 28)).astype(dtype)
    h = x
    for layer in net.layers:
        h = layer.forward(h, False)
    assert np.array_equal(net.predict(x), h)
    # the fused pass keeps nothing to differentiate, and says so
    pool = net.layers[2]
    with pytest.raises(RuntimeError, match="Pooling.backward: no forward pass to differentiate"):
        pool.backward(np.ones(pool.output_shape(x.shape[:1] + (16, 28, 28)), dtype))
    with pytest.raises(RuntimeError, match="Convolution.backward: no forward pass to differentiate"):
        net.layers[1].backward(np.ones((6, 16, 28, 28), dtype))
    # a training pass still keeps everything: its gradients are the unfused ones
    grads = net.gradient(x, np.arange(6) % 10)
    assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("shape,filters", [((4, 3, 12, 12), 11), ((4, 3, 10, 14), 5), ((2, 3, 16, 16), 16)])
def test_fused_float16_training_keeps_the_sign_of_a_maximum_that_rounds_to_minus_zero(shape, filters, winograd, rng):
    """A conv output of -2^-26 (x = -2^-24, W = 0.25, no ReLU) rounds to -0 in float16: the
    separate pooling's maximum of such a window is -0, and so must the fused pass's be, bit
    for bit (compared as uint16): pooled with a bias of -0 (+0 would give +0) and stored by
    the epilogue without turning -0 into +0, in the 8 x 8 blocks and in the edge loops
    (pixel and filter counts off multiples of 8: 36 or 35 pooled pixels, 11 or 5 filters)."""
    N, C, H, Wd = shape
    x = rng.standard_normal(shape).astype(np.float16)
    x[:, :, H // 2 :] = 0  # the lower half: channel 0 alone,
    x[:, 0, H // 2 :] = -(2.0**-24)  # the smallest negative half
    x[:, 0, H // 2 :, ::3] = 2.0**-24  # and a few positive ones
    W = (rng.standard_normal((filters, C, 3, 3)) / 6).astype(np.float16)
    W[:, 0] = 0
    W[:, 0, 1, 1] = 0.25
    b = np.zeros(filters, np.float16)
    b[::4] = rng.standard_normal(len(b[::4]))  # some filters with a bias (no -0 there)
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        pooled, argmax = _cpu.conv_pool_forward(x, W, b, (1, 1), (1, 1), argmax=True)
        separate, separate_argmax = F.max_pool2d(F.conv2d(x, W, b, 1, 1), 2, 2, 2)
    minus_zero = (separate == 0) & np.signbit(separate)
    assert minus_zero.sum() >= N * (filters - len(b[::4])), "the case must have maxima of -0"
    np.testing.assert_array_equal(pooled.view(np.uint16), separate.view(np.uint16))
    np.testing.assert_array_equal(argmax, separate_argmax)
    # inference (pooled before rounding) gives the same values
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        np.testing.assert_array_equal(_cpu.conv_pool_forward(x, W, b, (1, 1), (1, 1)), separate)
