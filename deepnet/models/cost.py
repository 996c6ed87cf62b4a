"""What a model costs: its input, the work and memory for one image (bounded), and a summary.

``check_cost`` refuses a model whose work for one image is out of bounds (``build`` and
``load_model`` call it on a skeleton: only shapes are walked); ``describe`` counts
parameters, multiply-adds and the receptive field; ``summary`` tabulates them per layer.
"""

from __future__ import annotations
from typing import Any, Dict, Iterator, NoReturn, Optional, Sequence, Tuple, cast

from ..nn.base import Layer
import math

from ..nn.containers import Concat, Residual, Sequential  # models.Sequential and nested containers alike
from .limits import MAX_ACTIVATION, MAX_WORK
from .sequential import _ARCHITECTURE, NamedModel

DEFAULT_INPUT = (1, 28, 28)  # the input of a model that does not declare one (MNIST)


def input_shape(model: Layer) -> Tuple[int, ...]:
    """The shape (batch of one) of the images ``model`` takes: a named model's input_dim;
    for other models MNIST's 28x28 with the channels the first Convolution (or
    BatchNormalization) before any Flatten declares, or the features of a first Affine."""
    if isinstance(model, NamedModel):
        return (1,) + tuple(model.config()["input_dim"])
    for index, layer in enumerate(_leading_layers(model)):
        if isinstance(layer, NamedModel):
            return (1,) + tuple(layer.config()["input_dim"])
        hint = None if isinstance(layer, (Residual, Concat)) else layer.input_hint(index == 0)
        if hint is not None:
            kind, size = hint
            return (1, size) + DEFAULT_INPUT[1:] if kind == "channels" else (1, size)
        if not layer.preserves_rank:
            break  # a layer that changes the rank (Flatten, an Affine): images of one channel
    return (1,) + DEFAULT_INPUT


def _leading_layers(layer: Layer) -> Iterator[Layer]:
    """The layers an input meets first, in order (into containers: a Residual's body)."""
    if isinstance(layer, NamedModel):
        yield layer
    elif isinstance(layer, Sequential):
        for child in layer.layers:
            yield from _leading_layers(child)
    elif isinstance(layer, Residual):
        yield from _leading_layers(layer.body)
        yield layer  # what follows depends on both branches: stop looking there
    elif isinstance(layer, Concat):
        yield from _leading_layers(layer.branches[0])
        yield layer
    else:
        yield layer


def check_cost(model: Layer, shape: Optional[Sequence[int]] = None) -> Tuple[Tuple[int, ...], int]:
    """Refuse (ValueError naming the layer) a model that cannot take one image of
    ``shape`` (default ``input_shape(model)``) or whose work on it is out of bounds: a layer
    output (or a convolution's padded input) of more than MAX_ACTIVATION values, more than
    MAX_WORK multiply-adds, a window larger than its padded input, or a pooling window larger
    than its input.  Only shapes are
    walked: nothing runs.  Returns (output shape, multiply-adds).

    Parameters
    ----------
    model : Layer
        The model (a Sequential, one of MODELS) or a layer.
    shape : sequence of int, optional
        The shape of one input image, batch axis included (default ``input_shape(model)``).

    Returns
    -------
    output_shape : tuple of int
        The model's output shape for that input.
    work : int
        Multiply-adds for one image.

    Raises
    ------
    ValueError
        The model cannot take the input, or its work is out of bounds (naming the layer).
    """
    shape = input_shape(model) if shape is None else tuple(shape)
    strict = isinstance(model, NamedModel) or len(shape) == 2
    walk = _CostWalk(shape, strict)
    out = walk.through(model, "", shape)
    return cast(Tuple[int, ...], out), walk.work  # the layers give tuples (their contract says Sequence)


class _CostWalk:
    def __init__(self, shape: Tuple[int, ...], strict: bool) -> None:
        self.image, self.strict, self.work = shape, strict, 0

    def fail(self, where: str, layer: Layer, message: str) -> NoReturn:
        name = f"layer {where.rstrip('.')} ({type(layer).__name__})" if where else f"the {type(layer).__name__}"
        raise ValueError(f"{name}: {message} (for one input of shape {self.image})")

    def values(self, where: str, layer: Layer, shape: Sequence[int], what: str = "output") -> None:
        if any(n < 1 for n in shape[1:]):
            self.fail(where, layer, f"no {what} (shape {shape}): its window is larger than the padded input")
        if math.prod(shape) > MAX_ACTIVATION:
            self.fail(
                where,
                layer,
                f"its {what} of shape {shape} has {math.prod(shape)} values, "
                f"more than {MAX_ACTIVATION} (64 MiB in float64)",
            )

    def add_work(self, where: str, layer: Layer, work: int) -> None:
        self.work += work
        if self.work > MAX_WORK:
            self.fail(where, layer, f"the model needs more than {MAX_WORK:.0e} multiply-adds for one image")

    def spatial(self, where: str, layer: Layer, shape: Sequence[int], channels: Optional[int] = None) -> None:
        if len(shape) != 4:
            self.fail(where, layer, f"needs images (N, C, H, W), gets shape {shape}")
        if channels is not None and shape[1] != channels:
            self.fail(where, layer, f"expects {channels} channels, gets {shape[1]} (shape {shape})")

    def through(self, layer: Layer, where: str, shape: Sequence[int]) -> Sequence[int]:
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
        if isinstance(layer, Concat):
            outs = [self.through(branch, f"{where}{i}.", shape) for i, branch in enumerate(layer.branches)]
            if any(
                len(out) < 2 or list(out[:1]) + list(out[2:]) != list(outs[0][:1]) + list(outs[0][2:]) for out in outs
            ):
                self.fail(where, layer, f"the branches' outputs must agree on every axis but the channels, got {outs}")
            combined = (outs[0][0], sum(out[1] for out in outs)) + tuple(outs[0][2:])
            self.values(where, layer, combined)
            return combined
        return layer.check_cost(shape, _LayerCheck(self, where, layer))


class _LayerCheck:
    """What a layer's check_cost holds itself to: _CostWalk's checks, naming the layer."""

    def __init__(self, walk: _CostWalk, where: str, layer: Layer) -> None:
        self.walk, self.where, self.layer, self.strict = walk, where, layer, walk.strict

    def fail(self, message: str) -> NoReturn:
        self.walk.fail(self.where, self.layer, message)

    def values(self, shape: Sequence[int], what: str = "output") -> None:
        self.walk.values(self.where, self.layer, shape, what)

    def spatial(self, shape: Sequence[int], channels: Optional[int] = None) -> None:
        self.walk.spatial(self.where, self.layer, shape, channels)

    def add_work(self, work: int) -> None:
        self.walk.add_work(self.where, self.layer, work)


def describe(model: Layer, input_shape: Sequence[int] = (1, 1, 28, 28)) -> Dict[str, Any]:
    """Parameters, multiply-adds per image and the receptive field (in input pixels) of the
    last spatial layer, for a model applied to inputs of ``input_shape`` (batch included).

    Parameters
    ----------
    model : Layer
        The model (or a layer).
    input_shape : sequence of int
        The input's shape, batch axis included.

    Returns
    -------
    dict
        ``parameters``, ``multiply_adds`` (per image), ``receptive_field`` and
        ``output_shape``.
    """
    shape, macs, rf = _walk_cost(model, tuple(input_shape), (1, 1))
    return {
        "parameters": int(sum(p.size for p in model.params.values())),
        "multiply_adds": int(macs // max(input_shape[0], 1)) if input_shape[0] else int(macs),
        "receptive_field": rf[0],
        "output_shape": shape,
    }


def _walk_cost(
    layer: Layer, shape: Tuple[int, ...], field: Tuple[int, int]
) -> Tuple[Tuple[int, ...], int, Tuple[int, int]]:
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
    if isinstance(layer, Concat):
        walks = [_walk_cost(branch, shape, field) for branch in layer.branches]
        out_shapes = [walk[0] for walk in walks]
        combined = (out_shapes[0][0], sum(s[1] for s in out_shapes)) + tuple(out_shapes[0][2:])
        return combined, sum(walk[1] for walk in walks), max((walk[2] for walk in walks), key=lambda f: f[0])
    out, macs, window = layer.cost(shape)
    if window is not None:
        rf, jump = field
        kernel, stride = window
        field = (rf + (kernel - 1) * jump, jump * stride)
    return out, macs, field


def summary(model: Layer, image_shape: Optional[Sequence[int]] = None) -> str:
    """A table of ``model``'s layers, as Keras's model.summary() prints: each layer's output
    shape, parameters and multiply-adds per image, and the totals.  A container (Residual,
    Concat, a nested Sequential) is one row with its layers' sums.

    Parameters
    ----------
    model : Sequential
        The model.
    image_shape : sequence of int, optional
        One image's shape (C, H, W); default: the model's (``input_shape``).
    """
    shape = (1,) + tuple(image_shape) if image_shape is not None else input_shape(model)
    check_cost(model, shape)  # a clear error for an input the model cannot take
    layers = model.layers if isinstance(model, Sequential) else [model]
    rows = [("layer", "output shape", "parameters", "multiply-adds")]
    total_macs = 0
    for index, layer in enumerate(layers):
        shape, macs, _ = _walk_cost(layer, shape, (1, 1))
        total_macs += macs
        out = "(N, " + ", ".join(str(n) for n in shape[1:]) + ")"
        name = f"{index} {type(layer).__name__}" + ("+ReLU" if getattr(layer, "relu", False) else "")
        rows.append((name, out, f"{_parameter_count(layer):,}", f"{macs:,}"))
    total = ("total", "", f"{_parameter_count(model):,}", f"{total_macs:,}")
    widths = [max(len(row[i]) for row in rows + [total]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(rows[0]))
    return "\n".join([line(rows[0]), rule, *map(line, rows[1:]), rule, line(total)])


def _parameter_count(layer: Layer) -> int:
    """The parameters of ``layer`` and of the layers inside it."""
    children = layer.children()
    if children:
        return sum(_parameter_count(child) for _, child in children)
    return int(sum(p.size for p in layer.params.values()))


_ARCHITECTURE["summary"] = summary  # Sequential.summary (deepnet.models.sequential cannot import this module)
