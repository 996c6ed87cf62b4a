"""Every layer's backward against central-difference numerical gradients (float64),
on both CPU backends, plus the layer contract (dtypes, parameters by reference)."""

import numpy as np
import pytest

import deepnet
from deepnet import layers as L
from cases import BACKENDS
from support import numerical_gradient

pytestmark = pytest.mark.kernels


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
    layer.forward(x, train=True)
    mask = layer.mask.copy()
    # With the mask fixed, dropout is linear: its gradient is the mask itself.
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, mask.astype(float))
    assert 0.3 < mask.mean() < 0.9
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x * 0.6)
    np.testing.assert_allclose(layer.forward(x), x * 0.6)  # train=False is the default


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 2, 3)])
def test_batch_normalization_gradients(rng, shape):
    channels = shape[1]
    layer = L.BatchNormalization(rng.standard_normal(channels) + 1.0, rng.standard_normal(channels))
    x = rng.standard_normal(shape) * 3 + 2
    check_layer_gradients(layer, x, rng, ("gamma", "beta"), forward_kwargs={"train": True})


def test_batch_normalization_is_per_channel_for_images(rng):
    x = rng.standard_normal((8, 3, 4, 5)) * np.array([1, 5, 20])[None, :, None, None] + 7
    out = L.BatchNormalization(np.ones(3), np.zeros(3)).forward(x, train_flg=True)
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


# -- the layer contract, containers and the new layers ---------------------------------------


def test_batch_normalization_statistics_and_running_averages_follow_numpy(rng):
    x = (
        rng.standard_normal((6, 3, 4, 5)) * np.array([0.5, 2, 9])[None, :, None, None]
        + np.array([1, -4, 30])[None, :, None, None]
    )
    layer = L.BatchNormalization(np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0]), momentum=0.8)
    out = layer.forward(x, train=True)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + layer.EPS)
    expected = expected * layer.gamma[None, :, None, None] + layer.beta[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.running_mean, 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.8 * 1 + 0.2 * var, rtol=1e-12)
    # Eval mode normalises with the running statistics, not the batch's.
    running = (x - layer.running_mean[None, :, None, None]) / np.sqrt(
        layer.running_var[None, :, None, None] + layer.EPS
    )
    np.testing.assert_allclose(
        layer.forward(x),
        running * layer.gamma[None, :, None, None] + layer.beta[None, :, None, None],
        rtol=1e-10,
        atol=1e-10,
    )


def test_batch_normalization_2d_is_per_feature(rng):
    x = rng.standard_normal((7, 4)) * 5 + 3
    out = L.BatchNormalization(np.ones(4), np.zeros(4)).forward(x, train=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-5)


def conv(rng, c_in, c_out, k=3, stride=1, pad=1):
    return L.Convolution(
        rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k), rng.standard_normal(c_out) * 0.1, stride, pad
    )


def bn(rng, channels):
    return L.BatchNormalization(rng.standard_normal(channels) + 1.0, rng.standard_normal(channels) * 0.1)


def all_param_gradients_check(layer, x, rng, forward_kwargs):
    """dx and every entry of layer.params (nested) against central differences."""
    out = layer.forward(x, **forward_kwargs)
    weights = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(layer.forward(x, **forward_kwargs) * weights))

    layer.forward(x, **forward_kwargs)
    dx = layer.backward(weights.copy())
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-5, atol=1e-7, err_msg="x")
    grads = {name: g.copy() for name, g in layer.grads.items()}
    assert grads.keys() == layer.params.keys()
    for name, param in layer.params.items():
        np.testing.assert_allclose(grads[name], numerical_gradient(loss, param), rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("projection", [False, True])
def test_residual_gradients_with_identity_and_projection_shortcuts(backend, rng, projection):
    from deepnet.nets import Sequential

    if projection:  # 3 -> 4 channels at half the resolution: a strided 1x1 convolution
        body = Sequential(conv(rng, 3, 4, stride=2), bn(rng, 4), L.Relu(), conv(rng, 4, 4), bn(rng, 4))
        shortcut = Sequential(conv(rng, 3, 4, k=1, stride=2, pad=0), bn(rng, 4))
    else:
        body, shortcut = Sequential(conv(rng, 3, 3), bn(rng, 3), L.Relu(), conv(rng, 3, 3)), None
    block = L.Residual(body, shortcut)
    x = rng.standard_normal((3, 3, 6, 5))
    assert block.output_shape(x.shape) == block.forward(x).shape
    all_param_gradients_check(Sequential(block), x, rng, {"train": True})


def test_residual_identity_adds_the_input():
    from deepnet.nets import Sequential

    body = Sequential(L.Relu())
    x = np.arange(-4.0, 4.0).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(L.Residual(body).forward(x), np.maximum(x, 0) + x)
    with pytest.raises(ValueError, match="Residual.forward: the body gives shape"):
        L.Residual(Sequential(L.Flatten())).forward(x)


def test_global_average_pooling_and_flatten_gradients(backend, rng):
    x = rng.standard_normal((3, 4, 5, 2))
    gap = L.GlobalAveragePooling()
    np.testing.assert_allclose(gap.forward(x), x.mean(axis=(2, 3)))
    check_layer_gradients(gap, x, rng)
    flat = L.Flatten()
    np.testing.assert_array_equal(flat.forward(x), x.reshape(3, -1))
    check_layer_gradients(flat, x, rng)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda r: conv(r, 3, 5, k=3, stride=2, pad=1), (2, 3, 9, 8)),
        (lambda r: L.Pooling(3, 2, stride=(2, 1), pad=(1, 0)), (2, 3, 7, 8)),
        (lambda r: L.Affine(r.standard_normal((24, 5)), np.zeros(5)), (2, 2, 3, 4)),
        (lambda r: L.BatchNormalization(np.ones(3), np.zeros(3)), (2, 3, 4, 4)),
        (lambda r: L.Flatten(), (2, 3, 4, 4)),
        (lambda r: L.GlobalAveragePooling(), (2, 3, 4, 4)),
        (lambda r: L.Dropout(0.3), (2, 3)),
        (lambda r: L.Relu(), (2, 3)),
    ],
)
def test_output_shape_is_the_shape_forward_returns(rng, make, shape):
    layer = make(rng)
    x = rng.standard_normal(shape)
    assert layer.output_shape(shape) == layer.forward(x).shape


def test_book_attributes_are_views_of_params_and_grads(rng):
    layer = L.Affine(rng.standard_normal((4, 3)), np.zeros(3))
    assert layer.W is layer.params["W"] and layer.b is layer.params["b"]
    assert layer.dW is None
    layer.forward(rng.standard_normal((2, 4)))
    layer.backward(np.ones((2, 3)))
    assert layer.dW is layer.grads["W"] and layer.db is layer.grads["b"]
    layer.W = np.ones((4, 3))
    assert layer.params["W"] is layer.W
    norm = L.BatchNormalization(np.ones(3), np.zeros(3))
    assert norm.gamma is norm.params["gamma"] and norm.running_mean is norm.buffers["running_mean"]


def test_a_frozen_layer_keeps_no_gradients(rng):
    layer = L.Affine(rng.standard_normal((4, 3)), np.zeros(3))
    layer.trainable = False
    layer.forward(rng.standard_normal((2, 4)))
    dx = layer.backward(np.ones((2, 3)))
    assert dx.shape == (2, 4) and layer.grads == {} and layer.dW is None


# -- bad input and empty batches -------------------------------------------------------------


@pytest.mark.parametrize("labels, bad", [([0, -1], "-1"), ([0, 5], "5")])
def test_softmax_with_loss_refuses_labels_outside_the_classes(labels, bad):
    with pytest.raises(ValueError, match=f"SoftmaxWithLoss.forward: labels must lie in 0..4.*{bad}"):
        L.SoftmaxWithLoss().forward(np.zeros((2, 5)), np.array(labels))


def test_empty_batches_give_empty_results_of_the_right_shape(rng):
    affine = L.Affine(rng.standard_normal((12, 5)), np.zeros(5))
    out = affine.forward(np.zeros((0, 3, 2, 2)))
    assert out.shape == (0, 5)
    assert affine.backward(np.zeros((0, 5))).shape == (0, 3, 2, 2)
    np.testing.assert_array_equal(affine.dW, np.zeros((12, 5)))
    loss_layer = L.SoftmaxWithLoss()
    assert np.isnan(loss_layer.forward(np.zeros((0, 10)), np.zeros(0, dtype=int)))
    assert loss_layer.backward().shape == (0, 10)
    assert L.softmax(np.zeros((0, 10))).shape == (0, 10)
    assert L.GlobalAveragePooling().forward(np.zeros((0, 3, 2, 2))).shape == (0, 3)


# -- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 3, 5), (3, 2, 1, 7)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_normalization_gradients_on_both_backends(backend, rng, shape, relu):
    channels = shape[1]
    layer = L.BatchNormalization(rng.standard_normal(channels) + 1.0, rng.standard_normal(channels) * 0.5, relu=relu)
    x = rng.standard_normal(shape) * 3 + 2
    check_layer_gradients(layer, x, rng, ("gamma", "beta"), forward_kwargs={"train": True})


@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (1, 1, 1, 1), (2, 3, 1, 9)])
def test_global_average_pooling_gradients_on_odd_sizes(backend, rng, shape):
    check_layer_gradients(L.GlobalAveragePooling(), rng.standard_normal(shape), rng)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (0, 3)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_normalization_of_an_empty_batch_is_empty(backend, shape, train):
    """An empty shard (data-parallel: a last batch smaller than the ranks) must pass through."""
    layer = L.BatchNormalization(np.ones(3), np.zeros(3), relu=True)
    out = layer.forward(np.zeros(shape), train=train)
    assert out.shape == shape
    if train:
        assert layer.backward(np.zeros(shape)).shape == shape
