"""Containers of layers: Sequential (layers in order), Residual (a shortcut connection) and Concat (branches side by side).

The classifier built on Sequential (predict, loss, parameter files) is
deepnet.models.Sequential.
"""

from __future__ import annotations
from typing import Any, Dict, List, Optional, Sequence, Tuple
from deepnet._array import get_array_module
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


class Concat(Layer):
    """Branches side by side (GoogLeNet's Inception block): each gets the same input, and
    their outputs are concatenated along the channels (axis 1).  backward splits dout by
    each branch's channels and sums the branches' input gradients.

    Parameters
    ----------
    *branches : Layer
        At least one; their outputs must agree on every axis but the channels.
    """

    spec_name = None  # a container: deepnet.models.spec builds it (its children are specs)

    def __init__(self, *branches: Layer) -> None:
        super().__init__()
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        self.branches = list(branches)
        self.channels: Optional[List[int]] = None  # each branch's output channels, from forward

    def children(self) -> Sequence[Tuple[str, Layer]]:
        return tuple((str(i), branch) for i, branch in enumerate(self.branches))

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        train = self._mode(train, train_flg)
        outputs = [branch.forward(x, train) for branch in self.branches]
        shapes = [tuple(out.shape) for out in outputs]
        if any(len(shape) < 2 or shape[:1] + shape[2:] != shapes[0][:1] + shapes[0][2:] for shape in shapes):
            raise ValueError(
                f"Concat.forward: the branches' outputs must agree on every axis but the channels (axis 1), got {shapes}"
            )
        self.channels = [shape[1] for shape in shapes]
        return get_array_module(outputs[0]).concatenate(outputs, axis=1)

    def backward(self, dout: Array) -> Array:
        if self.channels is None:
            raise RuntimeError("Concat.backward: no forward pass to differentiate (call forward(x) first)")
        xp = get_array_module(dout)
        dx: Any = None
        first = 0
        for branch, channels in zip(self.branches, self.channels):
            part = xp.ascontiguousarray(dout[:, first : first + channels])
            first += channels
            gradient = branch.backward(part)
            dx = gradient if dx is None else dx + gradient
        return dx

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        shapes = [tuple(branch.output_shape(input_shape)) for branch in self.branches]
        return (shapes[0][0], sum(shape[1] for shape in shapes)) + shapes[0][2:]
