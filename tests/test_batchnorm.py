"""The compiled batch-normalisation passes against the NumPy reference, and their contract."""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet import reference as R

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built"),
]
SHAPES = [(4, 3, 7), (1, 5, 1), (9, 2, 13), (3, 16, 33), (6, 4, 0), (0, 3, 5), (2, 0, 4)]
TOL = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}


def data(rng, shape, dtype):
    return (rng.standard_normal(shape) * 2 + 1).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_every_pass_equals_the_reference(rng, shape, dtype, relu):
    from deepnet.backends import cpu as _cpu

    x, dout = data(rng, shape, dtype), data(rng, shape, dtype)
    acc = R.compute_dtype(dtype)
    C = shape[1]
    shift, scale, offset = (rng.standard_normal(C).astype(acc) for _ in range(3))
    inv_std = (rng.random(C) + 0.5).astype(acc)
    np.testing.assert_allclose(_cpu.batch_norm_sums(x, shift), R.batch_norm_sums(x, shift), rtol=1e-12, atol=1e-9)
    y = _cpu.channel_affine(x, shift, scale, offset, relu)
    expected = R.channel_affine(x, shift, scale, offset, relu)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.astype(float), expected.astype(float), rtol=TOL[dtype], atol=TOL[dtype])
    relu_out = expected if relu else None
    np.testing.assert_allclose(
        _cpu.batch_norm_backward_sums(dout, x, shift, inv_std, relu_out),
        R.batch_norm_backward_sums(dout, x, shift, inv_std, relu_out),
        rtol=1e-10,
        atol=1e-9,
    )
    args = (dout, x, shift, inv_std, scale, offset, inv_std)
    np.testing.assert_allclose(
        _cpu.batch_norm_dx(*args, relu_out=relu_out).astype(float),
        R.batch_norm_dx(*args, relu_out=relu_out).astype(float),
        rtol=TOL[dtype],
        atol=TOL[dtype] * 10,
    )


def test_float16_results_are_the_float32_results_rounded_once(rng):
    from deepnet.backends import cpu as _cpu

    x = data(rng, (5, 3, 17), np.float16)
    wide = x.astype(np.float32)
    scale, offset = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    shift = rng.standard_normal(3).astype(np.float32)
    np.testing.assert_array_equal(
        _cpu.channel_affine(x, shift, scale, offset, True),
        _cpu.channel_affine(wide, shift, scale, offset, True).astype(np.float16),
    )
    mean, inv_std = scale, np.abs(offset) + 0.5
    np.testing.assert_array_equal(
        _cpu.batch_norm_dx(x, x, mean, inv_std, scale, offset, mean),
        _cpu.batch_norm_dx(wide, wide, mean, inv_std, scale, offset, mean).astype(np.float16),
    )


def test_results_do_not_depend_on_the_thread_count(rng):
    x = data(rng, (64, 8, 257), np.float32)  # large enough to be threaded
    from deepnet.layers import BatchNormalization

    layer = BatchNormalization(np.ones(8, np.float32), np.zeros(8, np.float32), relu=True)
    results = []
    for threads in (1, 2, 3):
        deepnet.set_num_threads(threads)
        try:
            y = layer.forward(x.reshape(64, 8, 257, 1), train=True)
            dx = layer.backward(y * 0.5 + 1)
            results.append((y.copy(), dx.copy(), layer.dgamma.copy()))
        finally:
            deepnet.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_statistics_of_data_far_from_zero_stay_accurate(rng):
    """The shift (the running mean) keeps sum_sq/n - mean^2 from cancelling."""
    x = (1e4 + rng.standard_normal((50, 2, 40))).astype(np.float32)
    mean, var, count = F.batch_norm_statistics(x, shift=np.full(2, 1e4, np.float32))
    np.testing.assert_allclose(var, x.astype(np.float64).var(axis=(0, 2)), rtol=1e-5)
    assert count == 2000


def test_bad_arguments_name_the_function(rng):
    x = data(rng, (2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="deepnet.channel_affine: scale must have 3 entries"):
        F.channel_affine(x, np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="deepnet.batch_norm_statistics: x must be 3-D"):
        F.batch_norm_statistics(x[0])
    with pytest.raises(ValueError, match="BatchNormalization.forward: expected"):
        from deepnet.layers import BatchNormalization

        BatchNormalization(np.ones(4), np.zeros(4)).forward(np.zeros((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="deepnet batch_norm_sums"):
        from deepnet._kernels import batchnorm

        batchnorm.batch_norm_sums(x, np.zeros(2, np.float32), np.zeros((2, 3)), 1)


# -- exact cancellation (issue 32, row 10) --------------------------------------------------


def constant_channels(rng, shape, dtype, constant):
    """Random data (N, C, H, W) whose channels in `constant` hold one value over the batch
    and the pixels: a value whose product with the scale is not exact."""
    x = data(rng, shape, dtype)
    for c in constant:
        x[:, c] = dtype(rng.standard_normal() * 3 + 0.1)
    return x


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (3, 6, 1, 1), (1, 6, 3, 5), (5, 6)])
def test_a_channel_constant_over_the_batch_gives_exactly_beta(backend, dtype, relu, shape, rng):
    """x - mean cancels exactly: y = beta (max(beta, 0) with the ReLU), dgamma = 0 and
    dbeta = the sum of dout where y > 0, against these identities in float64."""
    from deepnet.layers import BatchNormalization

    C = shape[1]
    constant = [0, 2, 3, 5]
    with deepnet.backend(backend):
        for trial in range(5):
            x = constant_channels(rng, shape, dtype, constant)
            gamma = (rng.standard_normal(C) * 2).astype(dtype)
            beta = rng.standard_normal(C).astype(dtype)
            layer = BatchNormalization(gamma, beta, relu=relu)
            y = layer.forward(x, train=True)
            expected = np.maximum(beta, 0) if relu else beta
            for c in constant:
                np.testing.assert_array_equal(y[:, c], np.full(y[:, c].shape, expected[c], dtype))
            # dout in quarters: every order of summing gives the exact float64 sum
            dout = (rng.integers(-40, 40, shape) / 4).astype(dtype)
            layer.backward(dout)
            for c in constant:
                live = (beta[c] > 0) if relu else True
                assert layer.dbeta[c] == (dout[:, c].astype(np.float64).sum() if live else 0), c
                assert layer.dgamma[c] == 0, c


@pytest.mark.parametrize("shape", [(1, 5), (1, 5, 1, 1)])
def test_training_on_one_value_per_channel_is_refused(backend, shape):
    """As PyTorch: the batch statistics of one value are meaningless (y would be beta)."""
    from deepnet.layers import BatchNormalization

    layer = BatchNormalization(np.ones(5, np.float32), np.zeros(5, np.float32))
    with deepnet.backend(backend):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            layer.forward(np.ones(shape, np.float32), train=True)
        # inference uses the running statistics: one image is fine
        assert layer.forward(np.ones(shape, np.float32)).shape == shape
        # one image of several pixels has several values per channel
        assert layer.forward(np.arange(20, dtype=np.float32).reshape(1, 5, 2, 2), train=True).shape == (1, 5, 2, 2)
