"""Bad input gets a clear exception naming the function or layer, the expected and the received."""
import numpy as np
import pytest

import deepnet
from deepnet import functional as F
from deepnet import layers as L

X = np.zeros((2, 3, 5, 5), dtype=np.float32)
W = np.zeros((4, 3, 3, 3), dtype=np.float32)
B = np.zeros(4, dtype=np.float32)


@pytest.mark.parametrize("call, error, fragments", [
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
    (lambda: L.Convolution(W, B).forward(np.zeros((2, 5, 5, 5), np.float32)), ValueError,
     ["Convolution.forward", "5 channels", "expects 3"]),
    (lambda: L.Convolution(W, B, stride=0).forward(X), ValueError, ["Convolution.forward", "stride"]),
    (lambda: L.Convolution(W, B).forward(X[0]), ValueError, ["Convolution.forward", "4-D", "3-D"]),
    (lambda: L.Convolution(W, B).forward(X.astype(bool)), TypeError, ["Convolution.forward", "bool"]),
    (lambda: L.Pooling(2, 2).forward(X[0]), ValueError, ["Pooling.forward", "4-D"]),
    (lambda: L.Affine(np.zeros((10, 2)), np.zeros(2)).forward(np.zeros((4, 7))), ValueError,
     ["Affine.forward", "10 features", "(4, 7)"]),
    (lambda: L.SoftmaxWithLoss().forward(np.zeros((4, 3)), np.array([0, 1, 2])), ValueError,
     ["SoftmaxWithLoss.forward", "4 labels", "(3,)"]),
    (lambda: L.SoftmaxWithLoss().forward(np.zeros((4, 3)), np.zeros(4)), TypeError,
     ["SoftmaxWithLoss.forward", "integers", "float64"]),
    (lambda: L.Dropout(1.5), ValueError, ["Dropout", "[0, 1)", "1.5"]),
    (lambda: deepnet.set_backend("torch"), ValueError, ["set_backend", "torch"]),
    (lambda: deepnet.set_num_threads(0), ValueError, ["set_num_threads", "0"]),
])
def test_bad_input_raises_a_clear_error(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
