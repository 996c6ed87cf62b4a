"""The book's layers (Deep Learning from Scratch, common/layers.py), over compiled kernels.

Each layer is a small class: ``__init__`` keeps the parameters (by reference, so an
optimizer that updates them in place is seen by the layer), ``forward`` keeps what
``backward`` needs, and ``backward(dout)`` returns dx and sets dW/db.  The speed lives
below, in deepnet.functional and its backends.

Layers compute in the dtype of their parameters; inputs of another float dtype are
converted once at the boundary.  Parameter-free layers keep the input's dtype.  float16
is stored as half and computed in float32.  NumPy and CuPy arrays both work.
"""
import numpy as np

from deepnet import functional as F
from deepnet._cuda import get_array_module
from deepnet.reference import compute_dtype


class Relu:
    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = F.relu(x, caller="Relu.forward")
        return self.out

    def backward(self, dout):
        return F.relu_backward(dout, self.out, caller="Relu.backward")


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        x = F.as_float_array(x, "x", "Sigmoid.forward")
        xp = get_array_module(x)
        acc = x.astype(compute_dtype(x.dtype), copy=False)
        self.out = (1 / (1 + xp.exp(-acc))).astype(x.dtype, copy=False)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Affine:
    """y = x @ W + b for x of shape (N, ...) flattened to (N, in_features)."""

    def __init__(self, W, b):
        self.W, self.b = W, b
        self.dW = self.db = None
        self.x = None
        self.original_x_shape = None

    def forward(self, x):
        x = F.as_float_array(x, "x", "Affine.forward", dtype=self.W.dtype)
        if x.ndim < 1 or x[0].size != self.W.shape[0]:
            raise ValueError(f"Affine.forward: each sample must have {self.W.shape[0]} features "
                             f"(W shape {tuple(self.W.shape)}), got x of shape {tuple(x.shape)}")
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        acc = compute_dtype(self.W.dtype)
        out = F.matmul(F.cast(self.x, acc), F.cast(self.W, acc)) + F.cast(self.b, acc)
        return F.cast(out, self.W.dtype)

    def backward(self, dout):
        acc = compute_dtype(self.W.dtype)
        dout = F.cast(dout, acc)
        dx = F.matmul(dout, F.cast(self.W, acc).T)
        self.dW = F.cast(F.matmul(F.cast(self.x, acc).T, dout), self.W.dtype)
        self.db = F.cast(dout.sum(axis=0), self.W.dtype)
        return F.cast(dx, self.W.dtype).reshape(self.original_x_shape)


class Convolution:
    """Convolution; with relu=True it is Convolution followed by Relu, fused in one pass
    (forward and backward), which saves a trip through memory per layer."""

    def __init__(self, W, b, stride=1, pad=0, relu=False):
        self.W, self.b = W, b
        self.stride, self.pad = stride, pad
        self.relu = relu
        self.dW = self.db = None
        self.x = self.out = None

    def forward(self, x):
        self.x = F.as_float_array(x, "x", "Convolution.forward", dtype=self.W.dtype)
        self.out = F.conv2d(self.x, self.W, self.b, self.stride, self.pad, relu=self.relu,
                            caller="Convolution.forward")
        return self.out

    def backward(self, dout):
        dx, self.dW, self.db = F.conv2d_backward(dout, self.x, self.W, self.stride, self.pad,
                                                 relu_out=self.out if self.relu else None,
                                                 caller="Convolution.backward")
        return dx


class Pooling:
    """Max-pooling over pool_h x pool_w windows."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h, self.pool_w = pool_h, pool_w
        self.stride, self.pad = stride, pad
        self.x_shape = None
        self.argmax = None

    def forward(self, x):
        out, self.argmax = F.max_pool2d(x, self.pool_h, self.pool_w, self.stride, self.pad,
                                        caller="Pooling.forward")
        self.x_shape = x.shape
        return out

    def backward(self, dout):
        return F.max_pool2d_backward(dout, self.argmax, self.x_shape, self.pool_h, self.pool_w,
                                     self.stride, self.pad, caller="Pooling.backward")


class Dropout:
    """The book's dropout: training drops units; inference scales by (1 - dropout_ratio)."""

    def __init__(self, dropout_ratio=0.5, rng=None):
        if not 0 <= dropout_ratio < 1:
            raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {dropout_ratio!r}")
        self.dropout_ratio = dropout_ratio
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            # Draw on the CPU generator so a seed gives the same masks on either device.
            keep = self.rng.random(x.shape, dtype=np.float32) > self.dropout_ratio
            self.mask = get_array_module(x).asarray(keep)
            return x * self.mask
        return x * x.dtype.type(1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask


class BatchNormalization:
    """Batch normalisation; per feature for 2-D input, per channel for 4-D (N, C, H, W)."""

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma, self.beta = gamma, beta
        self.momentum = momentum
        self.running_mean, self.running_var = running_mean, running_var
        self.dgamma = self.dbeta = None
        self.input_shape = None
        self.batch_size = self.xc = self.std = self.xn = None

    def _to_2d(self, x):
        """(N, C, H, W) -> (N*H*W, C) so that every channel is one feature."""
        if x.ndim == 4:
            return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
        return x.reshape(x.shape[0], -1)

    def _from_2d(self, y):
        if len(self.input_shape) == 4:
            N, C, H, W = self.input_shape
            return y.reshape(N, H, W, C).transpose(0, 3, 1, 2)
        return y.reshape(self.input_shape)

    def forward(self, x, train_flg=True):
        x = F.as_float_array(x, "x", "BatchNormalization.forward", dtype=self.gamma.dtype)
        self.input_shape = x.shape
        acc = compute_dtype(x.dtype)
        x2 = self._to_2d(x).astype(acc, copy=False)
        if x2.shape[1] != self.gamma.size:
            raise ValueError(f"BatchNormalization.forward: expected {self.gamma.size} features/channels, "
                             f"got input of shape {tuple(x.shape)}")
        xp = get_array_module(x)
        if self.running_mean is None:
            self.running_mean = xp.zeros(x2.shape[1], dtype=self.gamma.dtype)
            self.running_var = xp.zeros(x2.shape[1], dtype=self.gamma.dtype)
        if train_flg:
            mu = x2.mean(axis=0)
            self.xc = x2 - mu
            var = (self.xc ** 2).mean(axis=0)
            self.std = xp.sqrt(var + 1e-7)
            self.xn = self.xc / self.std
            self.batch_size = x2.shape[0]
            m = self.momentum
            self.running_mean[...] = m * self.running_mean + (1 - m) * mu
            self.running_var[...] = m * self.running_var + (1 - m) * var
            xn = self.xn
        else:
            xn = (x2 - self.running_mean.astype(acc)) / xp.sqrt(self.running_var.astype(acc) + 1e-7)
        out = self.gamma.astype(acc) * xn + self.beta.astype(acc)
        return self._from_2d(out.astype(x.dtype, copy=False))

    def backward(self, dout):
        acc = compute_dtype(self.gamma.dtype)
        dout = self._to_2d(dout).astype(acc, copy=False)
        dbeta = dout.sum(axis=0)
        dgamma = (self.xn * dout).sum(axis=0)
        dxn = self.gamma.astype(acc) * dout
        dxc = dxn / self.std
        dstd = -((dxn * self.xc) / (self.std * self.std)).sum(axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = dxc.sum(axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma = dgamma.astype(self.gamma.dtype)
        self.dbeta = dbeta.astype(self.gamma.dtype)
        return self._from_2d(dx.astype(self.gamma.dtype, copy=False))


def softmax(x):
    """Row-wise softmax, stabilised by subtracting each row's maximum."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """Mean -log(probability of the true class); t holds labels or one-hot rows."""
    if y.ndim == 1:
        y, t = y.reshape(1, -1), t.reshape(1, -1)
    if t.size == y.size:
        t = t.argmax(axis=1)
    xp = get_array_module(y)
    batch_size = y.shape[0]
    return -float(xp.log(y[xp.arange(batch_size), t] + 1e-7).sum()) / batch_size


class SoftmaxWithLoss:
    def __init__(self):
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # labels or one-hot, as given
        self.x_dtype = None

    def forward(self, x, t):
        x = F.as_float_array(x, "x", "SoftmaxWithLoss.forward", ndim=2)
        t = get_array_module(x).asarray(t)
        is_one_hot = t.ndim == 2
        if (t.ndim not in (1, 2)) or t.shape[0] != x.shape[0] or (is_one_hot and t.shape != x.shape):
            raise ValueError(f"SoftmaxWithLoss.forward: t must be {x.shape[0]} labels or one-hot rows of "
                             f"shape {tuple(x.shape)} to match x; got t of shape {tuple(t.shape)}")
        if not is_one_hot and t.dtype.kind not in "iu":
            raise TypeError(f"SoftmaxWithLoss.forward: labels must be integers, got dtype {t.dtype}")
        self.t = t
        self.x_dtype = x.dtype
        self.y = softmax(x.astype(compute_dtype(x.dtype), copy=False))
        self.loss = cross_entropy_error(self.y, t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        if self.t.size == self.y.size:
            dx -= self.t
        else:
            dx[get_array_module(dx).arange(batch_size), self.t] -= 1
        return (dx * (dout / batch_size)).astype(self.x_dtype, copy=False)
