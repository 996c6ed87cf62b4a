"""Folding BatchNormalization into the convolution before it, for inference."""

from __future__ import annotations
import numpy as np

from .. import _array
from ..layers import BatchNormalization, Convolution, Relu
from ..nn.containers import Sequential as _Container
from .sequential import Sequential


def fold_batch_norm(model: Sequential) -> Sequential:
    """A copy of ``model`` for inference, with every BatchNormalization that directly
    follows a Convolution folded into it: W' = W * gamma / std, b' = (b - mean) * gamma / std + beta,
    and its ReLU (fused, or a Relu right after it) fused into the convolution.  Predictions equal the
    original's in eval mode up to rounding; the copy can no longer be trained as the
    original (its BN layers are gone).

    Parameters
    ----------
    model : Sequential
        The model; it is left as it is.

    Returns
    -------
    Sequential
        The folded copy, for inference.
    """
    clone = model.astype(model.dtype)
    _fold_in(clone)
    return clone


def _fold_in(container):
    for _, child in container.children():
        _fold_in(child)
    if not isinstance(container, _Container):
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
            b = (
                _array.to_cpu(layer.b).astype(acc) - _array.to_cpu(following.running_mean).astype(acc)
            ) * scale + _array.to_cpu(following.beta).astype(acc)
            relu_after = i + 2 < len(layers) and isinstance(layers[i + 2], Relu)
            conv = Convolution(
                W.astype(layer.W.dtype),
                b.astype(layer.b.dtype),
                layer.stride,
                layer.pad,
                relu=following.relu or relu_after,
            )
            folded.append(conv)
            i += 3 if relu_after else 2
            continue
        folded.append(layer)
        i += 1
    container.layers = folded
    if isinstance(container, Sequential):
        container.aliases = {}
