"""A network's first layer skips the gradient of its input (conv2d_backward's
input_gradient=False): dW and db stay the same bits, dx comes back None, and training
(loss_and_gradient) takes that path while net.backward still returns dx."""
import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet.nets import DeepConvNet

# (C, FN, H, kernel, stride, pad): DeepConvNet's first layer (col2im path), a transposed
# one, a Winograd-sized one and a strided one.
GEOMETRIES = [(1, 16, 12, 3, 1, 1), (16, 16, 9, 3, 1, 1), (32, 32, 7, 3, 1, 2), (3, 8, 11, 5, 2, 2)]


def same_bits(a, b):
    return a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("relu", [False, True])
def test_without_the_input_gradient_dW_and_db_are_the_same_bits(backend, dtype, geometry, relu):
    if backend == "cython" and not deepnet.kernels_compiled():
        pytest.skip("kernels not built")
    C, FN, H, k, stride, pad = geometry
    rng = np.random.default_rng(C * 100 + FN)
    x = rng.standard_normal((3, C, H, H)).astype(dtype)
    W = (rng.standard_normal((FN, C, k, k)) * 0.3).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    with deepnet.backend(backend), deepnet.winograd("always"):
        y = F.conv2d(x, W, b, stride, pad, relu=relu)
        dout = rng.standard_normal(y.shape).astype(dtype)
        relu_out = y if relu else None
        dx, dW, db = F.conv2d_backward(dout, x, W, stride, pad, relu_out=relu_out)
        none, dW_only, db_only = F.conv2d_backward(dout, x, W, stride, pad, relu_out=relu_out,
                                                   input_gradient=False)
    assert none is None and dx.shape == x.shape
    assert dW_only.dtype == dW.dtype and same_bits(dW_only, dW) and same_bits(db_only, db)


def test_training_skips_the_first_layers_input_gradient_only(monkeypatch):
    net = DeepConvNet(seed=0)
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    t = np.array([0, 3, 5, 9])
    calls = []
    conv2d_backward = F.conv2d_backward

    def recording(*args, input_gradient=True, **kwargs):
        calls.append(input_gradient)
        return conv2d_backward(*args, input_gradient=input_gradient, **kwargs)

    monkeypatch.setattr(F, "conv2d_backward", recording)
    grads = {name: g.copy() for name, g in net.gradient(x, t).items()}
    assert calls == [True] * 5 + [False]   # backward runs the six convolutions last to first
    # The full backward pass of a twin (the same dropout draws) gives the same gradients,
    # and the input's gradient.
    calls.clear()
    twin = DeepConvNet(seed=0)
    twin.loss(x, t)
    dx = twin.backward(twin.last_layer.backward(1.0))
    assert calls == [True] * 6 and dx.shape == x.shape
    for name, g in twin.grads.items():
        assert np.array_equal(g, grads[name]), name


def test_the_kernel_refuses_dx_without_its_filters():
    if not deepnet.kernels_compiled():
        pytest.skip("kernels not built")
    from deepnet._kernels import conv
    x = np.zeros((1, 1, 4, 4), np.float32)
    dout = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="conv_backward: dx needs dx_filters, got None"):
        conv.conv_backward(x, dout, dout, None, False, False, False, np.zeros_like(x),
                           np.zeros((1, 9, 16), np.float32), np.zeros((1, 16), np.float32),
                           3, 3, 1, 1, 1, 1, False, 1)
