"""Bad input gets a clear exception naming the function or layer, the expected and the received."""

import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet import layers as L

pytestmark = [pytest.mark.kernels, pytest.mark.asan]

X = np.zeros((2, 3, 5, 5), dtype=np.float32)
W = np.zeros((4, 3, 3, 3), dtype=np.float32)
B = np.zeros(4, dtype=np.float32)
DOUT, ARGMAX = F.max_pool2d(np.arange(150, dtype=np.float32).reshape(X.shape), 2, 2)


@pytest.mark.parametrize(
    "call, error, fragments",
    [
        (lambda: F.im2col(np.zeros((3, 5, 5)), 3, 3), ValueError, ["deepnet.im2col", "4-D", "(3, 5, 5)"]),
        (lambda: F.im2col(X.astype(np.int64), 3, 3), TypeError, ["deepnet.im2col", "float", "int64"]),
        (lambda: F.im2col(X, 3, 3, stride=0), ValueError, ["stride", ">= 1", "0"]),
        (lambda: F.im2col(X, 3, 3, pad=-1), ValueError, ["pad", ">= 0", "-1"]),
        (lambda: F.im2col(X, 3, 3, stride=1.5), TypeError, ["stride", "int", "1.5"]),
        (lambda: F.im2col(X, 8, 3, pad=1), ValueError, ["kernel 8x3", "larger than the padded input 7x7"]),
        (lambda: F.col2im(np.zeros((5, 27)), X.shape, 3, 3), ValueError, ["deepnet.col2im", "(18, 27)", "(5, 27)"]),
        (lambda: F.conv2d(X, W[:, :2], B), ValueError, ["conv2d", "3 channels", "expects 2"]),
        (lambda: F.conv2d(X, W, B[:3]), ValueError, ["conv2d", "4 entries", "got 3"]),
        (lambda: F.max_pool2d(X, 2, 2, pad=2), ValueError, ["max_pool2d", "pad", "smaller than the pool window"]),
        (lambda: F.max_pool2d(X, 9, 9), ValueError, ["pool window 9x9", "larger than the padded input 5x5"]),
        (lambda: F.conv2d(X, W[:, :, :0], B), ValueError, ["conv2d", "kernel size must be >= 1", "(0, 3)"]),
        (
            lambda: F.col2im(np.zeros((18, 27)), (2, 3, 5, -5), 3, 3),
            ValueError,
            ["deepnet.col2im", "x_shape must be 4 non-negative ints", "-5"],
        ),
        # max_pool2d_backward: dout and argmax must be what max_pool2d gives for x_shape
        (
            lambda: F.max_pool2d_backward(DOUT[:1], ARGMAX[:1], X.shape, 2, 2),
            ValueError,
            ["max_pool2d_backward", "dout must have shape (2, 3, 2, 2)", "got (1, 3, 2, 2)"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX, (20, 3, 5, 5), 2, 2),
            ValueError,  # read past dout
            ["max_pool2d_backward", "dout must have shape (20, 3, 2, 2)", "got (2, 3, 2, 2)"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX, (2, 4, 5, 5), 2, 2),
            ValueError,
            ["max_pool2d_backward", "(2, 4, 2, 2)"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX, (2, 3, 7, 7), 2, 2),
            ValueError,
            ["max_pool2d_backward", "(2, 3, 3, 3)", "pool window 2x2, stride (2, 2), pad (0, 0)"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX, X.shape, 2, 2, stride=1),
            ValueError,
            ["max_pool2d_backward", "(2, 3, 4, 4)"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX[..., :1], X.shape, 2, 2),
            ValueError,
            ["max_pool2d_backward", "argmax must have shape (2, 3, 2, 2)", "(2, 3, 2, 1)"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX.astype(np.float32), X.shape, 2, 2),
            TypeError,
            ["max_pool2d_backward", "argmax must hold integers", "float32"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX.astype(bool), X.shape, 2, 2),
            TypeError,
            ["max_pool2d_backward", "argmax", "bool"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX.astype(np.int64) + 2**32, X.shape, 2, 2),
            ValueError,
            ["max_pool2d_backward", "[0, 25)", "got [4294967302, 4294967314]"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX * 0 - 1, X.shape, 2, 2),
            ValueError,
            ["max_pool2d_backward", "[0, 25)", "-1"],
        ),
        (
            lambda: F.max_pool2d(np.zeros((2, 3, 0, 5)), 2, 2, pad=1),
            ValueError,
            ["max_pool2d", "0x5 pixels have no maximum"],
        ),
        # strides and pads near 2**31 overflow the kernels' int indexes
        (
            lambda: F.im2col(X[:1, :1, :1, :1], 1, 1, stride=2**31 - 1),
            ValueError,
            [
                "deepnet.im2col",
                "too large for the kernels' int indexes",
                "padded height + stride would be 2147483648",
                "the limit is 2147483647",
                "stride (2147483647, 2147483647)",
            ],
        ),
        (
            lambda: F.im2col(X[:1, :1, :1, :1], 1, 1, stride=2**31 - 1, pad=2**30),
            ValueError,
            ["deepnet.im2col", "too large for the kernels' int indexes", "padded image plane"],
        ),
        (
            lambda: F.col2im(np.zeros((4, 1)), (1, 1, 1, 1), 1, 1, stride=2**31 - 1, pad=2**30),
            ValueError,
            ["deepnet.col2im", "too large for the kernels' int indexes"],
        ),
        (
            lambda: F.im2col(X[:1, :1], 1, 1, stride=(1, 2**31 - 5)),
            ValueError,
            ["deepnet.im2col", "padded width + stride"],
        ),
        (lambda: F.im2col(X[:1, :1], 1, 1, pad=(0, 2**30 - 4)), ValueError, ["deepnet.im2col", "padded image plane"]),
        (
            lambda: F.conv2d(X[:1, :1, :1, :1], W[:1, :1, :1, :1], B[:1], stride=2**31 - 1, pad=2**30),
            ValueError,
            ["deepnet.conv2d", "too large for the kernels' int indexes"],
        ),
        (
            lambda: F.conv2d(np.zeros((1, 64, 1, 1)), np.zeros((1, 64, 1, 1)), B[:1], pad=2900),
            ValueError,
            ["deepnet.conv2d", "the padded input would be 2153702464", "per image"],
        ),
        (
            lambda: F.conv2d_backward(
                np.zeros((1, 1, 2, 2)), X[:1, :1, :1, :1], W[:1, :1, :1, :1], stride=2**31 - 1, pad=2**30
            ),
            ValueError,
            ["deepnet.conv2d_backward", "too large for the kernels' int indexes"],
        ),
        (
            lambda: F.max_pool2d(X, 2, 2, stride=2**31 - 1, pad=1),
            ValueError,
            ["deepnet.max_pool2d", "too large for the kernels' int indexes"],
        ),
        (
            lambda: F.max_pool2d_backward(DOUT, ARGMAX, X.shape, 2, 2, stride=2**31 - 1, pad=1),
            ValueError,
            ["deepnet.max_pool2d_backward", "too large for the kernels' int indexes"],
        ),
        (
            lambda: L.Convolution(W, B).forward(np.zeros((2, 5, 5, 5), np.float32)),
            ValueError,
            ["Convolution.forward", "5 channels", "expects 3"],
        ),
        (lambda: L.Convolution(W, B, stride=0).forward(X), ValueError, ["Convolution.forward", "stride"]),
        (lambda: L.Convolution(W, B).forward(X[0]), ValueError, ["Convolution.forward", "4-D", "3-D"]),
        (lambda: L.Convolution(W, B).forward(X.astype(bool)), TypeError, ["Convolution.forward", "bool"]),
        (lambda: L.Pooling(2, 2).forward(X[0]), ValueError, ["Pooling.forward", "4-D"]),
        (
            lambda: L.Affine(np.zeros((10, 2)), np.zeros(2)).forward(np.zeros((4, 7))),
            ValueError,
            ["Affine.forward", "10 features", "(4, 7)"],
        ),
        (
            lambda: L.SoftmaxWithLoss().forward(np.zeros((4, 3)), np.array([0, 1, 2])),
            ValueError,
            ["SoftmaxWithLoss.forward", "4 labels", "(3,)"],
        ),
        (
            lambda: L.SoftmaxWithLoss().forward(np.zeros((4, 3)), np.zeros(4)),
            TypeError,
            ["SoftmaxWithLoss.forward", "integers", "float64"],
        ),
        (lambda: L.Dropout(1.5), ValueError, ["Dropout", "[0, 1)", "1.5"]),
        (lambda: deepnet.set_backend("torch"), ValueError, ["set_backend", "torch"]),
        (lambda: deepnet.set_num_threads(0), ValueError, ["set_num_threads", "0"]),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# -- channels-last input (issue 32, row 22) -------------------------------------------------


def test_channels_last_input_gets_the_layout_and_the_transpose_to_fix_it():
    """MNIST as (N, H, W, C): the error names the (N, C, H, W) layout and, since the last
    axis has the channels expected, the transpose that fixes it."""
    from deepnet.nets import DeepConvNet

    images = np.zeros((2, 28, 28, 1), np.float32)
    conv = L.Convolution(np.zeros((16, 1, 3, 3), np.float32), np.zeros(16, np.float32), pad=1)
    for call, caller in (
        (lambda: F.conv2d(images, conv.W, conv.b, 1, 1), "deepnet.conv2d"),
        (lambda: conv.forward(images), "Convolution.forward"),
        (lambda: DeepConvNet(seed=0).predict(images), "Convolution.forward"),
    ):
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        for fragment in (
            caller,
            "x has 28 channels but W expects 1",
            "(N, C, H, W)",
            "channels-last",
            "x.transpose(0, 3, 1, 2)",
        ):
            assert fragment in message, (fragment, message)
    assert conv.forward(images.transpose(0, 3, 1, 2)).shape == (2, 16, 28, 28)


def test_batch_normalization_suggests_the_transpose_for_channels_last_input():
    layer = L.BatchNormalization(np.ones(8, np.float32), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"expected \(N, 8\) or \(N, 8, H, W\).*x\.transpose\(0, 3, 1, 2\)"):
        layer.forward(np.zeros((2, 4, 4, 8), np.float32))


def test_no_transpose_is_suggested_where_the_last_axis_is_not_the_channels():
    with pytest.raises(ValueError) as error:
        F.conv2d(np.zeros((2, 5, 5, 5), np.float32), W, B)
    assert "(N, C, H, W)" in str(error.value) and "transpose" not in str(error.value)
    with pytest.raises(ValueError) as error:
        L.BatchNormalization(np.ones(4), np.zeros(4)).forward(np.zeros((2, 3, 2, 2)))
    assert "transpose" not in str(error.value)
