"""The Layer base class: the layer contract, the registry of layer types, and the generic walks.

Every layer follows one contract:

- ``params``: its own parameters, name -> array (``W``, ``b``, ``gamma``, ``beta``), held by
  reference, so an optimizer that updates them in place is seen by the layer;
- ``grads``: the gradients of the last ``backward``, under the same names (empty while the
  layer is frozen: ``trainable = False``);
- ``buffers``: state that is saved with a model but not trained (BatchNormalization's
  running statistics);
- ``forward(x, train)`` keeps what ``backward`` needs; ``backward(dout)`` returns dx;
  ``train`` not given, the layer's mode (``train()``/``eval()``, inference by default);
- ``output_shape(input_shape)``: the shape ``forward`` returns for an input of that shape
  (batch axis included);
- ``config()``: the constructor's settings as JSON-ready data, and the classmethod
  ``from_config(spec, dtype, rng, where)`` that checks them (the spec is untrusted data) and
  builds a new layer: the architecture half of a model file;
- ``cost(input_shape)`` and ``check_cost(shape, check)``: the work and receptive field of
  the layer (``deepnet.models.describe``) and the bounds ``build`` holds it to.

A subclass registers itself (``Layer.registry``) under its class name, or under
``spec_name``; ``spec_name = None`` keeps a class (and its subclasses, unless they name
themselves) out of the registry, as do names that start with "_".  Adding a layer type is
defining its class: no central list changes.
"""

from __future__ import annotations
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple
from numpy.typing import DTypeLike
import numpy as np
from deepnet.functional import Array
from .config import _check_keys


def _train_mode(train: Optional[bool], train_flg: Optional[bool], default: bool = False) -> bool:
    """The mode of a forward pass: the book's ``train_flg`` keyword, accepted beside
    ``train``; neither given, ``default`` (a layer's ``training``, see Layer.train)."""
    if train_flg is not None:
        return bool(train_flg)
    return default if train is None else bool(train)


def _pair(value: Any) -> Tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class Layer:
    """Base of every layer: no parameters, output shaped like the input."""

    trainable = True
    spec_name: Optional[str]  # the name the layer type is registered under (set for each subclass)
    registry: dict[str, type[Layer]] = {}  # spec type name -> layer class (see the module's docstring)
    preserves_rank = False  # True: the output has the input's rank and channels (input_shape looks past it)
    # True: backward(dout, input_gradient=False) skips computing the input's gradient
    skips_input_gradient = False
    training = False  # the mode of a forward pass not told it (train() and eval() set it)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("spec_name", cls.__name__ if getattr(cls, "spec_name", "") is not None else None)
        cls.spec_name = name
        if isinstance(name, str) and not name.startswith("_"):
            Layer.registry[name] = cls

    def __init__(self) -> None:
        self.params: Dict[str, Array] = {}
        self.grads: Dict[str, Array] = {}
        self.buffers: Dict[str, Array] = {}

    def forward(self, x: Array, train: Optional[bool] = None) -> Array:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Layer:
        """Training mode (``mode`` False: eval()) for this layer and every layer inside it:
        the mode a forward pass runs in when its ``train`` argument is not given (a
        container passes its own to its layers).  Returns the layer."""
        self.training = bool(mode)
        for _, layer in self.named_layers():
            layer.training = bool(mode)
        return self

    def eval(self) -> Layer:
        """Inference mode for this layer and every layer inside it: train(False)."""
        return self.train(False)

    def _mode(self, train: Optional[bool], train_flg: Optional[bool]) -> bool:
        """The mode of this forward pass: ``train`` or the book's ``train_flg`` if given,
        else ``training``."""
        return _train_mode(train, train_flg, self.training)

    def backward(self, dout: Array) -> Array:
        raise NotImplementedError

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return tuple(input_shape)

    def fuse_with(self, following: Layer) -> Optional[Any]:
        """A step that runs this layer and ``following`` as one (deepnet.nn.fusion), or None:
        they run one after the other."""
        return None

    def config(self) -> Dict[str, Any]:
        """The constructor's settings (not the parameter values), as JSON-ready data."""
        return {}

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        """A new layer from ``spec`` (``{"type": ..., **config}``, untrusted): a layer with
        settings checks each entry (deepnet.nn.config's helpers) and allocates its
        parameters through deepnet.nn.init.  This default is for a layer without settings."""
        _check_keys(spec, {"type"}, where)
        return cls()

    def cost(self, input_shape: Sequence[int]) -> Tuple[Tuple[int, ...], int, Optional[Tuple[int, int]]]:
        """(output shape, multiply-adds, window) for an input of ``input_shape`` (batch
        included); window is (kernel, stride) along the height for a layer that widens the
        receptive field, else None."""
        return tuple(self.output_shape(input_shape)), 0, None

    def check_cost(self, shape: Sequence[int], check: Any) -> Sequence[int]:
        """The output shape for one image of ``shape``, after holding the layer to the bounds
        of an untrusted model (``check``: deepnet.models.cost's checker, with ``fail``,
        ``values``, ``spatial``, ``add_work`` and ``strict``)."""
        out, work, _ = self.cost(shape)
        if work:
            check.add_work(work // max(shape[0], 1))
        check.values(out)
        return out

    def input_hint(self, first: bool) -> Optional[Tuple[str, int]]:
        """What this layer says about the model's input: ("channels", C), ("features", n)
        (only when it is the ``first`` layer) or None."""
        return None

    def children(self) -> Sequence[Tuple[str, Layer]]:
        """(name, layer) of the layers inside this one (containers only)."""
        return ()

    def named_layers(self, prefix: str = "", trainable_only: bool = False) -> Iterator[Tuple[str, Layer]]:
        """(name prefix, layer) for every layer inside this one, depth first ("3.body.1."): the
        one walk over the layers that parameters, gradients and buffers are gathered by;
        trainable_only skips frozen layers and everything inside them."""
        for name, layer in self.children():
            if trainable_only and not layer.trainable:
                continue
            yield prefix + name + ".", layer
            yield from layer.named_layers(prefix + name + ".", trainable_only)

    def _set_grads(self, **grads: Array) -> None:
        self.grads = grads if self.trainable else {}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({settings})"


class _WeightAndBias(Layer):
    """The book's attribute names for a layer with parameters W and b."""

    W = property(lambda self: self.params["W"], lambda self, v: self.params.__setitem__("W", v))
    b = property(lambda self: self.params["b"], lambda self, v: self.params.__setitem__("b", v))
    dW = property(lambda self: self.grads.get("W"))
    db = property(lambda self: self.grads.get("b"))

    def __init__(self, W: Array, b: Array) -> None:
        super().__init__()
        self.params = {"W": W, "b": b}
