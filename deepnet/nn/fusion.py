"""Fusion: the rewrite pass that turns a container's layers into the steps its passes run.

Each layer says whether it fuses with the layer after it: ``layer.fuse_with(following)``
returns a step that runs both layers as one (Convolution followed by a 2x2, stride-2
Pooling: one pass whose full-size output never reaches memory), or None, the default.
``plan`` asks every layer in turn, so a container runs its steps without knowing any
layer type.

A step has a layer's passes: ``forward(x, train)``, ``backward(dout)``, and where
``skips_input_gradient`` is true ``backward(dout, input_gradient=False)``, which skips
computing the input's gradient (the first step of a training pass: nothing reads it).
A layer is its own step.
"""

from __future__ import annotations
from typing import Any, List, Protocol, Sequence

from deepnet.functional import Array


class Step(Protocol):
    """What plan() returns for each layer or fused run of layers."""

    skips_input_gradient: bool

    def forward(self, x: Array, train: bool = ...) -> Array: ...

    def backward(self, dout: Array) -> Array: ...


def plan(layers: Sequence[Any]) -> List[Step]:
    """The steps that run ``layers`` in order: a layer that fuses with the next (its
    ``fuse_with`` gives a step) takes both, else each layer is a step of its own."""
    steps: List[Step] = []
    i, count = 0, len(layers)
    while i < count:
        layer = layers[i]
        fused = layer.fuse_with(layers[i + 1]) if i + 1 < count else None
        if fused is None:
            steps.append(layer)
            i += 1
        else:
            steps.append(fused)
            i += 2
    return steps
