"""Sequential as a classifier: deepnet.nn's container of layers in order, with predict, loss, files.

``Sequential(*layers)`` is both a layer (e.g. the body of a ``Residual``: the container,
deepnet.nn.containers.Sequential) and a classifier: predict, loss, gradient, accuracy,
parameter and model files.  Its parameters are named
hierarchically after the layers' positions ("0.W", "3.body.1.gamma"); the book's nets keep
the book's names (W1, b1, ... W8, b8) through ``aliases``.  ``NamedModel`` is the base of
the models a constructor builds from settings (DeepConvNet, ResNet...).
"""

from __future__ import annotations
import copy
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from numpy.typing import ArrayLike, DTypeLike
import json
import os

import numpy as np

from .. import _array, io
from .._dtypes import is_bfloat16
from ..layers import BatchNormalization, Dropout, Layer, SoftmaxWithLoss
from ..nn import containers
from ..nn.classifier import Classifier
from .limits import _short
from ..functional import Array

# A file system path.
PathLike = Union[str, "os.PathLike[str]"]

# A model file's layout: Sequential.save writes it, deepnet.models.files.load_model reads it.
SPEC_KEY = "__model_spec__"  # the entry of a model file that holds the JSON spec
BUFFER_PREFIX = "buffers/"  # the entries of a model file that hold the buffers

# Describing a model as data (layer_spec, model_spec) and building one from data (build)
# need every named model, and those are Sequentials: deepnet.models.spec imports this module,
# so this module cannot import it.  It puts the three functions here when it loads, and it
# always has by the time a model exists (deepnet.models, imported before any of its
# modules, imports it).  deepnet.models.cost puts ``summary`` here the same way.
_ARCHITECTURE: dict[str, Callable[..., Any]] = {}


class Sequential(containers.Sequential, Classifier):
    """Layers applied in order (deepnet.nn.containers.Sequential) as a classifier: class
    scores followed by softmax cross-entropy; predict, loss, gradient, accuracy, parameter
    and model files.

    ``params`` holds every parameter (frozen layers' too), ``grads`` only those of
    trainable layers: a layer (or container) with ``trainable = False`` contributes no
    gradients, so optimizers leave it alone.

    Parameters
    ----------
    *layers : Layer
        The layers, applied in order.
    rng : numpy.random.Generator, optional
        The model's generator (default: a fresh one).
    aliases : dict, optional
        Public names of parameters: hierarchical name -> name.
    """

    on_gpu = False
    spec_name = None  # a container: deepnet.models.spec builds it, and the models (MODELS)

    def __init__(
        self, *layers: Layer, rng: Optional[np.random.Generator] = None, aliases: Optional[Dict[str, str]] = None
    ) -> None:
        super().__init__(*layers)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.aliases = dict(aliases or {})  # hierarchical name -> public name
        self.last_layer = SoftmaxWithLoss()

    def config(self) -> Dict[str, Any]:
        return {"layers": [_ARCHITECTURE["layer_spec"](layer) for layer in self.layers]}

    def _public_name(self, name: str) -> str:
        return self.aliases.get(name, name)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of the parameters (float32 for a net without any)."""
        for _, layer in self.named_layers():
            for value in layer.params.values():
                return np.dtype(value.dtype)
        return np.dtype(np.float32)

    def dropout_layers(self) -> List[Dropout]:
        return [layer for _, layer in self.named_layers() if isinstance(layer, Dropout)]

    def batch_norm_layers(self) -> List[BatchNormalization]:
        return [layer for _, layer in self.named_layers() if isinstance(layer, BatchNormalization)]

    # -- inference and training -----------------------------------------------------------

    def predict(self, x: ArrayLike, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        """Class scores (before softmax) for a batch ``x`` (``train`` not given: the mode of
        train()/eval(), inference by default)."""
        on_device = self._to_device(x).astype(self.dtype, copy=False)
        return self.forward(on_device, self._mode(train, train_flg))

    def loss(self, x: ArrayLike, t: ArrayLike, train: bool = True) -> float:
        """Cross-entropy loss of a forward pass (training mode by default: dropout active,
        batch statistics in BN)."""
        y = self.predict(x, train=train)
        return self.last_layer.forward(y, self._to_device(t))

    def loss_and_gradient(self, x: ArrayLike, t: ArrayLike, loss_scale: float = 1.0) -> Tuple[float, Dict[str, Array]]:
        """Loss of one training-mode forward pass and the gradients of its backward pass
        (of ``loss_scale`` times the loss: data-parallel training weights each rank's share)."""
        loss = self.loss(x, t)
        self.backward(self.last_layer.backward(loss_scale), input_gradient=False)
        return loss, self.grads

    def gradient(self, x: ArrayLike, t: ArrayLike) -> Dict[str, Array]:
        """Gradients of the loss by backpropagation (trainable parameters only)."""
        return self.loss_and_gradient(x, t)[1]

    def summary(self, input_shape: Optional[Sequence[int]] = None) -> None:
        """Print a table of the layers (output shape, parameters, multiply-adds per image)
        and the totals, as Keras's summary() does (deepnet.models.summary returns it)."""
        print(_ARCHITECTURE["summary"](self, input_shape))

    # -- random state (dropout masks), for bit-exact resume --------------------------------

    def random_state(self) -> List[Mapping[str, Any]]:
        """The state of every generator the net draws from (its dropout masks), as JSON data."""
        return [_generator_state(layer.rng) for layer in self.dropout_layers()] + [_generator_state(self.rng)]

    def set_random_state(self, states: Sequence[Mapping[str, Any]]) -> None:
        generators = [layer.rng for layer in self.dropout_layers()] + [self.rng]
        if len(states) != len(generators):
            raise ValueError(f"random state for {len(states)} generators, the net has {len(generators)}")
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state

    # -- parameter files ------------------------------------------------------------------

    def spec(self) -> Dict[str, Any]:
        """The architecture as JSON-ready data (``build(spec)`` makes a new net of it)."""
        return _ARCHITECTURE["model_spec"](self)

    def save(self, path: PathLike) -> Any:
        """Write a self-describing model file (parameters, buffers, JSON spec); return the path."""
        arrays = self.named_arrays()
        arrays[SPEC_KEY] = np.frombuffer(json.dumps(self.spec()).encode(), dtype=np.uint8)
        return io.save_params(path, arrays)

    def save_params(self, path: PathLike) -> Any:
        """Write the parameters alone to an ``.npz`` file (atomically); return the path written."""
        return io.save_params(path, self.params)

    def load_params(
        self, path: PathLike, only: Union[None, str, Sequence[str]] = None, strict: bool = True
    ) -> List[str]:
        """Load parameters (and buffers, if the file has them) from a model file, a
        parameter ``.npz`` or the book's ``.pkl``; see ``set_params`` for ``only``/``strict``.
        Returns the names loaded.  Names, dtypes and shapes are checked against this net
        from the file's headers before any array is read."""
        expected = {name: value.shape for name, value in self.named_arrays().items()}
        only = [only] if isinstance(only, str) else only
        if only is not None:
            expected = {name: shape for name, shape in expected.items() if _matches(name, only)}
        optional = {SPEC_KEY} | {name for name in expected if name.startswith(BUFFER_PREFIX)}
        arrays = io.read_params(path, {**expected, SPEC_KEY: None}, strict=strict and only is None, optional=optional)
        arrays.pop(SPEC_KEY, None)
        return self.set_params(arrays, source=os.fspath(path), only=only, strict=strict)

    def set_params(
        self,
        arrays: Dict[str, Any],
        source: str = "parameters",
        only: Union[None, str, Sequence[str]] = None,
        strict: bool = True,
    ) -> List[str]:
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
                raise ValueError(
                    f"{source}: parameter {_short(name)} has shape {tuple(value.shape)}, "
                    f"the network expects {tuple(expected)}"
                )
            if np.dtype(value.dtype).kind != "f" and not is_bfloat16(value.dtype):
                raise ValueError(
                    f"{source}: parameter {_short(name)} has dtype {value.dtype}, expected "
                    "floating point (float16, bfloat16, float32 or float64)"
                )
        converted = {
            name: self._to_device(_array.to_cpu(arrays[name]).astype(targets[name].dtype, copy=False)) for name in names
        }
        for name in names:
            targets[name][...] = converted[name]
        return names

    def named_arrays(self) -> Dict[str, Array]:
        """Every array a parameter file can set: parameters, and buffers as ``buffers/<name>``."""
        targets = dict(self.params)
        targets.update({BUFFER_PREFIX + name: value for name, value in self.buffers.items()})
        return targets

    # -- devices and dtypes ---------------------------------------------------------------

    def to_gpu(self) -> Sequential:
        """Move the parameters and buffers to the GPU (CuPy); predict moves the inputs."""
        self._move(_array.to_gpu)
        self.on_gpu = True
        return self

    def to_cpu(self) -> Sequential:
        """Move the parameters and buffers back to host memory."""
        self._move(_array.to_cpu)
        self.on_gpu = False
        return self

    def _move(self, move: Callable[[Any], Any]) -> None:
        for _, layer in self.named_layers():
            if not isinstance(layer, containers.Sequential):  # their arrays are their layers'
                layer.params = {name: move(value) for name, value in layer.params.items()}
                layer.buffers = {name: move(value) for name, value in layer.buffers.items()}

    def astype(self, dtype: DTypeLike) -> Sequential:
        """A copy of this net computing in ``dtype`` (e.g. float16 for inference)."""
        clone = _ARCHITECTURE["build"](self.spec(), dtype=dtype, rng=copy.deepcopy(self.rng))
        clone.set_params(self.named_arrays())
        if self.on_gpu:
            clone.to_gpu()
        return clone

    def _to_device(self, a: Any) -> Any:
        """``a`` on the device the parameters live on."""
        return _array.to_gpu(a) if self.on_gpu else _array.to_cpu(a)


def _matches(name: str, selection: Sequence[str]) -> bool:
    """``name`` (a parameter, or ``buffers/<name>``) is one of ``selection``'s names or
    lies under one of its prefixes ("3." or "3")."""
    name = name.removeprefix(BUFFER_PREFIX)
    return any(
        name == item or (item.endswith(".") and name.startswith(item)) or name.startswith(item + ".")
        for item in selection
    )


def _generator_state(generator: np.random.Generator) -> Mapping[str, Any]:
    return generator.bit_generator.state


class NamedModel(Sequential):
    """A model built by a constructor (DeepConvNet, ResNet...): ``self._config`` holds the
    constructor's settings, which describe it as long as its layers are what they built."""

    _config: Dict[str, Any]

    def config(self) -> Dict[str, Any]:
        return self._config
