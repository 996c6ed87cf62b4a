"""The book's convolutional networks, built from ``deepnet.layers``.

``DeepConvNet`` is chapter 8's network (over 99% on MNIST in the book); ``SimpleConvNet``
is chapter 7's.
Both keep their weights in ``self.params`` (W1, b1, W2, ...); the layers hold the very
same array objects, so an optimizer that updates ``params`` in place trains the layers.
"""
import copy

import numpy as np

from . import _cuda, io
from .layers import Affine, Convolution, Dropout, Pooling, Relu, SoftmaxWithLoss

__all__ = ["DeepConvNet", "SimpleConvNet"]


def _conv_output_size(size, filter_size, pad, stride):
    return (size + 2 * pad - filter_size) // stride + 1


def _pool_output_size(size, pool_size=2, stride=2):
    return (size - pool_size) // stride + 1


def _fan_in_out(shape):
    """(inputs, outputs) of one unit for a conv (FN, C, FH, FW) or affine (in, out) weight."""
    if len(shape) == 4:
        return int(np.prod(shape[1:])), shape[0]
    return shape


class _ConvNet:
    """What both networks share: predict, loss, accuracy, gradient and parameter files.

    A subclass sets ``self.dtype``, ``self.rng`` and ``self.params`` and implements
    ``_build_layers()``, which sets ``self.layers`` (everything before the loss),
    ``self.last_layer`` and ``self._param_layers`` (parameter index -> layer).
    """

    on_gpu = False

    # -- inference and training --------------------------------------------------------

    def predict(self, x, train_flg=False):
        """Class scores (before softmax) for a batch ``x`` of shape (N, C, H, W)."""
        x = self._to_device(x).astype(self.dtype, copy=False)
        for layer in self.layers:
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Cross-entropy loss of a training-mode forward pass (dropout active)."""
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, self._to_device(t))

    def classify(self, x, batch_size=100):
        """Predicted class of every sample of ``x`` (a NumPy int array), batch by batch."""
        labels = [np.argmax(_cuda.to_cpu(self.predict(x[start:start + batch_size])), axis=1)
                  for start in range(0, len(x), batch_size)]
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot), counting every sample.

        Unlike the book's version, the final partial batch is evaluated too.
        """
        t = _cuda.to_cpu(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return float(np.sum(self.classify(x, batch_size) == t) / len(x))

    def loss_and_gradient(self, x, t):
        """Loss of one training-mode forward pass and the gradients of its backward pass."""
        loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        grads = {}
        for index, layer in self._param_layers.items():
            grads[f"W{index}"] = layer.dW
            grads[f"b{index}"] = layer.db
        return loss, grads

    def gradient(self, x, t):
        """Gradients of the loss by backpropagation, as a dict keyed like ``params``."""
        return self.loss_and_gradient(x, t)[1]

    # -- parameter files ---------------------------------------------------------------

    def save_params(self, path):
        """Write the parameters to an ``.npz`` file (atomically); return the path written."""
        return io.save_params(path, self.params)

    def load_params(self, path):
        """Load parameters from a ``.npz`` or the book's ``.pkl`` into this network."""
        self.set_params(io.load_params_file(path), source=path)

    def set_params(self, arrays, source="parameters"):
        """Copy ``arrays`` (name -> array) into this network's parameters.

        Every name and shape is checked before anything changes (ValueError naming the
        parameter otherwise). Values are cast to the network's dtype and copied into the
        existing arrays, so the layers, which hold those arrays, see the new values.
        """
        self._check_names_and_shapes(arrays, source)
        for name, value in arrays.items():
            value = _cuda.to_cpu(value).astype(self.dtype, copy=False)
            self.params[name][...] = self._to_device(value)

    def _check_names_and_shapes(self, arrays, source):
        missing = sorted(set(self.params) - set(arrays))
        unexpected = sorted(set(arrays) - set(self.params))
        if missing:
            raise ValueError(f"{source}: parameter {missing[0]!r} is missing")
        if unexpected:
            raise ValueError(f"{source}: unexpected parameter {unexpected[0]!r}")
        for name, value in arrays.items():
            expected = self.params[name].shape
            if value.shape != expected:
                raise ValueError(f"{source}: parameter {name!r} has shape {value.shape}, "
                                 f"the network expects {expected}")

    # -- devices and dtypes ------------------------------------------------------------

    def to_gpu(self):
        """Move the parameters to the GPU (CuPy); inputs are moved there by predict."""
        self._move_params(_cuda.to_gpu)
        self.on_gpu = True
        return self

    def to_cpu(self):
        """Move the parameters back to host memory."""
        self._move_params(_cuda.to_cpu)
        self.on_gpu = False
        return self

    def astype(self, dtype):
        """A copy of this network computing in ``dtype`` (e.g. float16 for inference)."""
        clone = copy.copy(self)
        clone.dtype = np.dtype(dtype)
        clone.rng = copy.deepcopy(self.rng)
        clone.params = {name: value.astype(clone.dtype) for name, value in self.params.items()}
        clone._build_layers()
        return clone

    def _move_params(self, move):
        # New arrays on the other device: rebuild the layers so they hold the moved ones.
        self.params = {name: move(value) for name, value in self.params.items()}
        self._build_layers()

    def _to_device(self, a):
        """``a`` on the device the parameters live on."""
        return _cuda.to_gpu(a) if self.on_gpu else _cuda.to_cpu(a)


class DeepConvNet(_ConvNet):
    """Chapter 8's deep CNN for MNIST::

        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        affine - relu - dropout - affine - dropout - softmax

    Weights use He initialisation (std sqrt(2 / fan_in)); biases start at zero.
    ``seed`` seeds ``self.rng``, which draws the initial weights and the dropout masks.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_2={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_3={'filter_num': 32, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_4={'filter_num': 32, 'filter_size': 3, 'pad': 2, 'stride': 1},
                 conv_param_5={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_6={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 hidden_size=50, output_size=10, dtype=np.float32, seed=None):
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.conv_params = [conv_param_1, conv_param_2, conv_param_3,
                            conv_param_4, conv_param_5, conv_param_6]
        self.params = {}
        for index, shape in enumerate(self._weight_shapes(input_dim, hidden_size, output_size), 1):
            fan_in, fan_out = _fan_in_out(shape)
            scale = np.sqrt(2.0 / fan_in)  # He initialisation, suited to ReLU
            self.params[f"W{index}"] = (scale * self.rng.standard_normal(shape)).astype(self.dtype)
            self.params[f"b{index}"] = np.zeros(fan_out, self.dtype)
        self._build_layers()

    def _weight_shapes(self, input_dim, hidden_size, output_size):
        """Six conv weights (FN, C, FH, FW), then two affine weights (in, out)."""
        channels, height, width = input_dim
        shapes = []
        for index, conv in enumerate(self.conv_params):
            size = conv['filter_size']
            shapes.append((conv['filter_num'], channels, size, size))
            channels = conv['filter_num']
            height = _conv_output_size(height, size, conv['pad'], conv['stride'])
            width = _conv_output_size(width, size, conv['pad'], conv['stride'])
            if index % 2 == 1:  # a pooling layer follows every second convolution
                height, width = _pool_output_size(height), _pool_output_size(width)
        shapes.append((channels * height * width, hidden_size))
        shapes.append((hidden_size, output_size))
        return shapes

    def _build_layers(self):
        p = self.params
        layers = []
        for index, conv in enumerate(self.conv_params, 1):
            # conv - relu as one fused layer (the same function, one pass through memory)
            layers.append(Convolution(p[f"W{index}"], p[f"b{index}"], conv['stride'], conv['pad'], relu=True))
            if index % 2 == 0:
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        layers += [Affine(p["W7"], p["b7"]), Relu(), Dropout(0.5, rng=self.rng),
                   Affine(p["W8"], p["b8"]), Dropout(0.5, rng=self.rng)]
        self.layers = layers
        self.last_layer = SoftmaxWithLoss()
        param_layers = [layer for layer in layers if isinstance(layer, (Convolution, Affine))]
        self._param_layers = dict(enumerate(param_layers, 1))


class SimpleConvNet(_ConvNet):
    """Chapter 7's CNN: conv - relu - pool - affine - relu - affine - softmax.

    Weights are drawn from N(0, weight_init_std^2); biases start at zero.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01,
                 dtype=np.float32, seed=None):
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.conv_param = conv_param
        channels, height, width = input_dim
        filter_num, size = conv_param['filter_num'], conv_param['filter_size']
        conv_h = _conv_output_size(height, size, conv_param['pad'], conv_param['stride'])
        conv_w = _conv_output_size(width, size, conv_param['pad'], conv_param['stride'])
        pooled = filter_num * _pool_output_size(conv_h) * _pool_output_size(conv_w)
        shapes = [(filter_num, channels, size, size), (pooled, hidden_size),
                  (hidden_size, output_size)]
        self.params = {}
        for index, shape in enumerate(shapes, 1):
            weight = weight_init_std * self.rng.standard_normal(shape)
            self.params[f"W{index}"] = weight.astype(self.dtype)
            self.params[f"b{index}"] = np.zeros(_fan_in_out(shape)[1], self.dtype)
        self._build_layers()

    def _build_layers(self):
        p, conv = self.params, self.conv_param
        conv_layer = Convolution(p["W1"], p["b1"], conv['stride'], conv['pad'])
        hidden, output = Affine(p["W2"], p["b2"]), Affine(p["W3"], p["b3"])
        self.layers = [conv_layer, Relu(), Pooling(pool_h=2, pool_w=2, stride=2),
                       hidden, Relu(), output]
        self.last_layer = SoftmaxWithLoss()
        self._param_layers = {1: conv_layer, 2: hidden, 3: output}
