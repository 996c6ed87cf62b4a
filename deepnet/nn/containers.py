"""Containers of layers: Sequential (layers in order) and Residual (a shortcut connection).

The classifier built on Sequential (predict, loss, parameter files) is
deepnet.models.Sequential.
"""

from __future__ import annotations
from typing import Any, Dict, Optional, Sequence, Tuple
from deepnet.functional import Array
from . import fusion
from .base import Layer


class Sequential(Layer):
    """Layers applied in order, as one layer (it nests, e.g. as the body of a Residual).

    Its parameters, gradients and buffers are gathered from the layers, named after their
    positions ("0.W", "3.body.1.gamma"); ``grads`` leaves out frozen layers'
    (``trainable = False``), so optimizers leave them alone.

    Parameters
    ----------
    *layers : Layer
        The layers, applied in order.
    """

    skips_input_gradient = True
    spec_name = None  # a container: deepnet.models.spec builds it

    def __init__(self, *layers: Layer) -> None:
        # No Layer.__init__: params, grads and buffers are gathered from the layers.
        self.layers = list(layers)

    def children(self) -> Sequence[Tuple[str, Layer]]:
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        """The layers in order, as the steps of deepnet.nn.fusion's plan: a layer that fuses
        with the next (a Convolution and a 2x2, stride-2 Pooling) runs with it as one step.
        ``train`` (or the book's ``train_flg``) not given: the mode of train()/eval()."""
        train = self._mode(train, train_flg)
        for step in fusion.plan(self.layers):
            x = step.forward(x, train)
        return x

    def backward(self, dout: Array, input_gradient: bool = True) -> Optional[Array]:  # type: ignore[override]
        """The steps' backward passes in reverse order; the gradient of the input.  With
        input_gradient=False a first step that can skip it (skips_input_gradient: a
        Convolution, fused or not, or a Sequential) returns None: training never uses it,
        and it cost a third of DeepConvNet's first layer."""
        steps = fusion.plan(self.layers)
        for i in range(len(steps) - 1, 0, -1):
            dout = steps[i].backward(dout)
        if not steps:
            return dout
        if not input_gradient and steps[0].skips_input_gradient:
            return steps[0].backward(dout, input_gradient=False)  # type: ignore[call-arg]
        return steps[0].backward(dout)

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return tuple(input_shape)

    def config(self) -> Dict[str, Any]:
        """The layers' types and settings (deepnet.models.Sequential describes nested
        containers too, through deepnet.models.spec)."""
        return {"layers": [{"type": type(layer).spec_name, **layer.config()} for layer in self.layers]}

    # -- parameters by name ---------------------------------------------------------------

    def _public_name(self, name: str) -> str:
        """The name a hierarchical parameter name is published under (the models' aliases)."""
        return name

    def _collect(self, attribute: str, trainable_only: bool = False) -> Dict[str, Array]:
        found = {}
        for prefix, layer in self.named_layers(trainable_only=trainable_only):
            for name, value in getattr(layer, attribute).items():
                found[self._public_name(prefix + name)] = value
        return found

    @property
    def params(self) -> Dict[str, Array]:  # type: ignore[override]  # gathered from the layers
        """Every parameter, name -> array (the layers' own arrays: update them in place)."""
        return self._collect("params")

    @property
    def grads(self) -> Dict[str, Array]:  # type: ignore[override]
        """The gradients of the last backward pass, for trainable parameters only."""
        return self._collect("grads", trainable_only=True)

    @property
    def buffers(self) -> Dict[str, Array]:  # type: ignore[override]
        """Saved state that is not trained (BatchNormalization's running statistics)."""
        return self._collect("buffers")


class Residual(Layer):
    """A shortcut connection (ResNet): y = body(x) + shortcut(x).

    ``shortcut`` is the identity by default; where the body changes the shape, pass a
    projection such as a (strided) 1x1 Convolution, possibly with BatchNormalization.
    """

    spec_name = None  # a container: deepnet.models.spec builds it (its children are specs)

    def __init__(self, body: Layer, shortcut: Optional[Layer] = None) -> None:
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def children(self) -> Sequence[Tuple[str, Layer]]:
        return (("body", self.body),) + ((("shortcut", self.shortcut),) if self.shortcut is not None else ())

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        train = self._mode(train, train_flg)
        y = self.body.forward(x, train)
        skip = x if self.shortcut is None else self.shortcut.forward(x, train)
        if y.shape != skip.shape:
            raise ValueError(
                f"Residual.forward: the body gives shape {tuple(y.shape)} but the shortcut "
                f"{tuple(skip.shape)}; give a shortcut that projects to the body's shape"
            )
        return y + skip

    def backward(self, dout: Array) -> Array:
        dx = self.body.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return self.body.output_shape(input_shape)
