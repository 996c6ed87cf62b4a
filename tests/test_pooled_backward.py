"""The backward pass of a Convolution and the 2x2 max-pooling after it, fused
(conv2d_backward's pool_argmax, Convolution.backward_pooled): the same bits as
max_pool2d_backward followed by conv2d_backward, on both backends, with the ReLU's mask
from the convolution's output or from the pooled output (all a fused training forward pass
keeps); and what training runs."""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet.layers import Convolution, Pooling
from deepnet.nets import DeepConvNet, Sequential
from cases import POOLED_BACKWARD
from support import same_bits

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

# (C, FN, H, W, pad) of cases.POOLED_BACKWARD (batch 3, 3x3 filters, stride 1).
GEOMETRIES = [(g.x_shape[1], g.filters, *g.x_shape[2:], g.pad[0]) for g in POOLED_BACKWARD]


def layer_pair(C, FN, H, W, pad, dtype, relu, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, C, H, W)).astype(dtype)
    Wt = (rng.standard_normal((FN, C, 3, 3)) * 0.3).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    y = F.conv2d(x, Wt, b, 1, pad, relu=relu)
    pooled, argmax = F.max_pool2d(y, 2, 2)
    dpooled = rng.standard_normal(pooled.shape).astype(dtype)
    return x, Wt, y, argmax, dpooled


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("input_gradient", [True, False])
def test_the_fused_pass_equals_pooling_then_convolution_backward(backend, dtype, geometry, relu, input_gradient):
    C, FN, H, W, pad = geometry
    with deepnet.backend(backend):
        x, Wt, y, argmax, dpooled = layer_pair(C, FN, H, W, pad, dtype, relu, seed=C + FN + H)
        relu_out = y if relu else None
        dy = F.max_pool2d_backward(dpooled, argmax, y.shape, 2, 2)
        expected = F.conv2d_backward(dy, x, Wt, 1, pad, relu_out=relu_out, input_gradient=input_gradient)
        fused = F.conv2d_backward(
            dpooled, x, Wt, 1, pad, relu_out=relu_out, input_gradient=input_gradient, pool_argmax=argmax
        )
    for got, want in zip(fused, expected):
        assert (got is None and want is None) or same_bits(got, want)
    if relu:  # the pooled output as the mask: the ReLU's output at the winners
        with deepnet.backend(backend):
            pooled = F.max_pool2d(y, 2, 2)[0]
            from_pooled = F.conv2d_backward(
                dpooled, x, Wt, 1, pad, relu_out=pooled, input_gradient=input_gradient, pool_argmax=argmax
            )
        for got, want in zip(from_pooled, expected):
            assert (got is None and want is None) or same_bits(got, want)


def test_the_fused_pass_checks_its_arguments():
    x, Wt, y, argmax, dpooled = layer_pair(4, 4, 6, 6, 1, np.float32, True, seed=0)
    with pytest.raises(ValueError, match=r"conv2d_backward: dout must have shape \(3, 4, 3, 3\) \(the 2x2-pooled"):
        F.conv2d_backward(y, x, Wt, 1, 1, relu_out=y, pool_argmax=argmax)
    with pytest.raises(ValueError, match=r"conv2d_backward: argmax entries must lie in \[0, 36\)"):
        F.conv2d_backward(dpooled, x, Wt, 1, 1, relu_out=y, pool_argmax=argmax + 36)
    with pytest.raises(
        ValueError,
        match=r"relu_out must have the output's shape \(3, 4, 6, 6\) or the pooled "
        r"output's \(3, 4, 3, 3\), got \(3, 4, 2, 2\)",
    ):
        F.conv2d_backward(dpooled, x, Wt, 1, 1, relu_out=y[:, :, :2, :2], pool_argmax=argmax)
    with pytest.raises(TypeError, match="conv2d_backward: argmax must hold integers"):
        F.conv2d_backward(dpooled, x, Wt, 1, 1, relu_out=y, pool_argmax=argmax.astype(np.float32))
    if deepnet.kernels_compiled():  # the kernel checks on its own too: it never writes outside a plane
        from deepnet.backends import cpu as _cpu

        with pytest.raises(ValueError, match=r"conv_backward: pool_argmax entries must lie in \[0, 36\)"):
            _cpu.conv_backward(dpooled, x, Wt, (1, 1), (1, 1), relu_out=y, pool_argmax=argmax - 100)


def test_sequential_fuses_each_convolution_pooling_pair_in_training(monkeypatch, dtype):
    x = np.random.default_rng(1).random((4, 1, 28, 28)).astype(dtype)
    t = np.array([0, 3, 5, 9])
    forward_calls, backward_calls = [], []
    forward_pooled, backward_pooled = Convolution.forward_pooled, Convolution.backward_pooled

    def recording_forward(self, x, pooling, train=False):
        forward_calls.append((x.shape[1:], train))
        return forward_pooled(self, x, pooling, train)

    def recording_backward(self, dout, pooling, input_gradient=True):
        backward_calls.append(pooling.x_shape[1:])
        return backward_pooled(self, dout, pooling, input_gradient)

    monkeypatch.setattr(Convolution, "forward_pooled", recording_forward)
    monkeypatch.setattr(Convolution, "backward_pooled", recording_backward)
    fused = DeepConvNet(dtype=dtype, seed=0)
    grads = {name: g.copy() for name, g in fused.gradient(x, t).items()}
    assert forward_calls == [((16, 28, 28), True), ((32, 14, 14), True), ((64, 8, 8), True)]
    assert backward_calls == [(64, 8, 8), (32, 16, 16), (16, 28, 28)]  # conv6, conv4 and conv2
    # Twins with the same draws: one run layer by layer both ways, one the book's way (the
    # fused forward pass, then each layer's backward): the same gradients.
    unfused, book = DeepConvNet(dtype=dtype, seed=0), DeepConvNet(dtype=dtype, seed=0)
    h = x
    for layer in unfused.layers:
        h = layer.forward(h, True)
    unfused.last_layer.forward(h, t)
    book.loss(x, t)
    for twin in (unfused, book):
        dout = twin.last_layer.backward(1.0)
        for layer in reversed(twin.layers):
            dout = layer.backward(dout)
        for name, g in twin.grads.items():
            assert same_bits(g, grads[name]), name


def test_forward_pooled_fuses_only_the_2x2_stride_2_pooling():
    conv = Convolution(np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32), pad=1)
    with pytest.raises(
        ValueError,
        match="Convolution.forward_pooled: fuses only a 2x2, stride-2, unpadded Pooling, got 3x3, stride 2, pad 0",
    ):
        conv.forward_pooled(np.ones((1, 1, 6, 6), np.float32), Pooling(3, 3), True)
    # inference needs no Pooling layer (the 2x2 one is implied); training keeps its winners in one
    x = np.random.default_rng(0).random((2, 1, 6, 6), dtype=np.float32)
    assert np.array_equal(conv.forward_pooled(x), F.max_pool2d(conv.forward(x), 2, 2)[0])
    with pytest.raises(ValueError, match="Convolution.forward_pooled: training needs the Pooling layer"):
        conv.forward_pooled(x, train=True)
    # a convolution output too small to pool: the message says what was pooled
    with pytest.raises(
        ValueError,
        match=r"Convolution.forward_pooled \(pooling the convolution's output\): "
        r"pool window 2x2 is larger than the padded input 1x5",
    ):
        Sequential(Convolution(np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32)), Pooling(2, 2)).forward(
            np.ones((3, 1, 3, 7), np.float32), True
        )


def test_backward_pooled_needs_a_training_forward_pass():
    rng = np.random.default_rng(0)
    conv = Convolution((rng.standard_normal((2, 1, 3, 3)) * 0.1).astype(np.float32), np.zeros(2, np.float32), pad=1)
    pool = Pooling(2, 2, stride=2)
    net = Sequential(conv, pool)
    x = rng.random((1, 1, 4, 4), dtype=np.float32)
    net.forward(x)  # inference: fused forward, nothing kept
    with pytest.raises(RuntimeError, match="Convolution.backward_pooled: needs a 2x2, stride-2 Pooling"):
        conv.backward_pooled(np.ones((1, 2, 2, 2), np.float32), pool)
    out = net.forward(x, True)
    dx = net.backward(np.ones_like(out))
    assert dx.shape == x.shape
