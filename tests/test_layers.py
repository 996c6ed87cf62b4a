"""Every layer's backward against central-difference numerical gradients (float64),
on both CPU backends, plus the layer contract (dtypes, parameters by reference)."""
import numpy as np
import pytest

import deepnet
from deepnet import layers as L
from support import numerical_gradient

BACKENDS = ["cython", "numpy"] if deepnet.kernels_compiled() else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with deepnet.backend(request.param):
        yield request.param


def check_layer_gradients(layer, x, rng, param_names=(), forward_kwargs=None):
    """Compare backward's dx (and dW, db...) with numerical gradients of sum(forward(x) * G)."""
    forward_kwargs = forward_kwargs or {}
    out = layer.forward(x, **forward_kwargs)
    weights = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(layer.forward(x, **forward_kwargs) * weights))

    layer.forward(x, **forward_kwargs)
    dx = layer.backward(weights.copy())
    analytic = {"x": dx}
    analytic.update({name: getattr(layer, "d" + name) for name in param_names})
    numeric = {"x": numerical_gradient(loss, x)}
    numeric.update({name: numerical_gradient(loss, getattr(layer, name)) for name in param_names})
    for name in numeric:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("stride, pad", [(1, 0), (1, 1), (2, 1), ((2, 1), (0, 2)), (3, 3)])
def test_convolution_gradients(backend, rng, stride, pad):
    x = rng.standard_normal((2, 3, 7, 6))
    layer = L.Convolution(rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4), stride, pad)
    check_layer_gradients(layer, x, rng, ("W", "b"))


def test_convolution_fused_with_relu_gradients(backend, rng):
    x = rng.standard_normal((2, 3, 6, 7))
    layer = L.Convolution(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4), 1, 1, relu=True)
    out = layer.forward(x)
    assert (out == 0).any() and (out > 0).any()  # both sides of the kink are exercised
    check_layer_gradients(layer, x, rng, ("W", "b"))


@pytest.mark.parametrize("pool, stride, pad", [(2, 2, 0), (3, 2, 0), (3, 1, 1), (2, 1, 1), ((3, 2), (2, 1), (1, 0))])
def test_pooling_gradients_including_overlapping_windows(backend, rng, pool, stride, pad):
    x = rng.standard_normal((2, 3, 7, 8))
    pool_h, pool_w = pool if isinstance(pool, tuple) else (pool, pool)
    check_layer_gradients(L.Pooling(pool_h, pool_w, stride, pad), x, rng)


def test_relu_and_sigmoid_gradients(backend, rng):
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink of ReLU
    check_layer_gradients(L.Relu(), x.copy(), rng)
    check_layer_gradients(L.Sigmoid(), x.copy(), rng)


def test_affine_gradients_with_image_input(backend, rng):
    x = rng.standard_normal((3, 2, 3, 2))  # flattened to 12 features inside
    layer = L.Affine(rng.standard_normal((12, 5)), rng.standard_normal(5))
    check_layer_gradients(layer, x, rng, ("W", "b"))


def test_dropout_gradient_with_a_fixed_mask(rng):
    layer = L.Dropout(0.4, rng=np.random.default_rng(0))
    x = rng.standard_normal((6, 7))
    layer.forward(x)
    mask = layer.mask.copy()
    # With the mask fixed, dropout is linear: its gradient is the mask itself.
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, mask.astype(float))
    assert 0.3 < mask.mean() < 0.9
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x * 0.6)


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 2, 3)])
def test_batch_normalization_gradients(rng, shape):
    channels = shape[1]
    layer = L.BatchNormalization(rng.standard_normal(channels) + 1.0, rng.standard_normal(channels))
    x = rng.standard_normal(shape)
    check_layer_gradients(layer, x, rng, ("gamma", "beta"))


def test_batch_normalization_is_per_channel_for_images(rng):
    x = rng.standard_normal((8, 3, 4, 5)) * np.array([1, 5, 20])[None, :, None, None] + 7
    out = L.BatchNormalization(np.ones(3), np.zeros(3)).forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss_gradient_and_value(rng, one_hot):
    x = rng.standard_normal((4, 5))
    labels = np.array([0, 3, 4, 1])
    t = np.eye(5)[labels] if one_hot else labels
    layer = L.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), labels] + 1e-7)))
    numeric = numerical_gradient(lambda: layer.forward(x, t), x)
    layer.forward(x, t)
    np.testing.assert_allclose(layer.backward(), numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_layers_compute_in_the_dtype_of_their_parameters(backend, rng, dtype):
    conv = L.Convolution(rng.standard_normal((4, 2, 3, 3)).astype(dtype), np.zeros(4, dtype), 1, 1)
    x64 = rng.standard_normal((2, 2, 5, 5))  # float64 input is converted once at the boundary
    y = conv.forward(x64)
    assert y.dtype == dtype
    dx = conv.backward(np.ones_like(y))
    assert dx.dtype == conv.dW.dtype == conv.db.dtype == dtype
    affine = L.Affine(rng.standard_normal((4 * 25, 3)).astype(dtype), np.zeros(3, dtype))
    assert affine.forward(y).dtype == dtype


def test_layers_keep_parameters_by_reference(rng):
    W, b = rng.standard_normal((4, 2, 3, 3)), np.zeros(4)
    conv = L.Convolution(W, b, 1, 1)
    x = rng.standard_normal((1, 2, 5, 5))
    before = conv.forward(x)
    W *= 2  # an optimizer updates in place
    np.testing.assert_allclose(conv.forward(x), 2 * before)


def test_layer_outputs_equal_between_backends(rng):
    if len(BACKENDS) < 2:
        pytest.skip("compiled kernels not built")
    x = rng.standard_normal((3, 2, 9, 8)).astype(np.float32)
    conv = L.Convolution(rng.standard_normal((5, 2, 3, 3)).astype(np.float32), np.ones(5, np.float32), 1, 1)
    pool = L.Pooling(2, 2, 2)
    results = {}
    for name in BACKENDS:
        with deepnet.backend(name):
            y = pool.forward(conv.forward(x))
            dx = conv.backward(pool.backward(np.ones_like(y)))
            results[name] = (y, dx, conv.dW)
    for got, expected in zip(results["cython"], results["numpy"]):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
