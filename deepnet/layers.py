"""The book's layers (Deep Learning from Scratch, common/layers.py), over compiled kernels.

Every layer follows one contract:

- ``params``: its own parameters, name -> array (``W``, ``b``, ``gamma``, ``beta``), held by
  reference, so an optimizer that updates them in place is seen by the layer;
- ``grads``: the gradients of the last ``backward``, under the same names (empty while the
  layer is frozen: ``trainable = False``);
- ``buffers``: state that is saved with a model but not trained (BatchNormalization's
  running statistics);
- ``forward(x, train=False)`` keeps what ``backward`` needs; ``backward(dout)`` returns dx;
- ``output_shape(input_shape)``: the shape ``forward`` returns for an input of that shape
  (batch axis included);
- ``config()``: the constructor's settings as JSON-ready data, from which
  ``deepnet.models.build`` rebuilds the layer (the architecture half of a model file).

The book's attributes keep working: ``W, b, dW, db`` and ``gamma, beta, dgamma, dbeta``,
and ``train_flg=`` where the book passes it.  The speed lives below, in deepnet.functional
and its backends.

Layers compute in the dtype of their parameters; inputs of another float dtype are
converted once at the boundary.  Parameter-free layers keep the input's dtype.  float16
is stored as half and computed in float32.  NumPy and CuPy arrays both work.
"""
import math

import numpy as np

from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype, output_size

__all__ = ["Layer", "Relu", "Sigmoid", "Affine", "Convolution", "Pooling", "Dropout",
           "BatchNormalization", "Flatten", "GlobalAveragePooling", "Residual",
           "SoftmaxWithLoss", "softmax", "cross_entropy_error"]


def _train_mode(train, train_flg):
    """The book's ``train_flg`` keyword, accepted beside ``train``."""
    return bool(train if train_flg is None else train_flg)


class Layer:
    """Base of every layer: no parameters, output shaped like the input."""

    trainable = True

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}

    def forward(self, x, train=False):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def config(self):
        """The constructor's settings (not the parameter values), as JSON-ready data."""
        return {}

    def children(self):
        """(name, layer) of the layers inside this one (containers only)."""
        return ()

    def _set_grads(self, **grads):
        self.grads = grads if self.trainable else {}

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({settings})"


class _WeightAndBias(Layer):
    """The book's attribute names for a layer with parameters W and b."""

    W = property(lambda self: self.params["W"], lambda self, v: self.params.__setitem__("W", v))
    b = property(lambda self: self.params["b"], lambda self, v: self.params.__setitem__("b", v))
    dW = property(lambda self: self.grads.get("W"))
    db = property(lambda self: self.grads.get("b"))

    def __init__(self, W, b):
        super().__init__()
        self.params = {"W": W, "b": b}


class Relu(Layer):
    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x, train=False, *, train_flg=None):
        self.out = F.relu(x, caller="Relu.forward")
        return self.out

    def backward(self, dout):
        return F.relu_backward(dout, self.out, caller="Relu.backward")


class Sigmoid(Layer):
    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x, train=False, *, train_flg=None):
        x = F.as_float_array(x, "x", "Sigmoid.forward")
        xp = get_array_module(x)
        acc = x.astype(compute_dtype(x.dtype), copy=False)
        self.out = (1 / (1 + xp.exp(-acc))).astype(x.dtype, copy=False)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Affine(_WeightAndBias):
    """y = x @ W + b for x of shape (N, ...) flattened to (N, in_features)."""

    def __init__(self, W, b):
        super().__init__(W, b)
        self.x = None
        self.original_x_shape = None

    def forward(self, x, train=False, *, train_flg=None):
        x = F.as_float_array(x, "x", "Affine.forward", dtype=self.W.dtype)
        features = math.prod(x.shape[1:]) if x.ndim >= 1 else None
        if features != self.W.shape[0]:
            raise ValueError(f"Affine.forward: each sample must have {self.W.shape[0]} features "
                             f"(W shape {tuple(self.W.shape)}), got x of shape {tuple(x.shape)}")
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], features)
        acc = compute_dtype(self.W.dtype)
        out = F.matmul(F.cast(self.x, acc), F.cast(self.W, acc)) + F.cast(self.b, acc)
        return F.cast(out, self.W.dtype)

    def backward(self, dout):
        acc = compute_dtype(self.W.dtype)
        dout = F.cast(dout, acc)
        dx = F.matmul(dout, F.cast(self.W, acc).T)
        self._set_grads(W=F.cast(F.matmul(F.cast(self.x, acc).T, dout), self.W.dtype),
                        b=F.cast(dout.sum(axis=0), self.W.dtype))
        return F.cast(dx, self.W.dtype).reshape(self.original_x_shape)

    def output_shape(self, input_shape):
        return (input_shape[0], self.W.shape[1])

    def config(self):
        return {"in_features": int(self.W.shape[0]), "out_features": int(self.W.shape[1])}


class Convolution(_WeightAndBias):
    """Convolution; with relu=True it is Convolution followed by Relu, fused in one pass
    (forward and backward), which saves a trip through memory per layer."""

    def __init__(self, W, b, stride=1, pad=0, relu=False):
        super().__init__(W, b)
        self.stride, self.pad = stride, pad
        self.relu = relu
        self.x = self.out = None
        self.pool_argmax = None  # set when out is a following Pooling's output (forward_pooled)

    def forward(self, x, train=False, *, train_flg=None):
        self.x = F.as_float_array(x, "x", "Convolution.forward", dtype=self.W.dtype)
        self.out = F.conv2d(self.x, self.W, self.b, self.stride, self.pad, relu=self.relu,
                            caller="Convolution.forward")
        self.pool_argmax = None
        return self.out

    def forward_pooled(self, x, pooling=None, train=False):
        """This layer and the 2x2, stride-2 Pooling after it, fused (F.conv2d_max_pool2d):
        the pooled output.  Training keeps what backward_pooled needs, the input, the
        pooled output as self.out (the ReLU's mask at the winners: not the full-size
        output) and the winners (in pooling, which training needs); inference keeps
        nothing."""
        if pooling is None and train:
            raise ValueError("Convolution.forward_pooled: training needs the Pooling layer, to keep its winners")
        if pooling is not None and not pooling.fuses_after_convolution():
            raise ValueError("Convolution.forward_pooled: fuses only a 2x2, stride-2, unpadded Pooling, "
                             f"got {pooling.pool_h}x{pooling.pool_w}, stride {pooling.stride}, pad {pooling.pad}")
        x = F.as_float_array(x, "x", "Convolution.forward_pooled", dtype=self.W.dtype)
        arguments = (x, self.W, self.b, self.stride, self.pad)
        if not train:
            self.x = self.out = self.pool_argmax = None
            if pooling is not None:
                pooling.argmax = None
            return F.conv2d_max_pool2d(*arguments, relu=self.relu, caller="Convolution.forward_pooled")
        pooled, pooling.argmax = F.conv2d_max_pool2d(*arguments, relu=self.relu, argmax=True,
                                                     caller="Convolution.forward_pooled")
        pooling.x_shape = self.output_shape(x.shape)
        self.x, self.out, self.pool_argmax = x, pooled, pooling.argmax
        return pooled

    def backward(self, dout, input_gradient=True):
        """dx (None with input_gradient=False, which skips computing it); sets dW and db.
        After a fused training forward_pooled (the book's layer-by-layer backward pass, with
        the Pooling's backward before it), the ReLU's mask is the pooled output put back at
        its winners: the only pixels where dout is not zero."""
        relu_out = self.out
        if self.relu and self.pool_argmax is not None and relu_out is not None:
            relu_out = F.max_pool2d_backward(relu_out, self.pool_argmax, self.output_shape(self.x.shape),
                                             2, 2, 2, 0, caller="Convolution.backward")
        return self._backward(dout, input_gradient, None, relu_out, "Convolution.backward")

    def backward_pooled(self, dout, pooling, input_gradient=True):
        """The backward passes of the 2x2, stride-2 Pooling that followed this layer (dout is
        its output's gradient) and of this layer, fused: the pooling's gradient is scattered
        as this layer reads it, never written out.  The same values as pooling.backward then
        backward."""
        if pooling.argmax is None or not pooling.fuses_after_convolution():
            raise RuntimeError("Convolution.backward_pooled: needs a 2x2, stride-2 Pooling after a "
                               "training forward pass")
        return self._backward(dout, input_gradient, pooling.argmax, self.out, "Convolution.backward_pooled")

    def _backward(self, dout, input_gradient, pool_argmax, relu_out, caller):
        if self.x is None:
            raise RuntimeError(f"{caller}: no forward pass to differentiate "
                               "(call forward(x) first; an inference forward_pooled keeps nothing for it)")
        dx, dW, db = F.conv2d_backward(dout, self.x, self.W, self.stride, self.pad,
                                       relu_out=relu_out if self.relu else None,
                                       input_gradient=input_gradient, pool_argmax=pool_argmax, caller=caller)
        self._set_grads(W=dW, b=db)
        return dx

    def output_shape(self, input_shape):
        N, _, H, W = input_shape
        (sh, sw), (ph, pw) = _pair(self.stride), _pair(self.pad)
        kh, kw = self.W.shape[2:]
        return (N, self.W.shape[0], output_size(H, kh, sh, ph), output_size(W, kw, sw, pw))

    def config(self):
        FN, C, kh, kw = (int(s) for s in self.W.shape)
        return {"in_channels": C, "filters": FN, "kernel": [kh, kw], "stride": list(_pair(self.stride)),
                "pad": list(_pair(self.pad)), "relu": bool(self.relu)}


class Pooling(Layer):
    """Max-pooling over pool_h x pool_w windows.  The stride defaults to 2 (the book's
    default is 1): every network here pools 2x2 windows with stride 2."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__()
        self.pool_h, self.pool_w = pool_h, pool_w
        self.stride, self.pad = stride, pad
        self.x_shape = None
        self.argmax = None

    def forward(self, x, train=False, *, train_flg=None):
        out, self.argmax = F.max_pool2d(x, self.pool_h, self.pool_w, self.stride, self.pad,
                                        caller="Pooling.forward")
        self.x_shape = x.shape
        return out

    def fuses_after_convolution(self):
        """True for the 2x2, stride-2, unpadded pooling that Convolution.forward_pooled fuses."""
        return (self.pool_h, self.pool_w) == (2, 2) and _pair(self.stride) == (2, 2) and _pair(self.pad) == (0, 0)

    def backward(self, dout):
        if self.argmax is None:
            raise RuntimeError("Pooling.backward: no forward pass to differentiate "
                               "(call forward(x) first; a fused inference pass keeps nothing for it)")
        return F.max_pool2d_backward(dout, self.argmax, self.x_shape, self.pool_h, self.pool_w,
                                     self.stride, self.pad, caller="Pooling.backward")

    def output_shape(self, input_shape):
        N, C, H, W = input_shape
        (sh, sw), (ph, pw) = _pair(self.stride), _pair(self.pad)
        return (N, C, output_size(H, self.pool_h, sh, ph), output_size(W, self.pool_w, sw, pw))

    def config(self):
        return {"pool_h": self.pool_h, "pool_w": self.pool_w, "stride": list(_pair(self.stride)),
                "pad": list(_pair(self.pad))}


class Dropout(Layer):
    """The book's dropout: training drops units; inference scales by (1 - dropout_ratio).

    The masks are drawn from ``rng`` on the CPU, so a seed gives the same masks on either
    device.  ``shard = (global_batch, first)`` makes it draw the masks of a whole global
    batch and keep rows first..first+N (data-parallel training: every rank draws the same
    masks and takes its own slice, so K ranks compute what one process would).
    """

    def __init__(self, dropout_ratio=0.5, rng=None):
        super().__init__()
        if not 0 <= dropout_ratio < 1:
            raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {dropout_ratio!r}")
        self.dropout_ratio = dropout_ratio
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mask = None
        self.shard = None

    def forward(self, x, train=False, *, train_flg=None):
        if _train_mode(train, train_flg):
            if self.shard is None:
                keep = self.rng.random(x.shape, dtype=np.float32) > self.dropout_ratio
            else:
                global_batch, first = self.shard
                keep = self.rng.random((global_batch,) + x.shape[1:], dtype=np.float32) > self.dropout_ratio
                keep = keep[first:first + x.shape[0]]
            self.mask = get_array_module(x).asarray(keep)
            return x * self.mask
        return x * x.dtype.type(1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask

    def config(self):
        return {"dropout_ratio": self.dropout_ratio}


class BatchNormalization(Layer):
    """Batch normalisation; per feature for 2-D input (N, F), per channel for 4-D (N, C, H, W).
    With relu=True it is BatchNormalization followed by Relu, fused in one pass.

    Training normalises by the batch's mean and (biased) variance and updates the running
    statistics, ``running = momentum * running + (1 - momentum) * batch``; inference uses
    the running statistics.  ``sum_across`` (set by data-parallel training) sums the
    per-channel statistics over all ranks, so the batch is the global batch.

    The output is computed as (x - mean) * (gamma / sqrt(var + eps)) + beta, the difference
    first, so that a channel constant over the batch (and the pixels) gives exactly beta
    (max(beta, 0) with the ReLU) and gradients of exactly 0 for gamma.  Training on one
    value per channel (a batch of one (N, F) row, or of one 1x1 image) raises ValueError,
    as PyTorch does: its statistics are meaningless.
    """

    EPS = 1e-7  # the book's

    gamma = property(lambda self: self.params["gamma"], lambda self, v: self.params.__setitem__("gamma", v))
    beta = property(lambda self: self.params["beta"], lambda self, v: self.params.__setitem__("beta", v))
    dgamma = property(lambda self: self.grads.get("gamma"))
    dbeta = property(lambda self: self.grads.get("beta"))
    running_mean = property(lambda self: self.buffers["running_mean"],
                            lambda self, v: self.buffers.__setitem__("running_mean", v))
    running_var = property(lambda self: self.buffers["running_var"],
                           lambda self, v: self.buffers.__setitem__("running_var", v))

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, relu=False):
        super().__init__()
        xp = get_array_module(gamma)
        self.params = {"gamma": gamma, "beta": beta}
        self.momentum = momentum
        self.relu = relu
        # In the compute dtype: a float16 variance would overflow above 65504.
        stats_dtype = compute_dtype(gamma.dtype)
        self.buffers = {
            "running_mean": running_mean if running_mean is not None else xp.zeros(gamma.shape, stats_dtype),
            "running_var": running_var if running_var is not None else xp.ones(gamma.shape, stats_dtype),
        }
        self.sum_across = None
        self._saved = None  # what backward needs: (x as (N, C, M), mean, inv_std, count)
        self.out = None     # the output, when a ReLU is fused

    def forward(self, x, train=False, *, train_flg=None):
        x = F.as_float_array(x, "x", "BatchNormalization.forward", dtype=self.gamma.dtype)
        if x.ndim not in (2, 4) or x.shape[1] != self.gamma.size:
            raise ValueError(f"BatchNormalization.forward: expected (N, {self.gamma.size}) or "
                             f"(N, {self.gamma.size}, H, W) input, got shape {tuple(x.shape)}"
                             + F._channels_last_hint(tuple(x.shape), self.gamma.size))
        x3 = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        if _train_mode(train, train_flg):
            # The shift: each channel's first value (a value of the channel, so a channel
            # constant over the batch gets exactly its value as the mean and a variance of
            # 0); in a data-parallel run one shift for all ranks, the running mean.
            shift = self.running_mean if self.sum_across is not None or x3.size == 0 else x3[0, :, 0]
            mean, var, count = F.batch_norm_statistics(x3, shift=shift, sum_across=self.sum_across,
                                                       caller="BatchNormalization.forward")
            if count == 1:
                raise ValueError("BatchNormalization.forward: Expected more than 1 value per channel when "
                                 f"training, got input shape {tuple(x.shape)} (the statistics of one value "
                                 "are meaningless: every output would be beta); use train=False (the "
                                 "running statistics) or a larger batch")
            inv_std = 1 / (get_array_module(x).sqrt(var + self.EPS))
            self._saved = (x3, mean, inv_std, count)
            m = self.momentum
            self.running_mean[...] = m * self.running_mean + (1 - m) * mean
            self.running_var[...] = m * self.running_var + (1 - m) * var
        else:
            mean, var = self.running_mean, self.running_var
            inv_std = 1 / (get_array_module(x).sqrt(var.astype(compute_dtype(x.dtype)) + self.EPS))
        # (x - mean) * scale + beta, the difference first: exactly beta where x is the mean
        out = F.channel_affine(x3, self.gamma * inv_std, self.beta, shift=mean, relu=self.relu,
                               caller="BatchNormalization.forward")
        self.out = out if self.relu else None
        return out.reshape(x.shape)

    def backward(self, dout):
        x3, mean, inv_std, count = self._saved
        dout3 = F.as_float_array(dout, "dout", "BatchNormalization.backward",
                                 dtype=self.gamma.dtype).reshape(x3.shape)
        dx, dgamma, dbeta = F.batch_norm_backward(dout3, x3, mean, inv_std, self.gamma, count,
                                                  sum_across=self.sum_across, relu_out=self.out,
                                                  caller="BatchNormalization.backward")
        self._set_grads(gamma=dgamma, beta=dbeta)
        return dx.reshape(dout.shape)

    def config(self):
        return {"features": int(self.gamma.size), "momentum": self.momentum, "relu": bool(self.relu)}


class Flatten(Layer):
    """(N, ...) -> (N, features)."""

    def __init__(self):
        super().__init__()
        self.x_shape = None

    def forward(self, x, train=False, *, train_flg=None):
        self.x_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dout):
        return dout.reshape(self.x_shape)

    def output_shape(self, input_shape):
        return (input_shape[0], math.prod(input_shape[1:]))


class GlobalAveragePooling(Layer):
    """(N, C, H, W) -> (N, C): the mean of every feature map."""

    def __init__(self):
        super().__init__()
        self.x_shape = None

    def forward(self, x, train=False, *, train_flg=None):
        x = F.as_float_array(x, "x", "GlobalAveragePooling.forward", ndim=4)
        self.x_shape = x.shape
        acc = compute_dtype(x.dtype)
        return x.mean(axis=(2, 3), dtype=acc).astype(x.dtype, copy=False)

    def backward(self, dout):
        N, C, H, W = self.x_shape
        xp = get_array_module(dout)
        acc = compute_dtype(dout.dtype)
        share = dout.astype(acc, copy=False) / (H * W) if H * W else dout.astype(acc)
        return xp.broadcast_to(share[:, :, None, None], self.x_shape).astype(dout.dtype)

    def output_shape(self, input_shape):
        return tuple(input_shape[:2])


class Residual(Layer):
    """A shortcut connection (ResNet): y = body(x) + shortcut(x).

    ``shortcut`` is the identity by default; where the body changes the shape, pass a
    projection such as a (strided) 1x1 Convolution, possibly with BatchNormalization.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def children(self):
        return (("body", self.body),) + ((("shortcut", self.shortcut),) if self.shortcut is not None else ())

    def forward(self, x, train=False, *, train_flg=None):
        train = _train_mode(train, train_flg)
        y = self.body.forward(x, train)
        skip = x if self.shortcut is None else self.shortcut.forward(x, train)
        if y.shape != skip.shape:
            raise ValueError(f"Residual.forward: the body gives shape {tuple(y.shape)} but the shortcut "
                             f"{tuple(skip.shape)}; give a shortcut that projects to the body's shape")
        return y + skip

    def backward(self, dout):
        dx = self.body.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def output_shape(self, input_shape):
        return self.body.output_shape(input_shape)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def softmax(x):
    """Row-wise softmax, stabilised by subtracting each row's maximum."""
    xp = get_array_module(x)
    if x.shape[-1] == 0 or x.size == 0:
        return xp.zeros_like(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """Mean -log(probability of the true class); t holds labels or one-hot rows.

    An empty batch has no mean: the result is nan, as numpy's and PyTorch's mean give.
    """
    if y.ndim == 1:
        y, t = y.reshape(1, -1), t.reshape(1, -1)
    if t.size == y.size and t.ndim == y.ndim:
        t = t.argmax(axis=1)
    xp = get_array_module(y)
    batch_size = y.shape[0]
    if batch_size == 0:
        return float("nan")
    return -float(xp.log(y[xp.arange(batch_size), t] + 1e-7).sum()) / batch_size


class SoftmaxWithLoss(Layer):
    """Softmax and cross-entropy loss; ``t`` holds integer labels 0..C-1 or one-hot rows."""

    def __init__(self):
        super().__init__()
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
        if not is_one_hot:
            if t.dtype.kind not in "iu":
                raise TypeError(f"SoftmaxWithLoss.forward: labels must be integers, got dtype {t.dtype}")
            if t.size and (int(t.min()) < 0 or int(t.max()) >= x.shape[1]):
                bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
                raise ValueError(f"SoftmaxWithLoss.forward: labels must lie in 0..{x.shape[1] - 1} "
                                 f"(one per class of x), got label {bad}")
        self.t = t
        self.x_dtype = x.dtype
        self.y = softmax(x.astype(compute_dtype(x.dtype), copy=False))
        self.loss = cross_entropy_error(self.y, t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        if batch_size == 0:
            return dx.astype(self.x_dtype, copy=False)
        if self.t.ndim == 2:
            dx -= self.t
        else:
            dx[get_array_module(dx).arange(batch_size), self.t] -= 1
        return (dx * (dout / batch_size)).astype(self.x_dtype, copy=False)
