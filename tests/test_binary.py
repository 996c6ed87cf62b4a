"""The binary layers (deepnet.nn.binary) and BinaryDeepConvNet: the forward pass against a NumPy
reference of sign(W) on sign(x), the straight-through gradients against central differences of
the functions the estimator differentiates, the clipping of the latent weights, specs, model files,
the model by name, and inference through the bit kernel giving the float path's bits."""

import numpy as np
import pytest

from deepnet import _config
from deepnet import layers as L
from deepnet.models import BinaryDeepConvNet, build, describe, load_model, model_spec
from deepnet.nn import binary as binary_module
from deepnet.nn.binary import BinaryAffine, BinaryConvolution
from deepnet.recipes import make_model

from support import numerical_gradient as _central


def numerical_gradient(f, array):
    return _central(lambda: f(array), array)


def signs(a):
    return np.where(a >= 0, 1.0, -1.0)


def conv_reference(x, W, stride, pad):
    """Float64 cross-correlation, zero padded (an independent reference)."""
    sh, sw = stride
    ph, pw = pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    out = np.zeros((N, F, OH, OW))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + sh * (OH - 1) + 1 : sh, j : j + sw * (OW - 1) + 1 : sw]
            out += np.einsum("nchw,fc->nfhw", patch, W[:, :, i, j])
    return out


def away_from_the_kinks(rng, shape, scale=1.5):
    """Values at least 0.05 from 0 and from +-1, where sign and the estimator's clip bend."""
    v = rng.uniform(-scale, scale, shape)
    v[np.abs(v) < 0.05] += 0.1
    v[np.abs(np.abs(v) - 1) < 0.05] *= 1.1
    return v


def conv_layer(rng, C=3, F=4, stride=1, pad=1, dtype=np.float64):
    W = away_from_the_kinks(rng, (F, C, 3, 3), 0.9).astype(dtype)
    return BinaryConvolution(W, rng.standard_normal(F).astype(dtype), stride, pad)


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 0), (1, 2)])
def test_convolution_forward_is_the_convolution_of_signs_plus_bias(stride, pad):
    rng = np.random.default_rng(0)
    layer = conv_layer(rng, stride=stride, pad=pad)
    x = rng.standard_normal((2, 3, 6, 5))
    x[0, 0, 0, :2] = [0.0, -0.0]  # sign(0) = +1
    expected = conv_reference(signs(x), signs(layer.W), (stride, stride), (pad, pad)) + layer.b[:, None, None]
    for train in (True, False):
        np.testing.assert_array_equal(layer.forward(x, train=train), expected)


def test_affine_forward_is_the_product_of_signs_plus_bias():
    rng = np.random.default_rng(1)
    layer = BinaryAffine(rng.uniform(-1, 1, (12, 5)), rng.standard_normal(5))
    x = rng.standard_normal((3, 3, 2, 2))
    expected = signs(x.reshape(3, 12)) @ signs(layer.W) + layer.b
    for train in (True, False):
        np.testing.assert_array_equal(layer.forward(x, train=train), expected)


def test_convolution_straight_through_gradients_match_central_differences():
    """dx is the gradient of conv(clip(x, -1, 1), sign(W)), dW that of conv(sign(x), W): the
    estimator's surrogates, differentiated numerically in float64."""
    rng = np.random.default_rng(2)
    layer = conv_layer(rng, stride=1, pad=1)
    x = away_from_the_kinks(rng, (2, 3, 4, 5))
    out = layer.forward(x, train=True)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    Wb = signs(layer.W)

    def through_x(v):
        return float((conv_reference(np.clip(v, -1, 1), Wb, (1, 1), (1, 1)) * dout).sum())

    def through_w(w):
        return float((conv_reference(signs(x), w, (1, 1), (1, 1)) * dout).sum())

    def through_b(b):
        return float(((conv_reference(signs(x), Wb, (1, 1), (1, 1)) + b[:, None, None]) * dout).sum())

    np.testing.assert_allclose(dx, numerical_gradient(through_x, x.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.dW, numerical_gradient(through_w, layer.W.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.db, numerical_gradient(through_b, layer.b.copy()), rtol=1e-6, atol=1e-8)
    assert np.all(dx[np.abs(x) > 1] == 0) and np.any(dx[np.abs(x) <= 1] != 0)


def test_affine_straight_through_gradients_match_central_differences():
    rng = np.random.default_rng(3)
    layer = BinaryAffine(away_from_the_kinks(rng, (8, 3), 0.9), rng.standard_normal(3))
    x = away_from_the_kinks(rng, (4, 2, 4))
    dout = rng.standard_normal((4, 3))
    layer.forward(x, train=True)
    dx = layer.backward(dout)
    x2 = x.reshape(4, 8)

    def through_x(v):
        return float(((np.clip(v.reshape(4, 8), -1, 1) @ signs(layer.W)) * dout).sum())

    def through_w(w):
        return float(((signs(x2) @ w) * dout).sum())

    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, numerical_gradient(through_x, x.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.dW, numerical_gradient(through_w, layer.W.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.db, dout.sum(axis=0))


def test_training_clips_the_latent_weights_in_place_and_inference_does_not():
    rng = np.random.default_rng(4)
    W = rng.uniform(-3, 3, (4, 2, 3, 3))
    layer = BinaryConvolution(W.copy(), np.zeros(4), 1, 1)
    weights = layer.W
    x = rng.standard_normal((1, 2, 5, 5))
    layer.forward(x, train=False)
    np.testing.assert_array_equal(layer.W, W)
    before = layer.forward(x, train=True)
    assert layer.W is weights  # in place: the optimizer keeps updating the same array
    np.testing.assert_array_equal(layer.W, np.clip(W, -1, 1))
    np.testing.assert_array_equal(before, layer.forward(x, train=False))  # signs unchanged


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_rules_keep_the_parameters_dtype(dtype):
    rng = np.random.default_rng(5)
    conv = conv_layer(rng, dtype=dtype)
    affine = BinaryAffine(rng.uniform(-1, 1, (4 * 5 * 5, 6)).astype(dtype), np.zeros(6, dtype))
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = conv.forward(x, train=True)
    z = affine.forward(y, train=True)
    assert y.dtype == z.dtype == dtype
    dz = affine.backward(np.ones_like(z))
    dx = conv.backward(dz)
    assert dx.dtype == dz.dtype == conv.dW.dtype == affine.dW.dtype == dtype


needs_bits = pytest.mark.skipif(binary_module._bits is None, reason="the kernels are not built")


@needs_bits
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_inference_through_the_bit_kernel_gives_the_float_paths_bits(dtype, monkeypatch):
    rng = np.random.default_rng(6)
    net = BinaryDeepConvNet(channels=(8, 16, 40, 70, 64, 33), hidden_size=40, dtype=dtype, seed=1)
    x = rng.standard_normal((5, 1, 28, 28)).astype(dtype)
    calls = []
    for layer in net.binary_layers():
        layer.b[...] = rng.standard_normal(layer.b.shape)
    original = binary_module._bits

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(original, name)

    monkeypatch.setattr(binary_module, "_bits", Counting())
    bits = net.predict(x, train=False)
    assert calls.count("conv_forward") == 5 and calls.count("affine_forward") == 1
    before = len(calls)
    with binary_module.bit_inference(False):
        floats = net.predict(x, train=False)
    assert len(calls) == before  # the float path called no kernel
    assert bits.dtype == floats.dtype == dtype
    np.testing.assert_array_equal(bits, floats)


def test_the_model_by_name_and_its_layout():
    net = make_model("deepconvnet-binary", np.float32, 0)
    assert isinstance(net, BinaryDeepConvNet)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds[0] == "Convolution" and kinds[-1] == "Affine"
    assert kinds.count("BinaryConvolution") == 5 and kinds.count("BinaryAffine") == 1
    for index, kind in enumerate(kinds):
        if kind.startswith("Binary"):
            assert kinds[index + 1] in ("BatchNormalization", "Pooling")
    assert net.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_spec_build_save_load_and_describe(tmp_path):
    net = BinaryDeepConvNet(seed=3)
    spec = model_spec(net)
    assert spec == {"type": "BinaryDeepConvNet", "config": net.config()}
    rebuilt = build(spec, rng=3)
    assert all(np.array_equal(rebuilt.params[k], v) for k, v in net.params.items())
    layers = {"type": "Sequential", "layers": [model_spec(layer) for layer in net.layers]}
    assert [type(layer) for layer in build(layers).layers] == [type(layer) for layer in net.layers]
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    net.predict(x[:2], train=True)  # moves the running statistics
    path = tmp_path / "bnn.npz"
    net.save(str(path))
    np.testing.assert_array_equal(load_model(str(path)).predict(x), net.predict(x))
    assert describe(net)["parameters"] == sum(v.size for v in net.params.values())
    assert L.BinaryConvolution is BinaryConvolution and L.BinaryAffine is BinaryAffine


def test_bad_specs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown key|relu"):
        build({"type": "BinaryConvolution", "in_channels": 1, "filters": 2, "kernel": 3, "relu": True})
    with pytest.raises(ValueError, match="'channels' must be 6 ints"):
        BinaryDeepConvNet(channels=(8, 8))
    layer = BinaryConvolution(np.zeros((2, 3, 3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"expected \(N, 3, H, W\) input, got shape \(1, 2, 5, 5\)"):
        layer.forward(np.zeros((1, 2, 5, 5)))
    with pytest.raises(RuntimeError, match="no forward pass"):
        BinaryAffine(np.zeros((3, 2)), np.zeros(2)).backward(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="each sample must have 3 features"):
        BinaryAffine(np.zeros((3, 2)), np.zeros(2)).forward(np.zeros((1, 4)))


@pytest.mark.skipif(not _config.kernels_compiled(), reason="the kernels are not built")
def test_a_few_training_steps_lower_the_loss():
    from deepnet.optimizers import Adam

    rng = np.random.default_rng(7)
    net = BinaryDeepConvNet(channels=(8, 8, 16, 16, 32, 32), hidden_size=32, seed=0)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    optimizer = Adam(lr=0.01)
    first = net.loss(x, t, train=True)
    for _ in range(15):
        grads = net.gradient(x, t)
        optimizer.update(net.params, grads)
    assert net.loss(x, t, train=True) < first
    assert all(np.abs(layer.W).max() <= 1 for layer in net.binary_layers())
