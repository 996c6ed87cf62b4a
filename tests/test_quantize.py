"""int8 inference: the int8 kernels (NumPy reference, and the compiled module where built) against
independent computations and hand-checked cases, and quantized models against their float models."""

import numpy as np
import pytest

import deepnet
from deepnet import datasets, models, nets
from deepnet import reference as float_reference
from deepnet.layers import Affine, BatchNormalization, Convolution, Flatten, Pooling, Relu, Sigmoid
from deepnet.quant import Int8Model, activation_range, ops, quantize, quantize_weights
from deepnet.quant.model import ConvStep, FloatStep, QuantizeStep
from support import BOOK_PARAMS, MNIST_DIR

BACKENDS = ops.available()  # "reference", and "kernel" where deepnet._kernels.int8 is built


@pytest.fixture(params=BACKENDS)
def backend(request):
    with ops.using(request.param):
        yield request.param


def conv(x, x_zero, w_q, bias_q, scale, out_zero=0, relu=False, pool=False, stride=(1, 1), pad=(0, 0), out=np.uint8):
    """ops.conv_int8 with the filters packed for the backend in use."""
    return ops.conv_int8(
        x, x_zero, ops.pack_filters(w_q), w_q.shape, stride, pad, bias_q, scale, out_zero, relu, pool, out
    )


def loop_accumulators(x, x_zero, w_q, bias_q, stride, pad):
    """acc[n, f, i, j] in int64 by the definition, window offset by window offset (no im2col, no BLAS)."""
    N, C, H, W = x.shape
    FN, _, KH, KW = w_q.shape
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2], constant_values=x_zero) - x_zero
    OH, OW = (H + 2 * pad[0] - KH) // stride[0] + 1, (W + 2 * pad[1] - KW) // stride[1] + 1
    acc = np.zeros((N, FN, OH, OW), np.int64)
    for u in range(KH):
        for v in range(KW):
            window = xp[:, :, u : u + stride[0] * OH : stride[0], v : v + stride[1] * OW : stride[1]]
            acc += np.einsum("nchw,fc->nfhw", window, w_q[:, :, u, v].astype(np.int64))
    return acc + bias_q.astype(np.int64)[None, :, None, None]


def random_case(rng, N=2, C=3, H=9, W=8, FN=5, K=3):
    x = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
    w_q = rng.integers(-127, 128, (FN, C, K, K), dtype=np.int8)
    bias_q = rng.integers(-5000, 5000, FN).astype(np.int32)
    return x, w_q, bias_q


# -- the int8 kernels ---------------------------------------------------------------------


@pytest.mark.parametrize("stride, pad", [((1, 1), (0, 0)), ((1, 1), (1, 1)), ((2, 1), (2, 0))])
def test_conv_int8_float_output_is_the_scaled_accumulators_of_the_definition(backend, stride, pad):
    rng = np.random.default_rng(1)
    x, w_q, bias_q = random_case(rng)
    scale = rng.uniform(1e-4, 1e-2, 5).astype(np.float32)
    acc = loop_accumulators(x, 37, w_q, bias_q, stride, pad)
    y = conv(x, 37, w_q, bias_q, scale, stride=stride, pad=pad, out=np.float32)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, acc.astype(np.float32) * scale[:, None, None])
    y_relu = conv(x, 37, w_q, bias_q, scale, relu=True, stride=stride, pad=pad, out=np.float32)
    np.testing.assert_array_equal(y_relu, np.maximum(acc.astype(np.float32) * scale[:, None, None], 0))


@pytest.mark.parametrize(
    "relu, pool, out_zero", [(True, False, 0), (False, False, 100), (True, True, 0), (False, True, 7)]
)
def test_conv_int8_is_a_float_convolution_within_one_quantization_step(backend, relu, pool, out_zero):
    """Dequantized inputs and weights through deepnet.reference's float64 convolution (then
    ReLU and pooling) give the dequantized uint8 output to within half a step (rounding) and
    the clamps."""
    rng = np.random.default_rng(2)
    x, w_q, bias_q = random_case(rng, H=10, W=10)
    s_x, x_zero, s_out = 0.02, 12, 0.5
    s_w = rng.uniform(0.001, 0.01, 5)
    scale = (s_x * s_w / s_out).astype(np.float32)
    q = conv(x, x_zero, w_q, bias_q, scale, out_zero, relu, pool, pad=(1, 1))
    x_real = s_x * (x.astype(np.float64) - x_zero)
    w_real = w_q.astype(np.float64) * s_w[:, None, None, None]
    b_real = bias_q * s_x * s_w
    y = float_reference.conv_forward(x_real, w_real, b_real, (1, 1), (1, 1), relu=relu)
    if pool:
        y = float_reference.max_pool_forward(y, 2, 2, (2, 2), (0, 0))[0]
    low, high = (0 if relu else -out_zero) * s_out, (255 - out_zero) * s_out
    expected = np.clip(y, low, high)
    got = s_out * (q.astype(np.float64) - out_zero)
    assert q.shape == y.shape and q.dtype == np.uint8
    assert np.abs(got - expected).max() <= 0.5 * s_out * (1 + 1e-5)
    assert (q > 0).any() and (q < 255).any()  # not all clamped


def test_requantization_rounds_half_to_even():
    """acc * 0.5 for acc = 1, 3, 5, 7, -1, -3 is 0.5, 1.5, 2.5, 3.5, -0.5, -1.5: rint gives 0, 2, 2, 4, -0, -2."""
    for name in BACKENDS:
        with ops.using(name):
            x = np.array([1, 3, 5, 7, 0, 0], np.uint8).reshape(1, 1, 1, 6)
            x_zero = 0
            w_q = np.ones((1, 1, 1, 1), np.int8)
            y = conv(x, x_zero, w_q, np.zeros(1, np.int32), np.array([0.5], np.float32), out_zero=10)
            assert y.ravel().tolist() == [10, 12, 12, 14, 10, 10]
            neg = conv(x, 4, w_q, np.zeros(1, np.int32), np.array([0.5], np.float32), out_zero=10)  # x - 4
            assert neg.ravel().tolist() == [10 - 2, 10 + 0, 10 + 0, 10 + 2, 10 - 2, 10 - 2]  # -1.5 -> -2, -0.5 -> -0


def test_requantization_clamps():
    w_q = np.ones((1, 1, 1, 1), np.int8)
    x = np.array([0, 255], np.uint8).reshape(1, 1, 1, 2)
    for name in BACKENDS:
        with ops.using(name):
            big = np.array([100.0], np.float32)  # 255 * 100 -> clipped to 512, + zero, -> 255
            assert conv(x, 0, w_q, np.zeros(1, np.int32), big, out_zero=3).ravel().tolist() == [3, 255]
            # below the zero point: 0 without ReLU, the zero point (real 0) with it
            low = np.array([1.0], np.float32)
            assert conv(x, 255, w_q, np.zeros(1, np.int32), low, out_zero=20).ravel().tolist() == [0, 20]
            assert conv(x, 255, w_q, np.zeros(1, np.int32), low, out_zero=20, relu=True).ravel().tolist() == [20, 20]
            # -512 clip before the zero point: -255 * 100 -> -512 + 255 < 0 -> 0
            assert conv(x, 255, w_q, np.zeros(1, np.int32), big, out_zero=255).ravel().tolist() == [0, 255]


def test_padding_holds_the_input_zero_point():
    """Images all equal to x_zero are real zeros, padding too: every accumulator is the bias."""
    w_q = np.full((2, 3, 3, 3), 127, np.int8)
    x = np.full((1, 3, 5, 4), 99, np.uint8)
    bias_q = np.array([5, -7], np.int32)
    for name in BACKENDS:
        with ops.using(name):
            y = conv(x, 99, w_q, bias_q, np.ones(2, np.float32), pad=(1, 2), out=np.float32)
            assert y.shape == (1, 2, 5, 6)
            np.testing.assert_array_equal(y, np.broadcast_to(np.array([5, -7], np.float32)[:, None, None], y.shape))


def test_pooling_takes_the_floor_of_odd_sizes_and_the_maximum():
    x = np.arange(35, dtype=np.uint8).reshape(1, 1, 5, 7)
    w_q = np.ones((1, 1, 1, 1), np.int8)
    for name in BACKENDS:
        with ops.using(name):
            y = conv(x, 0, w_q, np.zeros(1, np.int32), np.ones(1, np.float32), pool=True)
            assert y.shape == (1, 1, 2, 3)
            assert y.ravel().tolist() == [8, 10, 12, 22, 24, 26]


def test_quantize_and_dequantize_uint8():
    x = np.array([0.5, 1.5, 2.5, -0.5, -3.0, 1000.0, -1000.0, 0.0], np.float32)
    for name in BACKENDS:
        with ops.using(name):
            q = ops.quantize_uint8(x, 1.0, 2)
            assert q.tolist() == [2, 4, 4, 2, 0, 255, 0, 2]
            np.testing.assert_array_equal(ops.dequantize_uint8(q, 0.25, 2), (q.astype(np.float32) - 2) * 0.25)
            with pytest.raises(ValueError, match="NaN"):
                ops.quantize_uint8(np.array([np.nan], np.float32), 1.0, 0)


def test_bad_arguments_are_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="int8 filters"):
        ops.pack_filters(np.zeros((1, 1, 1, 1), np.int16))
    with pytest.raises(ValueError, match="65536"):
        ops.pack_filters(np.zeros((1, 65537, 1, 1), np.int8))
    w_q = np.ones((1, 1, 1, 1), np.int8)
    with pytest.raises(ValueError, match="uint8 images"):
        conv(np.zeros((1, 1, 2, 2), np.float32), 0, w_q, np.zeros(1, np.int32), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="zero points"):
        conv(np.zeros((1, 1, 2, 2), np.uint8), 256, w_q, np.zeros(1, np.int32), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="not pooled"):
        conv(
            np.zeros((1, 1, 2, 2), np.uint8),
            0,
            w_q,
            np.zeros(1, np.int32),
            np.ones(1, np.float32),
            pool=True,
            out=np.float32,
        )


@pytest.mark.skipif(len(BACKENDS) < 2, reason="deepnet._kernels.int8 is not built: only the reference to test")
@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_kernel_gives_the_reference_bits(seed):
    rng = np.random.default_rng(seed)
    C, K, FN = (int(n) for n in rng.integers(1, [40, 4, 20]))
    H, W = (int(n) for n in rng.integers(2 * K, 15, 2))
    x, w_q, bias_q = random_case(rng, N=int(rng.integers(1, 4)), C=C, H=H, W=W, FN=FN, K=K)
    x = x[:, :, ::-1]  # not contiguous
    scale = rng.uniform(1e-5, 1e-2, FN).astype(np.float32)
    x_zero, out_zero = (int(n) for n in rng.integers(0, 256, 2))
    cases = [(True, False, np.uint8), (False, True, np.uint8), (True, False, np.float32), (False, False, np.float32)]
    for relu, pool, out in cases:
        got = {}
        for name in BACKENDS:
            with ops.using(name):
                got[name] = conv(x, x_zero, w_q, bias_q, scale, out_zero, relu, pool, pad=(1, 1), out=out)
        np.testing.assert_array_equal(got["kernel"], got["reference"])
    values = rng.normal(0, 50, (3, 7, 11)).astype(np.float32)
    results = []
    for name in BACKENDS:
        with ops.using(name):
            results.append(ops.quantize_uint8(values, 0.37, 11))
            results.append(ops.dequantize_uint8(results[-1], 0.37, 11))
    np.testing.assert_array_equal(results[0], results[2])
    np.testing.assert_array_equal(results[1], results[3])


# -- quantizing models ----------------------------------------------------------------------


def test_weights_are_symmetric_int8_per_output_channel():
    W = np.array([[[[1.0, -2.0]]], [[[0.0, 0.0]]], [[[0.3, 0.1]]]])
    w_q, s_w = quantize_weights(W)
    assert w_q.dtype == np.int8 and w_q.min() >= -127
    np.testing.assert_allclose(s_w, [2 / 127, 1.0, 0.3 / 127])
    assert w_q[:, 0, 0].tolist() == [[64, -127], [0, 0], [127, 42]]  # 63.5 -> 64 (half to even), 42.33 -> 42


def test_activation_ranges():
    v = np.array([-1.0, 0.0, 3.0])
    assert activation_range(v, False, None) == pytest.approx((4 / 255, 64))  # 1 / (4/255) = 63.75 -> 64
    assert activation_range(v, True, None) == pytest.approx((3 / 255, 0))
    assert activation_range(np.zeros(3), True, None) == (1 / 255, 0)
    s, z = activation_range(np.r_[np.linspace(0, 1, 9999), 100.0], True, 99.9)
    assert s < 1.01 / 255 and z == 0  # the outlier is clipped


@pytest.fixture(scope="module")
def mnist():
    (x_train, t_train), (x_test, t_test) = datasets.load_mnist(
        normalize=True, flatten=False, one_hot_label=False, root=str(MNIST_DIR)
    )
    _, val = datasets.stratified_split(t_train, 5000, np.random.SeedSequence(0).spawn(3)[2])
    return x_train[val], t_train[val]


def test_the_book_network_in_int8_agrees_with_float_on_validation_images(mnist):
    x_val, t_val = mnist
    net = nets.load_model(BOOK_PARAMS)
    model = deepnet.quantize(net, x_val[:500])
    assert isinstance(model, Int8Model)
    assert [type(s) for s in model.steps] == [QuantizeStep] + [ConvStep] * 8
    assert model.steps[0].scale == 1 / 255 and model.steps[-1].out_scale is None  # float32 scores
    x = x_val[500:1500]
    same = np.mean(model.classify(x) == net.classify(x))
    assert same >= 0.99
    assert abs(model.accuracy(x, t_val[500:1500]) - net.accuracy(x, t_val[500:1500])) <= 0.01
    p = model.probabilities(x[:50])
    assert p.dtype == np.float64 and np.allclose(p.sum(axis=1), 1)
    np.testing.assert_allclose(p, net.probabilities(x[:50]), atol=0.05)


def _with_statistics(model, rng):
    for layer in model.batch_norm_layers():
        n = layer.gamma.size
        layer.gamma[...] = rng.uniform(0.5, 1.5, n)
        layer.beta[...] = rng.normal(0, 0.1, n)
        layer.running_mean[...] = rng.normal(0, 0.2, n)
        layer.running_var[...] = rng.uniform(0.5, 2, n)
    return model


def _scores_agree(model, net, x, tolerance):
    f = np.asarray(net.predict(x, train=False), np.float64)
    q = model.predict(x).astype(np.float64)
    assert q.shape == f.shape
    assert np.abs(q - f).max() <= tolerance * np.abs(f).max(), (np.abs(q - f).max(), np.abs(f).max())


def test_batch_norm_is_folded_into_convolutions_and_affine_layers(mnist):
    x_val, _ = mnist
    net = _with_statistics(nets.DeepConvNet(batch_norm=True, seed=3), np.random.default_rng(3))
    model = quantize(net, x_val[:200])
    assert not any(isinstance(s, FloatStep) for s in model.steps)  # all 8 layers int8, BN folded
    assert sum(isinstance(s, ConvStep) for s in model.steps) == 8
    _scores_agree(model, net, x_val[200:300], 0.05)


def test_a_resnet_runs_its_residual_blocks_as_float_steps(mnist):
    x_val, _ = mnist
    net = _with_statistics(models.ResNet(widths=(4, 8), blocks=(1, 1), seed=4), np.random.default_rng(4))
    model = quantize(net, x_val[:100])
    kinds = [type(s).__name__ for s in model.steps]
    assert kinds[:3] == ["QuantizeStep", "ConvStep", "FloatStep"]  # the stem: conv - BN - relu folded
    assert model.steps[1].out_scale is None  # float32 out: a float step follows
    assert kinds.count("FloatStep") == 5  # 2 residual blocks with their relus, global average pooling
    assert kinds[-2:] == ["QuantizeStep", "ConvStep"]  # the affine classifier, float32 scores
    _scores_agree(model, net, x_val[100:150], 0.05)
    assert model.describe()["float_steps"] == 5


def test_layers_without_an_int8_form_run_in_float_between_int8_steps(mnist):
    x_val, _ = mnist
    rng = np.random.default_rng(5)
    net = models.Sequential(
        Convolution(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), np.zeros(4, np.float32)),
        Sigmoid(),
        Pooling(2, 2),
        Convolution(rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32), np.full(6, -0.1, np.float32)),
        BatchNormalization(np.ones(6, np.float32), np.zeros(6, np.float32)),
        Relu(),
        Flatten(),
        Affine(rng.normal(0, 0.1, (6 * 11 * 11, 10)).astype(np.float32), np.zeros(10, np.float32)),
    )
    model = quantize(net, x_val[:100])
    assert [type(s) for s in model.steps] == [
        QuantizeStep,
        ConvStep,
        FloatStep,
        FloatStep,
        QuantizeStep,
        ConvStep,
        ConvStep,
    ]  # conv (float out) - sigmoid - pool (float) - conv+BN+relu - affine
    assert model.steps[4].zero == 0 and model.steps[5].out_zero == 0
    _scores_agree(model, net, x_val[100:200], 0.05)


def test_quantize_refuses_what_it_cannot_calibrate_on():
    net = nets.DeepConvNet(seed=0)
    x = np.zeros((2, 1, 28, 28), np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(net, np.full((2, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-empty batch"):
        quantize(net, x[:0])
    with pytest.raises(ValueError, match="percentile"):
        quantize(net, x, percentile=20)
    with pytest.raises(ValueError, match="Sequential"):
        quantize(Relu(), x)
    model = quantize(net, x)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        model.predict(np.zeros((1, 784), np.float32))


def test_a_model_runs_on_every_backend_with_the_same_bits(mnist):
    x_val, _ = mnist
    model = quantize(nets.DeepConvNet(seed=7), x_val[:50])
    scores = {}
    for name in BACKENDS:
        with ops.using(name):  # the filters are packed for each backend the first time it runs
            scores[name] = model.predict(x_val[50:70])
    for name in BACKENDS:
        np.testing.assert_array_equal(scores[name], scores["reference"])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_vgg_is_int8_from_end_to_end(mnist, batch_norm):
    x_val, _ = mnist
    net = models.VGG(config=[4, "M", 8, 8, "M"], hidden=[16], batch_norm=batch_norm, seed=8)
    _with_statistics(net, np.random.default_rng(8))
    model = quantize(net, x_val[:500])  # 100 images: an outlier among the next 50 saturates the hidden layer
    assert [type(s) for s in model.steps] == [QuantizeStep] + [ConvStep] * 5  # BN, ReLU, pools, dropout folded
    assert [s.pool for s in model.steps[1:4]] == [True, False, True]
    _scores_agree(model, net, x_val[500:600], 0.05)
