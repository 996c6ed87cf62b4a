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

Specs and model files are untrusted data.  Before anything is allocated or drawn, ``build``
and ``load_model`` check every entry and setting (a named model's config too), and bound the
parameters (MAX_PARAMETERS), the layers (MAX_LAYERS), the nesting (MAX_NESTING), the spec's
bytes (MAX_SPEC_BYTES) and the work for one image (``check_cost``: MAX_ACTIVATION values a
layer output, MAX_WORK multiply-adds), walking a skeleton of the model whose arrays take no
memory.  Loading never draws random weights: the file's arrays are checked against the
skeleton from their headers, then copied into a model of zeros.
"""
import contextlib
import contextvars
import copy
import json
import math
import os
import reprlib

import numpy as np

from . import _array, io
from ._dtypes import FLOAT_DTYPES, compute_dtype
from .layers import (Affine, BatchNormalization, Convolution, Dropout, Flatten, GlobalAveragePooling,
                     Layer, Pooling, Relu, Residual, Sigmoid, SoftmaxWithLoss, _pair)

__all__ = ["Sequential", "DeepConvNet", "SimpleConvNet", "ResNet", "VGG", "build", "load_model", "describe",
           "check_cost", "input_shape", "model_spec", "fold_batch_norm", "MODELS"]

SPEC_KEY = "__model_spec__"  # the entry of a model file that holds the JSON spec
BUFFER_PREFIX = "buffers/"   # the entries of a model file that hold the buffers
MAX_PARAMETERS = 1 << 28     # a spec asking for more (1 GiB of float32) is refused
MAX_NESTING = 32             # containers inside containers: deeper specs are refused
MAX_LAYERS = 10_000          # layers and containers of a spec, named models' layers included
MAX_SPEC_BYTES = 1 << 20     # a JSON spec (a spec file, a model file's entry) larger than this is refused
MAX_DIMENSION = 1 << 16      # any size in a named model's config (channels, widths, input height...)
MAX_ACTIVATION = 1 << 23     # values of one layer's output for one image (64 MiB in float64)
MAX_WORK = 10 ** 10          # multiply-adds (and pooling compares) for one image
DEFAULT_INPUT = (1, 28, 28)  # the input of a model that does not declare one (MNIST)


# -- initialisation -------------------------------------------------------------------------

# While build() runs: the parameters and layers it may still make.  Every parameter of every
# net is allocated through the functions below, which charge it here first, so a spec from a
# file cannot make deepnet allocate more than MAX_PARAMETERS.
_parameter_budget = contextvars.ContextVar("deepnet_parameter_budget", default=None)

# How the functions below fill the parameters: "random" (a new model), "zeros" (a model
# whose parameters are about to be loaded: nothing is drawn) or "shapes" (a skeleton that
# only says the shapes: read-only zero-strided arrays that take no memory).
_init_mode = contextvars.ContextVar("deepnet_init_mode", default="random")


def _charge(shape):
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
        raise ValueError(f"a parameter of shape {_short(tuple(shape))}: sizes must be ints >= 0")
    budget = _parameter_budget.get()
    if budget is not None:
        budget["parameters"] -= math.prod(shape)
        if budget["parameters"] < 0:
            raise ValueError(f"the architecture asks for more than {MAX_PARAMETERS} parameters")


def _charge_layers(count):
    budget = _parameter_budget.get()
    if budget is not None:
        budget["layers"] -= count
        if budget["layers"] < 0:
            raise ValueError(f"the architecture has more than {MAX_LAYERS} layers")


@contextlib.contextmanager
def _parameter_limit(limit, layers=MAX_LAYERS):
    token = _parameter_budget.set({"parameters": limit, "layers": layers})
    try:
        yield
    finally:
        _parameter_budget.reset(token)


@contextlib.contextmanager
def _initialised(mode):
    token = _init_mode.set(mode)
    try:
        yield
    finally:
        _init_mode.reset(token)


def _placeholder(shape, dtype):
    """A parameter that is not drawn: a skeleton's (no memory) or zeros (to be loaded)."""
    if _init_mode.get() == "shapes":
        return np.broadcast_to(np.zeros((), dtype), tuple(shape))
    return np.zeros(shape, dtype)


_DRAW_CHUNK = 1 << 16  # values drawn at a time (512 kB of float64): a layer costs its own size, not 3x


def _draw(shape, std, rng, dtype):
    """std * N(0, 1) of ``shape`` in ``dtype``, drawn in float64 chunk by chunk (the same
    values as one float64 draw, without its float64 copy of the whole array)."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _DRAW_CHUNK):
        stop = min(start + _DRAW_CHUNK, flat.size)
        flat[start:stop] = std * rng.standard_normal(stop - start)
    return out


def he_normal(shape, rng, dtype):
    """He initialisation (std sqrt(2 / fan_in)), suited to ReLU: the book's choice."""
    _charge(shape)
    if _init_mode.get() != "random":
        return _placeholder(shape, dtype)
    fan_in = math.prod(shape[1:]) if len(shape) == 4 else shape[0]
    return _draw(shape, np.sqrt(2.0 / max(fan_in, 1)), rng, dtype)


def normal(shape, std, rng, dtype):
    _charge(shape)
    if _init_mode.get() != "random":
        return _placeholder(shape, dtype)
    return _draw(shape, std, rng, dtype)


def zeros(size, dtype):
    _charge((size,))
    if _init_mode.get() == "shapes":
        return _placeholder((size,), dtype)
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
    if _init_mode.get() == "shapes":
        stats = compute_dtype(dtype)
        return BatchNormalization(_placeholder((features,), dtype), _placeholder((features,), dtype), momentum,
                                  _placeholder((features,), stats), _placeholder((features,), stats), relu=relu)
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
        labels = [np.argmax(_array.to_cpu(self.predict(x[start:start + batch_size])), axis=1)
                  for start in range(0, len(x), batch_size)]
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)

    def probabilities(self, x, batch_size=100):
        """Softmax probabilities of every sample (NumPy, float64), batch by batch."""
        from .layers import softmax
        rows = [softmax(_array.to_cpu(self.predict(x[start:start + batch_size])).astype(np.float64))
                for start in range(0, len(x), batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot), counting every sample.

        Unlike the book's version, the final partial batch is evaluated too.
        """
        t = _array.to_cpu(t)
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
                raise ValueError(f"{source}: parameter {_short(missing[0])} is missing")
            if unexpected:
                raise ValueError(f"{source}: unexpected parameter {_short(unexpected[0])}")
        names = sorted(given & set(targets))
        if not names and (only is not None or not strict):
            what = f"matches {_short(list(only))}" if only is not None else "has a name this network has"
            raise ValueError(f"{source}: no parameter {what}")
        for name in names:
            value, expected = arrays[name], targets[name].shape
            if tuple(value.shape) != tuple(expected):
                raise ValueError(f"{source}: parameter {_short(name)} has shape {tuple(value.shape)}, "
                                 f"the network expects {tuple(expected)}")
            if np.dtype(value.dtype).kind != "f":
                raise ValueError(f"{source}: parameter {_short(name)} has dtype {value.dtype}, expected "
                                 "floating point (float16, float32 or float64)")
        converted = {name: self._to_device(_array.to_cpu(arrays[name]).astype(targets[name].dtype, copy=False))
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
        self._move(_array.to_gpu)
        self.on_gpu = True
        return self

    def to_cpu(self):
        """Move the parameters and buffers back to host memory."""
        self._move(_array.to_cpu)
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
        return _array.to_gpu(a) if self.on_gpu else _array.to_cpu(a)


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


# -- checking a named model's settings -------------------------------------------------------
#
# A named model's config comes from a file as often as from code: every setting is checked
# (type and range) before any arithmetic or allocation uses it.

def _config_int(model, key, value, minimum=1, maximum=MAX_DIMENSION):
    if (not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_))
            or not minimum <= value <= maximum):
        raise ValueError(f"{model}: {key!r} must be an int from {minimum} to {maximum}, got {_short(value)}")
    return int(value)


def _config_ints(model, key, value, length=None, minimum=1, maximum=MAX_DIMENSION, allow_empty=True):
    if (not isinstance(value, (list, tuple)) or (length is not None and len(value) != length)
            or len(value) > MAX_LAYERS or (not allow_empty and not value)):
        count = f"{length}" if length is not None else ("a non-empty list of" if not allow_empty else "a list of")
        raise ValueError(f"{model}: {key!r} must be {count} ints from {minimum} to {maximum}, got {_short(value)}")
    return [_config_int(model, f"{key}[{i}]", item, minimum, maximum) for i, item in enumerate(value)]


def _config_float(model, key, value, minimum, maximum, include_maximum=True):
    if (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_))
            or not math.isfinite(value) or value < minimum or value > maximum
            or (value == maximum and not include_maximum)):
        interval = f"[{minimum}, {maximum}{']' if include_maximum else ')'}"
        raise ValueError(f"{model}: {key!r} must be a number in {interval}, got {_short(value)}")
    return value


def _config_flag(model, key, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{model}: {key!r} must be true or false, got {_short(value)}")
    return bool(value)


_CONV_PARAM_KEYS = ("filter_num", "filter_size", "pad", "stride")


def _config_conv(model, key, value):
    """A convolution's settings: exactly filter_num, filter_size, pad and stride, as ints."""
    if not isinstance(value, dict) or set(value) != set(_CONV_PARAM_KEYS):
        raise ValueError(f"{model}: {key!r} must be an object with exactly the entries "
                         f"{', '.join(_CONV_PARAM_KEYS)}, got {_short(value)}")
    minimum = {"filter_num": 1, "filter_size": 1, "pad": 0, "stride": 1}
    return {name: _config_int(model, f"{key}.{name}", value[name], minimum[name]) for name in value}


def _config_layers(model, count):
    """A named model of ``count`` layers: refused above MAX_LAYERS, charged to build's budget."""
    if count > MAX_LAYERS:
        raise ValueError(f"{model}: the settings make {count} layers, more than {MAX_LAYERS}")
    _charge_layers(count)


def _next_shape(model, what, layer, shape):
    """``layer``'s output shape for ``shape``, which must leave at least one pixel."""
    out = tuple(layer.output_shape(shape))
    if any(n < 1 for n in out):
        raise ValueError(f"{model}: {what} leaves no output for input_dim {list(shape[1:])} "
                         f"(output shape {out}): its window is larger than the padded input")
    return out


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
        model = "DeepConvNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        conv_params = [_config_conv(model, f"conv_param_{i}", c) for i, c in
                       enumerate((conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                                  conv_param_6), 1)]
        hidden_size = _config_int(model, "hidden_size", hidden_size)
        output_size = _config_int(model, "output_size", output_size)
        batch_norm = _config_flag(model, "batch_norm", batch_norm)
        _config_layers(model, 23 if batch_norm else 16)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv_params = conv_params
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
            shape = _next_shape(model, f"conv_param_{index}", layer, shape)
            if index % 2 == 0:  # a pooling layer follows every second convolution
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
                shape = _next_shape(model, f"the pooling after conv_param_{index}", layers[-1], shape)
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
        model = "SimpleConvNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        conv_param = _config_conv(model, "conv_param", conv_param)
        hidden_size = _config_int(model, "hidden_size", hidden_size)
        output_size = _config_int(model, "output_size", output_size)
        weight_init_std = _config_float(model, "weight_init_std", weight_init_std, 0, 1e3)
        _config_layers(model, 6)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.conv_param = conv_param
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
        conv_shape = _next_shape(model, "conv_param", conv, (1, channels, height, width))
        pooled = math.prod(_next_shape(model, "the pooling after conv_param", pool, conv_shape)[1:])
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
        model = "ResNet"
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        widths = _config_ints(model, "widths", widths, allow_empty=False)
        blocks = _config_ints(model, "blocks", blocks, maximum=MAX_LAYERS, allow_empty=False)
        output_size = _config_int(model, "output_size", output_size)
        if len(widths) != len(blocks):
            raise ValueError(f"ResNet: widths and blocks must be equally long, non-empty lists; got "
                             f"{_short(widths)} and {_short(blocks)}")
        _config_layers(model, 4 + 10 * sum(blocks))  # a block: Residual, body (4), shortcut (2), Relu
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
        model = "VGG"
        if not isinstance(config, (list, tuple)) or len(config) > MAX_LAYERS:
            raise ValueError(f"VGG: 'config' must be a list of positive ints and 'M', got {_short(config)}")
        for index, item in enumerate(config):
            if not (isinstance(item, str) and item == "M"):
                try:
                    _config_int(model, f"config[{index}]", item)
                except ValueError as exc:
                    raise ValueError(f"{exc} (or 'M', a pooling)") from None
        config = [item if isinstance(item, str) else int(item) for item in config]
        input_dim = _config_ints(model, "input_dim", input_dim, 3)
        hidden = _config_ints(model, "hidden", hidden)
        output_size = _config_int(model, "output_size", output_size)
        batch_norm = _config_flag(model, "batch_norm", batch_norm)
        dropout = _config_float(model, "dropout", dropout, 0, 1, include_maximum=False)
        _config_layers(model, 2 * len(config) + 3 * len(hidden) + 1)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self._config = {"config": list(config), "input_dim": list(input_dim), "hidden": list(hidden),
                        "output_size": output_size, "batch_norm": bool(batch_norm), "dropout": dropout}
        layers, channels = [], input_dim[0]
        for item in config:
            if isinstance(item, str):
                layers.append(Pooling(2, 2, stride=2))
            elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                layers.append(conv_layer(channels, item, 3, rng, dtype, relu=not batch_norm))
                if batch_norm:
                    layers.append(batch_norm_layer(item, dtype, relu=True))
                channels = item
            else:
                raise ValueError(f"VGG: config entries must be positive ints or 'M', got {item!r}")
        shape = (1,) + tuple(input_dim)
        for index, layer in enumerate(layers):
            shape = _next_shape(model, f"layer {index} ({type(layer).__name__})", layer, shape)
        features = math.prod(shape[1:])
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
        as_built = _built(named, np.dtype(np.float32), np.random.default_rng(0), "shapes")  # settings alone
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
    MAX_PARAMETERS parameters or MAX_LAYERS layers, or a model whose work for one image is
    out of bounds (see ``check_cost``), is refused before anything is allocated.
    """
    rng = np.random.default_rng(rng)
    dtype = _build_dtype(dtype)
    check_cost(_built(spec, dtype, rng, "shapes"))  # a skeleton first: no memory, nothing drawn
    return _built(spec, dtype, rng, "random")


def _build_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"build: dtype must be float16, float32 or float64, got {dtype}")
    return dtype


def _built(spec, dtype, rng, mode):
    with _parameter_limit(MAX_PARAMETERS), _initialised(mode):
        return _build(spec, dtype, rng, "spec")


def _build(spec, dtype, rng, where, depth=0):
    if depth > MAX_NESTING:
        raise ValueError(f"build: {where}: containers nested more than {MAX_NESTING} deep")
    try:
        _charge_layers(1)
    except ValueError as exc:
        raise ValueError(f"build: {where}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"build: {where} must be an object with a string 'type', got {_short(spec)}")
    kind = spec["type"]
    if kind in MODELS:
        config = _entry(spec, "config", dict, where)
        _check_keys(spec, {"type", "config"}, where)
        try:
            return MODELS[kind](**config, dtype=dtype, seed=rng)
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"build: {where}: bad {kind} config: {str(exc)[:300]}") from None
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
        raise ValueError(f"build: {where}: unknown layer type {_short(kind)}; known: {', '.join(sorted(_KNOWN_TYPES))}")
    keys, make = _LAYER_BUILDERS[kind]
    _check_keys(spec, {"type", *keys}, where)
    return make(spec, dtype, rng, where)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _short(value):
    """repr() cut short: a value from a file (a name, a setting) may be megabytes long."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a deeply nested list
        text = f"an int of {value.bit_length()} bits" if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= 120 else text[:117] + "..."


def _check_keys(spec, allowed, where):
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(f"build: {where} ({spec['type']}): unknown entry {_short(unknown[0])}; "
                         f"allowed: {', '.join(sorted(allowed - {'type'})) or 'none'}")


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
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be an int >= {minimum}, got {_short(value)}")
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
    book's DeepConvNet.  ``dtype`` defaults to the dtype of the stored parameters (float32
    for a model without parameters).

    The file is untrusted: its spec (at most MAX_SPEC_BYTES, no duplicate keys) is checked
    as ``build`` checks one, including the model's work for one image (``check_cost``);
    the file's arrays are checked against the spec from their headers before any is read,
    and nothing is drawn at random, so memory stays a small multiple of the file's arrays.
    Parameters and buffers must be finite and running variances >= 0.
    """
    path = os.fspath(path)
    spec_bytes = io.read_params(path, {SPEC_KEY: None}, strict=False,
                                entry_limits={SPEC_KEY: MAX_SPEC_BYTES}).get(SPEC_KEY)  # the spec alone
    if spec_bytes is None and _is_checkpoint(path):
        raise ValueError(f"{path}: a training checkpoint, not a model file: continue it with "
                         f"'deepnet train --resume --checkpoint {path}', or use the model file the "
                         "run saves (--out)")
    spec = {"type": "DeepConvNet", "config": {}} if spec_bytes is None else _decode_spec(spec_bytes, path)
    try:
        skeleton = _built(spec, np.dtype(np.float32), np.random.default_rng(0), "shapes")  # no memory
        if not isinstance(skeleton, Sequential):
            raise ValueError(f"the spec describes a single {type(skeleton).__name__}, not a model")
        out, _ = check_cost(skeleton)
        if len(out) != 2:
            raise ValueError(f"the model's output for one input of shape {input_shape(skeleton)} has shape "
                             f"{out}; a classifier's is (1, classes): end it with an Affine or Flatten")
        target = None if dtype is None else _build_dtype(dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    expected = {name: value.shape for name, value in skeleton.named_arrays().items()}
    optional = {SPEC_KEY} | {name for name in expected if name.startswith(BUFFER_PREFIX)}
    try:  # names and shapes are checked from the headers before any array is read
        arrays = io.read_params(path, {**expected, SPEC_KEY: None}, strict=True, optional=optional)
    except io.ParameterFileError as exc:
        if spec_bytes is None:
            raise io.ParameterFileError(f"{exc} (a file without an architecture spec is read as the "
                                        "book's DeepConvNet)") from None
        raise
    arrays.pop(SPEC_KEY, None)
    _check_loaded_values(skeleton, arrays, path)
    if target is None:  # the stored parameters' dtype
        stored = [np.dtype(arrays[name].dtype) for name in skeleton.params if name in arrays]
        target = stored[0] if stored and stored[0] in FLOAT_DTYPES else np.dtype(np.float32)
    with _parameter_limit(MAX_PARAMETERS), _initialised("zeros"):  # nothing drawn: the file sets it all
        model = _build(spec, target, np.random.default_rng(), "spec")
    model.set_params(arrays, source=path)
    return model


def _check_loaded_values(skeleton, arrays, path):
    """Refuse parameters or buffers that are not finite, and negative running variances."""
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not all(np.isfinite(part).all() for part in _chunks(value)):
            raise ValueError(f"{path}: {_short(name)} holds NaN or infinite values (a diverged run?)")
    for prefix, layer in skeleton.named_layers():
        if isinstance(layer, BatchNormalization):
            hierarchical = prefix + "running_var"
            name = BUFFER_PREFIX + skeleton.aliases.get(hierarchical, hierarchical)
            value = arrays.get(name)
            if value is not None and value.dtype.kind == "f" and (value < 0).any():
                raise ValueError(f"{path}: {_short(name)} holds a negative variance "
                                 f"({float(value.min()):.3g}); a running variance is >= 0")


def _chunks(array, size=1 << 20):
    """``array``'s values, ``size`` at a time, without copying it (Fortran order too)."""
    flat = array.reshape(-1, order="A")
    return (flat[start:start + size] for start in range(0, flat.size, size))


def _is_checkpoint(path):
    """Whether a file is a Trainer checkpoint (it has the JSON entry "config")."""
    try:
        return "config" in io.read_params(path, {}, strict=False, text=("config",))
    except ValueError:
        return False


def _refuse_duplicates(pairs):
    """json's object_pairs_hook: an object that names a key twice is refused (json would
    silently keep the last value)."""
    keys = set()
    for key, _ in pairs:
        if key in keys:
            raise ValueError(f"the key {_short(key)} appears twice in one object")
        keys.add(key)
    return dict(pairs)


def _parse_spec(data):
    """Spec bytes as data: UTF-8 JSON without duplicate keys (ValueError otherwise)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(str(exc)[:200]) from None


def _decode_spec(spec_bytes, path):
    if spec_bytes.dtype != np.uint8 or spec_bytes.ndim != 1:
        raise ValueError(f"{path}: {SPEC_KEY} must be UTF-8 bytes (uint8), got {spec_bytes.dtype} "
                         f"of shape {spec_bytes.shape}")
    try:
        return _parse_spec(spec_bytes.tobytes())
    except ValueError as exc:
        raise ValueError(f"{path}: the model spec is not valid JSON ({exc})") from None


def load_spec_file(path):
    """A JSON architecture file (``deepnet train --model spec.json``) as spec data."""
    with open(path, "rb") as f:
        text = f.read(MAX_SPEC_BYTES + 1)
    if len(text) > MAX_SPEC_BYTES:
        raise ValueError(f"{path}: a model spec larger than 1 MiB is refused")
    try:
        return _parse_spec(text)
    except ValueError as exc:
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
            std = np.sqrt(_array.to_cpu(following.running_var).astype(acc) + following.EPS)
            scale = _array.to_cpu(following.gamma).astype(acc) / std
            W = _array.to_cpu(layer.W).astype(acc) * scale[:, None, None, None]
            b = (_array.to_cpu(layer.b).astype(acc) - _array.to_cpu(following.running_mean).astype(acc)) * scale \
                + _array.to_cpu(following.beta).astype(acc)
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

def input_shape(model):
    """The shape (batch of one) of the images ``model`` takes: a named model's input_dim;
    for other models MNIST's 28x28 with the channels the first Convolution (or
    BatchNormalization) before any Flatten declares, or the features of a first Affine."""
    if isinstance(model, NamedModel):
        return (1,) + tuple(model.config()["input_dim"])
    for index, layer in enumerate(_leading_layers(model)):
        if isinstance(layer, NamedModel):
            return (1,) + tuple(layer.config()["input_dim"])
        if isinstance(layer, Convolution):
            return (1, int(layer.W.shape[1])) + DEFAULT_INPUT[1:]
        if isinstance(layer, BatchNormalization):
            return (1, int(layer.gamma.shape[0])) + DEFAULT_INPUT[1:]
        if isinstance(layer, Affine) and index == 0:
            return (1, int(layer.W.shape[0]))
        if not isinstance(layer, (Relu, Sigmoid, Dropout, Pooling)):
            break  # a layer that changes the rank (Flatten, an Affine): images of one channel
    return (1,) + DEFAULT_INPUT


def _leading_layers(layer):
    """The layers an input meets first, in order (into containers: a Residual's body)."""
    if isinstance(layer, NamedModel):
        yield layer
    elif isinstance(layer, Sequential):
        for child in layer.layers:
            yield from _leading_layers(child)
    elif isinstance(layer, Residual):
        yield from _leading_layers(layer.body)
        yield layer  # what follows depends on both branches: stop looking there
    else:
        yield layer


def check_cost(model, shape=None):
    """Refuse (ValueError naming the layer) a model that cannot take one image of
    ``shape`` (default ``input_shape(model)``) or whose work on it is out of bounds: a layer
    output (or a convolution's padded input) of more than MAX_ACTIVATION values, more than
    MAX_WORK multiply-adds, a window larger than its padded input, or a pooling window larger
    than its input.  Only shapes are
    walked: nothing runs.  Returns (output shape, multiply-adds)."""
    shape = input_shape(model) if shape is None else tuple(shape)
    strict = isinstance(model, NamedModel) or len(shape) == 2
    walk = _CostWalk(shape, strict)
    out = walk.through(model, "", shape)
    return out, walk.work


class _CostWalk:
    def __init__(self, shape, strict):
        self.image, self.strict, self.work = shape, strict, 0

    def fail(self, where, layer, message):
        name = f"layer {where.rstrip('.')} ({type(layer).__name__})" if where else f"the {type(layer).__name__}"
        raise ValueError(f"{name}: {message} (for one input of shape {self.image})")

    def values(self, where, layer, shape, what="output"):
        if any(n < 1 for n in shape[1:]):
            self.fail(where, layer, f"no {what} (shape {shape}): its window is larger than the padded input")
        if math.prod(shape) > MAX_ACTIVATION:
            self.fail(where, layer, f"its {what} of shape {shape} has {math.prod(shape)} values, "
                                    f"more than {MAX_ACTIVATION} (64 MiB in float64)")

    def add_work(self, where, layer, work):
        self.work += work
        if self.work > MAX_WORK:
            self.fail(where, layer, f"the model needs more than {MAX_WORK:.0e} multiply-adds for one image")

    def spatial(self, where, layer, shape, channels=None):
        if len(shape) != 4:
            self.fail(where, layer, f"needs images (N, C, H, W), gets shape {shape}")
        if channels is not None and shape[1] != channels:
            self.fail(where, layer, f"expects {channels} channels, gets {shape[1]} (shape {shape})")

    def through(self, layer, where, shape):
        if isinstance(layer, Sequential):
            for index, child in enumerate(layer.layers):
                shape = self.through(child, f"{where}{index}.", shape)
            return shape
        if isinstance(layer, Residual):
            out = self.through(layer.body, where + "body.", shape)
            skip = shape if layer.shortcut is None else self.through(layer.shortcut, where + "shortcut.", shape)
            if len(out) != len(skip) or out[1] != skip[1] or (self.strict and out != skip):
                self.fail(where, layer, f"the body gives shape {out} but the shortcut {skip}")
            return out
        if isinstance(layer, Convolution):
            FN, C, kh, kw = (int(n) for n in layer.W.shape)
            self.spatial(where, layer, shape, C)
            (ph, pw) = _pair(layer.pad)
            self.values(where, layer, (1, C, shape[2] + 2 * ph, shape[3] + 2 * pw), "padded input")
            out = tuple(layer.output_shape(shape))
            self.values(where, layer, out)
            self.values(where, layer, (1, C * kh * kw, out[2], out[3]), "column matrix")
            self.add_work(where, layer, math.prod(out[1:]) * C * kh * kw)
            return out
        if isinstance(layer, Pooling):
            self.spatial(where, layer, shape)
            if layer.pool_h > shape[2] or layer.pool_w > shape[3]:
                self.fail(where, layer, f"its {layer.pool_h}x{layer.pool_w} window is larger than its "
                                        f"{shape[2]}x{shape[3]} input")
            ph, pw = _pair(layer.pad)
            self.values(where, layer, (1, shape[1], shape[2] + 2 * ph, shape[3] + 2 * pw), "padded input")
            out = tuple(layer.output_shape(shape))
            self.values(where, layer, out)
            self.add_work(where, layer, math.prod(out[1:]) * layer.pool_h * layer.pool_w)
            return out
        if isinstance(layer, Affine):
            n_in, n_out = (int(n) for n in layer.W.shape)
            if len(shape) < 2:
                self.fail(where, layer, f"needs a batch of samples, gets shape {shape}")
            features = math.prod(shape[1:])
            if features != n_in and self.strict:
                self.fail(where, layer, f"expects {n_in} features, gets {features} (shape {shape})")
            self.add_work(where, layer, n_in * n_out)
            out = (shape[0], n_out)
            self.values(where, layer, out)
            return out
        if isinstance(layer, BatchNormalization):
            if len(shape) not in (2, 4) or shape[1] != layer.gamma.shape[0]:
                self.fail(where, layer, f"expects (N, {layer.gamma.shape[0]}) or (N, {layer.gamma.shape[0]}, H, W) "
                                        f"input, gets shape {shape}")
            return shape
        if isinstance(layer, GlobalAveragePooling):
            self.spatial(where, layer, shape)
        out = tuple(layer.output_shape(shape))
        self.values(where, layer, out)
        return out


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
