"""A network's first layer skips the gradient of its input (conv2d_backward's
input_gradient=False): dW and db stay the same bits, dx comes back None, and training
(loss_and_gradient) takes that path while net.backward still returns dx."""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet.nets import DeepConvNet
from cases import NON_SQUARE_PADDING, WEIGHT_GRADIENT
from support import same_bits

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

# (C, FN, H, kernel, stride, pad) of cases.WEIGHT_GRADIENT (square inputs of batch 3).
GEOMETRIES = [(g.x_shape[1], g.filters, g.x_shape[2], g.kernel[0], g.stride[0], g.pad[0]) for g in WEIGHT_GRADIENT]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("relu", [False, True])
def test_without_the_input_gradient_dW_and_db_are_the_same_bits(backend, dtype, geometry, relu):
    C, FN, H, k, stride, pad = geometry
    rng = np.random.default_rng(C * 100 + FN)
    x = rng.standard_normal((3, C, H, H)).astype(dtype)
    W = (rng.standard_normal((FN, C, k, k)) * 0.3).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    with deepnet.winograd("always"):  # under the backend fixture's backend
        y = F.conv2d(x, W, b, stride, pad, relu=relu)
        dout = rng.standard_normal(y.shape).astype(dtype)
        relu_out = y if relu else None
        dx, dW, db = F.conv2d_backward(dout, x, W, stride, pad, relu_out=relu_out)
        none, dW_only, db_only = F.conv2d_backward(dout, x, W, stride, pad, relu_out=relu_out, input_gradient=False)
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
    assert calls == [True] * 5 + [False]  # backward runs the six convolutions last to first
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
        conv.conv_backward(
            x,
            dout,
            dout,
            None,
            False,
            False,
            False,
            np.zeros_like(x),
            np.zeros((1, 9, 16), np.float32),
            np.zeros((1, 16), np.float32),
            3,
            3,
            1,
            1,
            1,
            1,
            False,
            1,
        )


NON_SQUARE = NON_SQUARE_PADDING  # (x shape, filters, kernel, stride, pad)


@pytest.mark.skipif(not deepnet.kernels_compiled(), reason="kernels not built")
@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("x_shape,filters,kernel,stride,pad", NON_SQUARE)
def test_the_input_gradient_with_non_square_padding_equals_the_reference(
    x_shape, filters, kernel, stride, pad, dtype, winograd
):
    """dx, dW and db against the float64 reference: a kernel that swapped the vertical and
    horizontal padding (or kernel sizes) gives wrong values here."""
    from deepnet import reference as R
    from cases import RTOL, max_relative_error

    rng = np.random.default_rng(sum(x_shape) + filters + sum(pad))
    x = rng.standard_normal(x_shape).astype(dtype)
    W = (rng.standard_normal((filters, x_shape[1]) + kernel) / np.sqrt(x_shape[1] * kernel[0] * kernel[1])).astype(
        dtype
    )
    with deepnet.backend("cython"), deepnet.winograd(winograd):
        y = F.conv2d(x, W, None, stride, pad)
        dout = rng.standard_normal(y.shape).astype(dtype)
        got = F.conv2d_backward(dout, x, W, stride, pad)
    expected = R.conv_backward(*(a.astype(np.float64) for a in (dout, x, W)), stride, pad)
    for name, g, e in zip(("dx", "dW", "db"), got, expected):
        assert g.shape == e.shape and g.dtype == dtype, name
        assert max_relative_error(g, e) <= RTOL[dtype], name
