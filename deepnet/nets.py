"""Networks built from ``deepnet.layers``: Sequential, the book's nets, ResNet and VGG, and
self-describing model files.

``Sequential(*layers)`` is both a layer (it nests, e.g. as the body of a ``Residual``) and a
classifier: predict, loss, gradient, accuracy, parameter files.  Its parameters are
named hierarchically after the layers' positions ("0.W", "3.body.1.gamma"); the book's
nets keep the book's names (W1, b1, ... W8, b8) through ``aliases``.

A model file (``model.save(path)``) is an ``.npz`` holding the parameters, the buffers
(BatchNormalization's running statistics) and the architecture as a JSON spec, stored as
UTF-8 bytes: data, never pickle.  ``load_model(path)`` rebuilds the model from it without
code; it also reads a plain parameter file (``save_params``, the book's ``.pkl``) as the
book's DeepConvNet.
"""
import contextlib
import contextvars
import copy
import json
import math
import os

import numpy as np

from . import _cuda, io
from .layers import (Affine, BatchNormalization, Convolution, Dropout, Flatten, GlobalAveragePooling,
                     Layer, Pooling, Relu, Residual, Sigmoid, SoftmaxWithLoss, _pair)

__all__ = ["Sequential", "DeepConvNet", "SimpleConvNet", "ResNet", "VGG", "build", "load_model", "describe",
           "model_spec", "fold_batch_norm", "MODELS"]

SPEC_KEY = "__model_spec__"  # the entry of a model file that holds the JSON spec
BUFFER_PREFIX = "buffers/"   # the entries of a model file that hold the buffers
MAX_PARAMETERS = 1 << 28     # a spec asking for more (1 GiB of float32) is refused
MAX_NESTING = 32             # containers inside containers: deeper specs are refused


# -- initialisation -------------------------------------------------------------------------

# While build() runs: the parameters it may still allocate.  Every parameter of every net
# is allocated through the functions below, which charge it here first, so a spec from a
# file cannot make deepnet allocate more than MAX_PARAMETERS.
_parameter_budget = contextvars.ContextVar("deepnet_parameter_budget", default=None)


def _charge(shape):
    budget = _parameter_budget.get()
    if budget is not None:
        budget[0] -= math.prod(shape)
        if budget[0] < 0:
            raise ValueError(f"the architecture asks for more than {MAX_PARAMETERS} parameters")


@contextlib.contextmanager
def _parameter_limit(limit):
    token = _parameter_budget.set([limit])
    try:
        yield
    finally:
        _parameter_budget.reset(token)


def he_normal(shape, rng, dtype):
    """He initialisation (std sqrt(2 / fan_in)), suited to ReLU: the book's choice."""
    _charge(shape)
    fan_in = math.prod(shape[1:]) if len(shape) == 4 else shape[0]
    return (np.sqrt(2.0 / max(fan_in, 1)) * rng.standard_normal(shape)).astype(dtype)


def normal(shape, std, rng, dtype):
    _charge(shape)
    return (std * rng.standard_normal(shape)).astype(dtype)


def zeros(size, dtype):
    _charge((size,))
    return np.zeros(size, dtype)


def conv_layer(in_channels, filters, kernel, rng, dtype, stride=1, pad=None, relu=False):
    """A He-initialised Convolution; pad defaults to "same" for odd kernels."""
    pad = kernel // 2 if pad is None else pad
    return Convolution(he_normal((filters, in_channels, kernel, kernel), rng, dtype),
                       zeros(filters, dtype), stride, pad, relu=relu)


def affine_layer(in_features, out_features, rng, dtype):
    return Affine(he_normal((in_features, out_features), rng, dtype), zeros(out_features, dtype))


def batch_norm_layer(features, dtype, momentum=0.9, relu=False):
    _charge((4, features))  # gamma, beta and the two running statistics
    return BatchNormalization(np.ones(features, dtype), np.zeros(features, dtype), momentum, relu=relu)


# -- Sequential: a container and a classifier ------------------------------------------------

class Sequential(Layer):
    """Layers applied in order; as a model, class scores followed by softmax cross-entropy.

    ``params`` holds every parameter (frozen layers' too), ``grads`` only those of
    trainable layers: a layer (or container) with ``trainable = False`` contributes no
    gradients, so optimizers leave it alone.
    """

    on_gpu = False

    def __init__(self, *layers, rng=None, aliases=None):
        # No Layer.__init__: params, grads and buffers are gathered from the layers.
        self.layers = list(layers)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.aliases = dict(aliases or {})  # hierarchical name -> public name
        self.last_layer = SoftmaxWithLoss()

    # -- the layer contract ---------------------------------------------------------------

    def children(self):
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def forward(self, x, train=False, *, train_flg=None):
        """The layers in order.  A Convolution followed by a 2x2, stride-2 Pooling runs as
        one call (Convolution.forward_pooled), which the compiled CPU backend fuses so that
        the full-size output never reaches memory (see F.conv2d_max_pool2d for where it
        makes the two calls); in training it keeps what the fused backward pass needs."""
        train = train if train_flg is None else train_flg
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            following = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if (isinstance(layer, Convolution) and isinstance(following, Pooling)
                    and following.fuses_after_convolution()):
                x = layer.forward_pooled(x, following, train)
                i += 2
            else:
                x = layer.forward(x, train)
                i += 1
        return x

    def backward(self, dout, input_gradient=True):
        """The layers' backward passes in reverse order; the gradient of the input.  With
        input_gradient=False a first Convolution (or Sequential) skips it and returns None:
        training never uses it, and it cost a third of DeepConvNet's first layer.  A
        Convolution followed by a 2x2, stride-2 Pooling runs both backward passes as one
        (Convolution.backward_pooled), as the forward pass fuses them."""
        i = len(self.layers) - 1
        while i >= 0:
            layer = self.layers[i]
            previous = self.layers[i - 1] if i > 0 else None
            if (isinstance(layer, Pooling) and isinstance(previous, Convolution) and layer.argmax is not None
                    and layer.fuses_after_convolution()):
                first = i == 1
                dout = previous.backward_pooled(dout, layer, input_gradient=input_gradient or not first)
                i -= 2
                continue
            if i == 0 and not input_gradient and isinstance(layer, (Convolution, Sequential)):
                return layer.backward(dout, input_gradient=False)
            dout = layer.backward(dout)
            i -= 1
        return dout

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return tuple(input_shape)

    def config(self):
        return {"layers": [layer_spec(layer) for layer in self.layers]}

    # -- parameters by name ---------------------------------------------------------------

    def named_layers(self, prefix="", trainable_only=False):
        """(name prefix, layer) for every layer inside, depth first ("3.body.1.")."""
        for name, layer in self.children():
            if trainable_only and not layer.trainable:
                continue
            yield prefix + name + ".", layer
            if isinstance(layer, Sequential):
                yield from layer.named_layers(prefix + name + ".", trainable_only)
            else:
                yield from _named_children(layer, prefix + name + ".", trainable_only)

    def _collect(self, attribute, trainable_only=False):
        found = {}
        for prefix, layer in self.named_layers(trainable_only=trainable_only):
            for name, value in getattr(layer, attribute).items():
                key = prefix + name
                found[self.aliases.get(key, key)] = value
        return found

    @property
    def params(self):
        """Every parameter, name -> array (the layers' own arrays: update them in place)."""
        return self._collect("params")

    @property
    def grads(self):
        """The gradients of the last backward pass, for trainable parameters only."""
        return self._collect("grads", trainable_only=True)

    @property
    def buffers(self):
        """Saved state that is not trained (BatchNormalization's running statistics)."""
        return self._collect("buffers")

    @property
    def dtype(self):
        """The dtype of the parameters (float32 for a net without any)."""
        for _, layer in self.named_layers():
            for value in layer.params.values():
                return np.dtype(value.dtype)
        return np.dtype(np.float32)

    def dropout_layers(self):
        return [layer for _, layer in self.named_layers() if isinstance(layer, Dropout)]

    def batch_norm_layers(self):
        return [layer for _, layer in self.named_layers() if isinstance(layer, BatchNormalization)]

    # -- inference and training -----------------------------------------------------------

    def predict(self, x, train=False, *, train_flg=None):
        """Class scores (before softmax) for a batch ``x``."""
        x = self._to_device(x).astype(self.dtype, copy=False)
        return self.forward(x, train if train_flg is None else train_flg)

    def loss(self, x, t, train=True):
        """Cross-entropy loss of a forward pass (training mode by default: dropout active,
        batch statistics in BN)."""
        y = self.predict(x, train=train)
        return self.last_layer.forward(y, self._to_device(t))

    def loss_and_gradient(self, x, t, loss_scale=1.0):
        """Loss of one training-mode forward pass and the gradients of its backward pass
        (of ``loss_scale`` times the loss: data-parallel training weights each rank's share)."""
        loss = self.loss(x, t)
        self.backward(self.last_layer.backward(loss_scale), input_gradient=False)
        return loss, self.grads

    def gradient(self, x, t):
        """Gradients of the loss by backpropagation (trainable parameters only)."""
        return self.loss_and_gradient(x, t)[1]

    def classify(self, x, batch_size=100):
        """Predicted class of every sample of ``x`` (a NumPy int array), batch by batch."""
        labels = [np.argmax(_cuda.to_cpu(self.predict(x[start:start + batch_size])), axis=1)
                  for start in range(0, len(x), batch_size)]
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)

    def probabilities(self, x, batch_size=100):
        """Softmax probabilities of every sample (NumPy, float64), batch by batch."""
        from .layers import softmax
        rows = [softmax(_cuda.to_cpu(self.predict(x[start:start + batch_size])).astype(np.float64))
                for start in range(0, len(x), batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot), counting every sample.

        Unlike the book's version, the final partial batch is evaluated too.
        """
        t = _cuda.to_cpu(t)
        if len(x) == 0:
            raise ValueError("accuracy: no samples to evaluate (x is empty)")
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        if len(t) != len(x):
            raise ValueError(f"accuracy: {len(x)} samples but {len(t)} labels")
        return float(np.sum(self.classify(x, batch_size) == t) / len(x))

    # -- random state (dropout masks), for bit-exact resume --------------------------------

    def random_state(self):
        """The state of every generator the net draws from (its dropout masks), as JSON data."""
        return [_generator_state(layer.rng) for layer in self.dropout_layers()] + [_generator_state(self.rng)]

    def set_random_state(self, states):
        generators = [layer.rng for layer in self.dropout_layers()] + [self.rng]
        if len(states) != len(generators):
            raise ValueError(f"random state for {len(states)} generators, the net has {len(generators)}")
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state

    # -- parameter files ------------------------------------------------------------------

    def spec(self):
        """The architecture as JSON-ready data (``build(spec)`` makes a new net of it)."""
        return model_spec(self)

    def save(self, path):
        """Write a self-describing model file (parameters, buffers, JSON spec); return the path."""
        arrays = self.named_arrays()
        arrays[SPEC_KEY] = np.frombuffer(json.dumps(self.spec()).encode(), dtype=np.uint8)
        return io.save_params(path, arrays)

    def save_params(self, path):
        """Write the parameters alone to an ``.npz`` file (atomically); return the path written."""
        return io.save_params(path, self.params)

    def load_params(self, path, only=None, strict=True):
        """Load parameters (and buffers, if the file has them) from a model file, a
        parameter ``.npz`` or the book's ``.pkl``; see ``set_params`` for ``only``/``strict``.
        Returns the names loaded.  Names, dtypes and shapes are checked against this net
        from the file's headers before any array is read."""
        expected = {name: value.shape for name, value in self.named_arrays().items()}
        only = [only] if isinstance(only, str) else only
        if only is not None:
            expected = {name: shape for name, shape in expected.items() if _matches(name, only)}
        optional = {SPEC_KEY} | {name for name in expected if name.startswith(BUFFER_PREFIX)}
        arrays = io.read_params(path, {**expected, SPEC_KEY: None}, strict=strict and only is None,
                                optional=optional)
        arrays.pop(SPEC_KEY, None)
        return self.set_params(arrays, source=os.fspath(path), only=only, strict=strict)

    def set_params(self, arrays, source="parameters", only=None, strict=True):
        """Copy ``arrays`` (name -> array; ``buffers/<name>`` for buffers) into this net.

        ``only``: names or prefixes (e.g. ``["W1", "b1"]`` or ``["0.", "1."]``) to load; the
        rest of the file is ignored (transfer learning).  ``strict``: every selected
        parameter of the net must be in ``arrays`` and nothing else may be; with
        ``strict=False`` the names both have are loaded.  Shapes must always match.
        Everything is checked before anything changes (ValueError naming the parameter),
        so a failed load leaves the net as it was.  Returns the names loaded.
        """
        targets = self.named_arrays()
        only = [only] if isinstance(only, str) else only
        selected = (lambda name: True) if only is None else (lambda name: _matches(name, only))
        wanted = {name for name in targets if selected(name) and not name.startswith(BUFFER_PREFIX)}
        given = {name for name in arrays if selected(name)}
        if strict:
            missing, unexpected = sorted(wanted - given), sorted(given - set(targets))
            if missing:
                raise ValueError(f"{source}: parameter {missing[0]!r} is missing")
            if unexpected:
                raise ValueError(f"{source}: unexpected parameter {unexpected[0]!r}")
        names = sorted(given & set(targets))
        if not names and (only is not None or not strict):
            what = f"matches {list(only)!r}" if only is not None else "has a name this network has"
            raise ValueError(f"{source}: no parameter {what}")
        for name in names:
            value, expected = arrays[name], targets[name].shape
            if tuple(value.shape) != tuple(expected):
                raise ValueError(f"{source}: parameter {name!r} has shape {tuple(value.shape)}, "
                                 f"the network expects {tuple(expected)}")
            if np.dtype(value.dtype).kind != "f":
                raise ValueError(f"{source}: parameter {name!r} has dtype {value.dtype}, expected "
                                 "floating point (float16, float32 or float64)")
        converted = {name: self._to_device(_cuda.to_cpu(arrays[name]).astype(targets[name].dtype, copy=False))
                     for name in names}
        for name in names:
            targets[name][...] = converted[name]
        return names

    def named_arrays(self):
        """Every array a parameter file can set: parameters, and buffers as ``buffers/<name>``."""
        targets = dict(self.params)
        targets.update({BUFFER_PREFIX + name: value for name, value in self.buffers.items()})
        return targets

    # -- devices and dtypes ---------------------------------------------------------------

    def to_gpu(self):
        """Move the parameters and buffers to the GPU (CuPy); predict moves the inputs."""
        self._move(_cuda.to_gpu)
        self.on_gpu = True
        return self

    def to_cpu(self):
        """Move the parameters and buffers back to host memory."""
        self._move(_cuda.to_cpu)
        self.on_gpu = False
        return self

    def _move(self, move):
        for _, layer in self.named_layers():
            if not isinstance(layer, Sequential):
                layer.params = {name: move(value) for name, value in layer.params.items()}
                layer.buffers = {name: move(value) for name, value in layer.buffers.items()}

    def astype(self, dtype):
        """A copy of this net computing in ``dtype`` (e.g. float16 for inference)."""
        clone = build(self.spec(), dtype=dtype, rng=copy.deepcopy(self.rng))
        clone.set_params(self.named_arrays())
        if self.on_gpu:
            clone.to_gpu()
        return clone

    def _to_device(self, a):
        """``a`` on the device the parameters live on."""
        return _cuda.to_gpu(a) if self.on_gpu else _cuda.to_cpu(a)


def _named_children(layer, prefix, trainable_only):
    """named_layers for the children of a non-Sequential container (Residual)."""
    for name, child in layer.children():
        if trainable_only and not child.trainable:
            continue
        yield prefix + name + ".", child
        if isinstance(child, Sequential):
            yield from child.named_layers(prefix + name + ".", trainable_only)
        else:
            yield from _named_children(child, prefix + name + ".", trainable_only)


def _matches(name, selection):
    """``name`` (a parameter, or ``buffers/<name>``) is one of ``selection``'s names or
    lies under one of its prefixes ("3." or "3")."""
    name = name.removeprefix(BUFFER_PREFIX)
    return any(name == item or (item.endswith(".") and name.startswith(item)) or
               name.startswith(item + ".") for item in selection)


def _generator_state(generator):
    return generator.bit_generator.state


def _book_aliases(net, names):
    """Map the hierarchical names of the parameters, in order, onto the book's names; the
    running statistics of a BN layer whose gamma is "gamma3" become "running_mean3" and
    "running_var3"."""
    hierarchical = [prefix + name for prefix, layer in net.named_layers() for name in layer.params]
    if len(hierarchical) != len(names):
        raise AssertionError(f"{len(hierarchical)} parameters for {len(names)} names")
    aliases = dict(zip(hierarchical, names))
    for prefix, layer in net.named_layers():
        if isinstance(layer, BatchNormalization):
            index = aliases[prefix + "gamma"].removeprefix("gamma")
            aliases.update({prefix + name: f"{name}{index}" for name in layer.buffers})
    return aliases


class NamedModel(Sequential):
    """A model built by a constructor (DeepConvNet, ResNet...): ``self._config`` holds the
    constructor's settings, which describe it as long as its layers are what they built."""

    def config(self):
        return self._config


# -- the book's networks ------------------------------------------------------------------

_BOOK_CONVS = (
    {'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
    {'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
    {'filter_num': 32, 'filter_size': 3, 'pad': 1, 'stride': 1},
    {'filter_num': 32, 'filter_size': 3, 'pad': 2, 'stride': 1},
    {'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
    {'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
)


class DeepConvNet(NamedModel):
    """Chapter 8's deep CNN for MNIST::

        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        affine - relu - dropout - affine - dropout - softmax

    Weights use He initialisation (std sqrt(2 / fan_in)); biases start at zero.
    ``seed`` seeds ``self.rng``, which draws the initial weights and the dropout masks.
    ``batch_norm=True`` is the BN variant: every convolution and the hidden affine layer
    are followed by BatchNormalization (parameters gamma1..gamma7, beta1..beta7).
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1=_BOOK_CONVS[0], conv_param_2=_BOOK_CONVS[1], conv_param_3=_BOOK_CONVS[2],
                 conv_param_4=_BOOK_CONVS[3], conv_param_5=_BOOK_CONVS[4], conv_param_6=_BOOK_CONVS[5],
                 hidden_size=50, output_size=10, dtype=np.float32, seed=None, batch_norm=False):
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv_params = [dict(c) for c in (conv_param_1, conv_param_2, conv_param_3,
                                              conv_param_4, conv_param_5, conv_param_6)]
        self._config = {"input_dim": list(input_dim), "hidden_size": hidden_size, "output_size": output_size,
                        "batch_norm": bool(batch_norm),
                        **{f"conv_param_{i}": c for i, c in enumerate(self.conv_params, 1)}}
        channels, height, width = input_dim
        layers, names = [], []
        shape = (1, channels, height, width)
        for index, conv in enumerate(self.conv_params, 1):
            # conv - relu as one fused layer (one pass through memory); with BN, conv - BN - relu
            layer = conv_layer(shape[1], conv['filter_num'], conv['filter_size'], rng, dtype,
                               conv['stride'], conv['pad'], relu=not batch_norm)
            layers.append(layer)
            names += [f"W{index}", f"b{index}"]
            if batch_norm:  # conv - BN+relu (fused)
                layers.append(batch_norm_layer(conv['filter_num'], dtype, relu=True))
                names += [f"gamma{index}", f"beta{index}"]
            shape = layer.output_shape(shape)
            if index % 2 == 0:  # a pooling layer follows every second convolution
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
                shape = layers[-1].output_shape(shape)
        layers.append(affine_layer(math.prod(shape[1:]), hidden_size, rng, dtype))
        names += ["W7", "b7"]
        if batch_norm:
            layers.append(batch_norm_layer(hidden_size, dtype, relu=True))
            names += ["gamma7", "beta7"]
        else:
            layers.append(Relu())
        layers += [Dropout(0.5, rng=rng), affine_layer(hidden_size, output_size, rng, dtype),
                   Dropout(0.5, rng=rng)]
        names += ["W8", "b8"]
        super().__init__(*layers, rng=rng)
        self.aliases = _book_aliases(self, names)

class SimpleConvNet(NamedModel):
    """Chapter 7's CNN: conv - relu - pool - affine - relu - affine - softmax.

    Weights are drawn from N(0, weight_init_std^2); biases start at zero.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01,
                 dtype=np.float32, seed=None):
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv_param = dict(conv_param)
        self._config = {"input_dim": list(input_dim), "conv_param": self.conv_param,
                        "hidden_size": hidden_size, "output_size": output_size,
                        "weight_init_std": weight_init_std}
        channels, height, width = input_dim
        filters, size = conv_param['filter_num'], conv_param['filter_size']

        def weights(*shape):
            return normal(shape, weight_init_std, rng, dtype)
        conv = Convolution(weights(filters, channels, size, size), zeros(filters, dtype),
                           conv_param['stride'], conv_param['pad'])
        pool = Pooling(pool_h=2, pool_w=2, stride=2)
        pooled = math.prod(pool.output_shape(conv.output_shape((1, channels, height, width)))[1:])
        layers = [conv, Relu(), pool,
                  Affine(weights(pooled, hidden_size), zeros(hidden_size, dtype)), Relu(),
                  Affine(weights(hidden_size, output_size), zeros(output_size, dtype))]
        super().__init__(*layers, rng=rng)
        self.aliases = _book_aliases(self, ["W1", "b1", "W2", "b2", "W3", "b3"])

# -- ResNet and VGG -----------------------------------------------------------------------

def basic_block(in_channels, channels, stride, rng, dtype):
    """ResNet's basic block: conv3x3 - BN - relu - conv3x3 - BN, plus the shortcut, then relu.

    The shortcut is the identity where the shapes agree, else a strided 1x1 convolution
    with BN (a projection).
    """
    body = Sequential(conv_layer(in_channels, channels, 3, rng, dtype, stride=stride),
                      batch_norm_layer(channels, dtype, relu=True),
                      conv_layer(channels, channels, 3, rng, dtype), batch_norm_layer(channels, dtype))
    shortcut = None
    if stride != 1 or in_channels != channels:
        shortcut = Sequential(conv_layer(in_channels, channels, 1, rng, dtype, stride=stride, pad=0),
                              batch_norm_layer(channels, dtype))
    return [Residual(body, shortcut), Relu()]


class ResNet(NamedModel):
    """A small ResNet for MNIST (He et al. 2016, chapter 8.2.3)::

        conv3x3 - BN - relu - [stage: basic blocks] x len(widths) - global average pool - affine

    Stage s has ``blocks[s]`` basic blocks of ``widths[s]`` channels; every stage after the
    first halves the resolution with a stride-2 first block (28 -> 14 -> 7).  The default,
    widths (16, 32, 64) and two blocks a stage, has 175k parameters.
    """

    def __init__(self, input_dim=(1, 28, 28), widths=(16, 32, 64), blocks=(2, 2, 2), output_size=10,
                 dtype=np.float32, seed=None):
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"ResNet: widths and blocks must be equally long, non-empty lists; got "
                             f"{list(widths)} and {list(blocks)}")
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {"input_dim": list(input_dim), "widths": list(widths), "blocks": list(blocks),
                        "output_size": output_size}
        layers = [conv_layer(input_dim[0], widths[0], 3, rng, dtype), batch_norm_layer(widths[0], dtype, relu=True)]
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                layers += basic_block(channels, width, stride, rng, dtype)
                channels = width
        layers += [GlobalAveragePooling(), affine_layer(channels, output_size, rng, dtype)]
        super().__init__(*layers, rng=rng)

class VGG(NamedModel):
    """A VGG-style net (Simonyan & Zisserman 2014) from a config such as
    ``[16, 16, "M", 32, 32, "M", 64, 64, "M"]``: a number is a 3x3 convolution (pad 1) with
    that many filters and a ReLU (with ``batch_norm``, conv - BN - relu), "M" a 2x2 max-pool.
    Then ``hidden`` fully connected ReLU layers (each followed by dropout when ``dropout`` > 0)
    and the output layer.
    """

    def __init__(self, config=(16, 16, "M", 32, 32, "M", 64, 64, "M"), input_dim=(1, 28, 28),
                 hidden=(50,), output_size=10, batch_norm=False, dropout=0.5, dtype=np.float32, seed=None):
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {"config": list(config), "input_dim": list(input_dim), "hidden": list(hidden),
                        "output_size": output_size, "batch_norm": bool(batch_norm), "dropout": dropout}
        layers, channels = [], input_dim[0]
        for item in config:
            if item == "M":
                layers.append(Pooling(2, 2, stride=2))
            elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                layers.append(conv_layer(channels, item, 3, rng, dtype, relu=not batch_norm))
                if batch_norm:
                    layers.append(batch_norm_layer(item, dtype, relu=True))
                channels = item
            else:
                raise ValueError(f"VGG: config entries must be positive ints or 'M', got {item!r}")
        features = math.prod(Sequential(*layers).output_shape((1,) + tuple(input_dim))[1:])
        for width in hidden:
            layers += [affine_layer(features, width, rng, dtype), Relu()]
            if dropout:
                layers.append(Dropout(dropout, rng=rng))
            features = width
        layers.append(affine_layer(features, output_size, rng, dtype))
        super().__init__(*layers, rng=rng)

MODELS = {"DeepConvNet": DeepConvNet, "SimpleConvNet": SimpleConvNet, "ResNet": ResNet, "VGG": VGG}


# -- specs: architectures as data ---------------------------------------------------------

def layer_spec(layer):
    """A layer as JSON-ready data: {"type": class name, **its config}.  A named model whose
    layers were changed after it was built (a new head, folded BN) is described by its
    layers, not by its constructor's settings."""
    if isinstance(layer, NamedModel):
        named = {"type": type(layer).__name__, "config": layer.config()}
        as_built = build(named)
        if _layers_spec(as_built) == _layers_spec(layer):
            return named
        return {"type": "Sequential", **_layers_spec(layer)}
    if isinstance(layer, Residual):
        return {"type": "Residual", "body": layer_spec(layer.body),
                "shortcut": None if layer.shortcut is None else layer_spec(layer.shortcut)}
    if type(layer) is Sequential:
        return {"type": "Sequential", **_layers_spec(layer)}
    if type(layer).__name__ not in _LAYER_BUILDERS:
        raise ValueError(f"model_spec: a {type(layer).__name__} cannot be described as data; "
                         f"known layers: {', '.join(sorted(_KNOWN_TYPES))}")
    return {"type": type(layer).__name__, **layer.config()}


def _layers_spec(model):
    """A Sequential's layers and aliases as data (what the generic spec holds)."""
    spec = {"layers": [layer_spec(child) for child in model.layers]}
    if model.aliases:
        spec["aliases"] = model.aliases
    return spec


def model_spec(model):
    """The architecture of ``model`` (a Sequential or one of MODELS) as JSON-ready data."""
    return layer_spec(model)


def build(spec, dtype=np.float32, rng=None):
    """A new, freshly initialised model (or layer) of the architecture ``spec`` describes.

    ``spec`` is untrusted data (a model file, a --model spec.json): every entry is checked,
    only the layer and model types of deepnet can be named, and a spec asking for more than
    MAX_PARAMETERS parameters is refused before anything is allocated.
    """
    rng = np.random.default_rng(rng)
    dtype = np.dtype(dtype)
    if dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"build: dtype must be float16, float32 or float64, got {dtype}")
    with _parameter_limit(MAX_PARAMETERS):
        return _build(spec, dtype, rng, "spec")


def _build(spec, dtype, rng, where, depth=0):
    if depth > MAX_NESTING:
        raise ValueError(f"build: {where}: containers nested more than {MAX_NESTING} deep")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"build: {where} must be an object with a string 'type', got {_short(spec)}")
    kind = spec["type"]
    if kind in MODELS:
        config = _entry(spec, "config", dict, where)
        _check_keys(spec, {"type", "config"}, where)
        try:
            return MODELS[kind](**config, dtype=dtype, seed=rng)
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"build: {where}: bad {kind} config: {exc}") from None
    if kind == "Sequential":
        _check_keys(spec, {"type", "layers", "aliases"}, where)
        layers = _entry(spec, "layers", list, where)
        children = [_build(item, dtype, rng, f"{where}.layers[{i}]", depth + 1) for i, item in enumerate(layers)]
        aliases = spec.get("aliases") or {}
        if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in aliases.items()):
            raise ValueError(f"build: {where}.aliases must map names to names")
        return Sequential(*children, rng=rng, aliases=aliases)
    if kind == "Residual":
        _check_keys(spec, {"type", "body", "shortcut"}, where)
        body = _build(spec.get("body"), dtype, rng, where + ".body", depth + 1)
        shortcut = spec.get("shortcut")
        shortcut = None if shortcut is None else _build(shortcut, dtype, rng, where + ".shortcut", depth + 1)
        return Residual(body, shortcut)
    if kind not in _LAYER_BUILDERS:
        raise ValueError(f"build: {where}: unknown layer type {kind!r}; known: {', '.join(sorted(_KNOWN_TYPES))}")
    keys, make = _LAYER_BUILDERS[kind]
    _check_keys(spec, {"type", *keys}, where)
    return make(spec, dtype, rng, where)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(spec, allowed, where):
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(f"build: {where} ({spec['type']}): unknown entry {unknown[0]!r}; "
                         f"allowed: {', '.join(sorted(allowed - {'type'}))}")


def _entry(spec, key, kind, where):
    if key not in spec:
        raise ValueError(f"build: {where} ({spec['type']}): missing entry {key!r}")
    value = spec[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be a {kind.__name__}, got {_short(value)}")
    return value


def _int(spec, key, where, minimum=1):
    value = _entry(spec, key, int, where)
    if value < minimum or value >= 1 << 31:
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be an int >= {minimum}, got {value}")
    return value


def _int_pair(spec, key, where, minimum):
    value = spec.get(key)
    pair = [value, value] if isinstance(value, int) else value
    if (not isinstance(pair, list) or len(pair) != 2 or
            not all(isinstance(v, int) and not isinstance(v, bool) and minimum <= v < 1 << 31 for v in pair)):
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be an int or a pair of ints "
                         f">= {minimum}, got {_short(value)}")
    return tuple(pair)


def _build_convolution(spec, dtype, rng, where):
    C, FN = _int(spec, "in_channels", where, 0), _int(spec, "filters", where, 0)
    kh, kw = _int_pair(spec, "kernel", where, 1)
    return Convolution(he_normal((FN, C, kh, kw), rng, dtype), zeros(FN, dtype),
                       _int_pair(spec, "stride", where, 1), _int_pair(spec, "pad", where, 0),
                       relu=_flag(spec, "relu", where))


def _flag(spec, key, where):
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be true or false, got {_short(value)}")
    return value


def _build_affine(spec, dtype, rng, where):
    n_in, n_out = _int(spec, "in_features", where, 0), _int(spec, "out_features", where, 0)
    return affine_layer(n_in, n_out, rng, dtype)


def _build_pooling(spec, dtype, rng, where):
    return Pooling(_int(spec, "pool_h", where), _int(spec, "pool_w", where),
                   _int_pair(spec, "stride", where, 1), _int_pair(spec, "pad", where, 0))


def _build_batch_norm(spec, dtype, rng, where):
    features = _int(spec, "features", where, 0)
    momentum = spec.get("momentum", 0.9)
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0 <= momentum <= 1:
        raise ValueError(f"build: {where} (BatchNormalization): 'momentum' must be in [0, 1], got {_short(momentum)}")
    return batch_norm_layer(features, dtype, float(momentum), relu=_flag(spec, "relu", where))


def _build_dropout(spec, dtype, rng, where):
    ratio = spec.get("dropout_ratio", 0.5)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio < 1:
        raise ValueError(f"build: {where} (Dropout): 'dropout_ratio' must be in [0, 1), got {_short(ratio)}")
    return Dropout(float(ratio), rng=rng)


def _plain(cls):
    return lambda spec, dtype, rng, where: cls()


# type -> (its entries besides "type", the function that builds it)
_LAYER_BUILDERS = {
    "Convolution": (("in_channels", "filters", "kernel", "stride", "pad", "relu"), _build_convolution),
    "Affine": (("in_features", "out_features"), _build_affine),
    "Pooling": (("pool_h", "pool_w", "stride", "pad"), _build_pooling),
    "BatchNormalization": (("features", "momentum", "relu"), _build_batch_norm),
    "Dropout": (("dropout_ratio",), _build_dropout),
    "Relu": ((), _plain(Relu)),
    "Sigmoid": ((), _plain(Sigmoid)),
    "Flatten": ((), _plain(Flatten)),
    "GlobalAveragePooling": ((), _plain(GlobalAveragePooling)),
}
_KNOWN_TYPES = set(_LAYER_BUILDERS) | set(MODELS) | {"Sequential", "Residual"}


# -- model files --------------------------------------------------------------------------

def load_model(path, dtype=None):
    """The model a file holds, ready to use.

    A model file (``model.save``) is rebuilt from its spec; a plain parameter file
    (``save_params``, ``deepnet train --out``) or the book's ``.pkl`` is taken as the
    book's DeepConvNet.  ``dtype`` defaults to the dtype of the stored parameters.
    """
    path = os.fspath(path)
    spec_bytes = io.read_params(path, {SPEC_KEY: None}, strict=False).get(SPEC_KEY)  # the spec alone
    spec = {"type": "DeepConvNet", "config": {}} if spec_bytes is None else _decode_spec(spec_bytes, path)
    try:
        model = build(spec, dtype=np.float32 if dtype is None else dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(model, Sequential):
        raise ValueError(f"{path}: the spec describes a single {type(model).__name__}, not a model")
    if dtype is None:  # the stored parameters' dtype
        first = next(iter(model.params))
        found = io.read_params(path, {first: None}, strict=False).get(first)
        if found is None:
            if spec_bytes is None and _is_checkpoint(path):
                raise ValueError(f"{path}: a training checkpoint, not a model file: continue it with "
                                 f"'deepnet train --resume --checkpoint {path}', or use the model file the "
                                 "run saves (--out)")
            what = "the book's DeepConvNet" if spec_bytes is None else "the model its spec describes"
            raise ValueError(f"{path}: not a model file of {what}: it has no parameter {first!r}"
                             + (" (and no architecture spec)" if spec_bytes is None else ""))
        stored = np.dtype(found.dtype)
        if stored != model.dtype and stored in (np.float16, np.float32, np.float64):
            model = build(spec, dtype=stored)
    model.load_params(path)
    return model


def _is_checkpoint(path):
    """Whether a file is a Trainer checkpoint (it has the JSON entry "config")."""
    try:
        io.read_params(path, {}, strict=False, text=("config",))
    except ValueError:
        return False
    return True


def _decode_spec(spec_bytes, path):
    if spec_bytes.dtype != np.uint8 or spec_bytes.ndim != 1:
        raise ValueError(f"{path}: {SPEC_KEY} must be UTF-8 bytes (uint8), got {spec_bytes.dtype} "
                         f"of shape {spec_bytes.shape}")
    try:
        return json.loads(spec_bytes.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: the model spec is not valid JSON ({exc})") from None


def load_spec_file(path):
    """A JSON architecture file (``deepnet train --model spec.json``) as spec data."""
    with open(path, "rb") as f:
        text = f.read((1 << 20) + 1)
    if len(text) > 1 << 20:
        raise ValueError(f"{path}: a model spec larger than 1 MiB is refused")
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a JSON model spec ({exc})") from None


# -- inference-time folding ---------------------------------------------------------------

def fold_batch_norm(model):
    """A copy of ``model`` for inference, with every BatchNormalization that directly
    follows a Convolution folded into it: W' = W * gamma / std, b' = (b - mean) * gamma / std + beta,
    and its ReLU (fused, or a Relu right after it) fused into the convolution.  Predictions equal the
    original's in eval mode up to rounding; the copy can no longer be trained as the
    original (its BN layers are gone)."""
    clone = model.astype(model.dtype)
    _fold_in(clone)
    return clone


def _fold_in(container):
    for _, child in container.children():
        _fold_in(child)
    if not isinstance(container, Sequential):
        return
    layers = container.layers
    folded, i = [], 0
    while i < len(layers):
        layer = layers[i]
        following = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Convolution) and not layer.relu and isinstance(following, BatchNormalization):
            acc = np.float64
            std = np.sqrt(_cuda.to_cpu(following.running_var).astype(acc) + following.EPS)
            scale = _cuda.to_cpu(following.gamma).astype(acc) / std
            W = _cuda.to_cpu(layer.W).astype(acc) * scale[:, None, None, None]
            b = (_cuda.to_cpu(layer.b).astype(acc) - _cuda.to_cpu(following.running_mean).astype(acc)) * scale \
                + _cuda.to_cpu(following.beta).astype(acc)
            relu_after = i + 2 < len(layers) and isinstance(layers[i + 2], Relu)
            conv = Convolution(W.astype(layer.W.dtype), b.astype(layer.b.dtype), layer.stride, layer.pad,
                               relu=following.relu or relu_after)
            folded.append(conv)
            i += 3 if relu_after else 2
            continue
        folded.append(layer)
        i += 1
    container.layers = folded
    container.aliases = {}


# -- what a model costs ---------------------------------------------------------------------

def describe(model, input_shape=(1, 1, 28, 28)):
    """Parameters, multiply-adds per image and the receptive field (in input pixels) of the
    last spatial layer, for a model applied to inputs of ``input_shape`` (batch included)."""
    shape, macs, rf = _walk_cost(model, tuple(input_shape), (1, 1))
    return {"parameters": int(sum(p.size for p in model.params.values())),
            "multiply_adds": int(macs // max(input_shape[0], 1)) if input_shape[0] else int(macs),
            "receptive_field": rf[0], "output_shape": shape}


def _walk_cost(layer, shape, field):
    """(output shape, multiply-adds, (receptive field, jump)) through ``layer``."""
    if isinstance(layer, Sequential):
        macs = 0
        for child in layer.layers:
            shape, child_macs, field = _walk_cost(child, shape, field)
            macs += child_macs
        return shape, macs, field
    if isinstance(layer, Residual):
        out, macs, body_field = _walk_cost(layer.body, shape, field)
        if layer.shortcut is not None:
            macs += _walk_cost(layer.shortcut, shape, field)[1]
        return out, macs, body_field
    out = layer.output_shape(shape)
    rf, jump = field
    if isinstance(layer, Convolution):
        FN, C, kh, kw = layer.W.shape
        return out, math.prod(out) * C * kh * kw, (rf + (kh - 1) * jump, jump * _pair(layer.stride)[0])
    if isinstance(layer, Pooling):
        return out, 0, (rf + (layer.pool_h - 1) * jump, jump * _pair(layer.stride)[0])
    if isinstance(layer, Affine):
        return out, out[0] * layer.W.shape[0] * layer.W.shape[1], field
    return out, 0, field
