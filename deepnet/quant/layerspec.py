"""The float layers of an int8 model as data: a layer's spec and arrays, and the layer rebuilt from them (untrusted).

A float step holds one layer of deepnet.nn (a registered layer type, or a Sequential,
Residual or Concat container of them).  Its spec is ``{"type": ..., **config}`` as the layer
registry writes it; containers nest ("layers", "body", "shortcut", "branches").  Rebuilding checks every entry
(the layers' own ``from_config``), charges every parameter to a budget and bounds the
nesting, before anything is allocated; nothing is drawn at random.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator

import numpy as np

from ..nn import Concat, Layer, Residual
from ..nn.containers import Sequential
from ..nn.init import _charge_layers, _initialised, _parameter_limit

__all__ = [
    "layer_spec",
    "layer_arrays",
    "build_layer",
    "budget",
    "set_layer_arrays",
    "MAX_FLOAT_PARAMETERS",
    "MAX_DEPTH",
]

MAX_FLOAT_PARAMETERS = 50_000_000  # all float steps of one model together
MAX_FLOAT_LAYERS = 10_000
MAX_DEPTH = 32
_BUFFER = "buffers/"


def layer_spec(layer: Layer) -> Dict[str, Any]:
    """``layer`` as JSON-ready data (containers nested)."""
    if isinstance(layer, Residual):
        return {
            "type": "Residual",
            "body": layer_spec(layer.body),
            "shortcut": None if layer.shortcut is None else layer_spec(layer.shortcut),
        }
    if isinstance(layer, Sequential):
        return {"type": "Sequential", "layers": [layer_spec(child) for child in layer.layers]}
    if isinstance(layer, Concat):
        return {"type": "Concat", "branches": [layer_spec(branch) for branch in layer.branches]}
    name = getattr(type(layer), "spec_name", None)
    if name is None or Layer.registry.get(name) is not type(layer):
        raise ValueError(f"quantize: a {type(layer).__name__} cannot be described as data")
    return {"type": name, **layer.config()}


def _named(layer: Layer) -> Dict[str, Any]:
    """(name -> array) of the layer's parameters and (as buffers/<name>) buffers, hierarchically named."""
    found: Dict[str, Any] = {}
    walk = [("", layer)] + list(layer.named_layers())
    for prefix, item in walk:
        if isinstance(item, (Sequential, Residual, Concat)):
            continue  # a container's arrays are its layers'
        found.update({prefix + name: value for name, value in item.params.items()})
        found.update({_BUFFER + prefix + name: value for name, value in item.buffers.items()})
    return found


def layer_arrays(layer: Layer) -> Dict[str, np.ndarray[Any, Any]]:
    """The layer's parameters and buffers as float32 NumPy arrays, named as build_layer's layer names them."""
    return {name: np.asarray(value, dtype=np.float32) for name, value in _named(layer).items()}


@contextlib.contextmanager
def budget() -> Iterator[None]:
    """The budget every build_layer inside the block shares: MAX_FLOAT_PARAMETERS parameters,
    MAX_FLOAT_LAYERS layers, all of one model's float steps together; parameters are zeros."""
    with _parameter_limit(MAX_FLOAT_PARAMETERS, MAX_FLOAT_LAYERS), _initialised("zeros"):
        yield


def build_layer(spec: Any, where: str) -> Layer:
    """A float32 layer of zeros for ``spec`` (untrusted: ValueError naming ``where``); call it
    inside ``budget()``."""
    return _build(spec, where, 0)


def _build(spec: Any, where: str, depth: int) -> Layer:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: containers nested more than {MAX_DEPTH} deep")
    try:
        _charge_layers(1)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"{where} must be an object with a string 'type'")
    kind = spec["type"]
    if kind == "Sequential":
        _keys(spec, {"type", "layers"}, where)
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise ValueError(f"{where}.layers must be a list")
        return Sequential(*[_build(item, f"{where}.layers[{i}]", depth + 1) for i, item in enumerate(layers)])
    if kind == "Residual":
        _keys(spec, {"type", "body", "shortcut"}, where)
        body = _build(spec.get("body"), where + ".body", depth + 1)
        shortcut = spec.get("shortcut")
        return Residual(body, None if shortcut is None else _build(shortcut, where + ".shortcut", depth + 1))
    if kind == "Concat":
        _keys(spec, {"type", "branches"}, where)
        branches = spec.get("branches")
        if not isinstance(branches, list) or not branches:
            raise ValueError(f"{where}.branches must be a non-empty list")
        return Concat(*[_build(item, f"{where}.branches[{i}]", depth + 1) for i, item in enumerate(branches)])
    layer_type = Layer.registry.get(kind)
    if layer_type is None:
        raise ValueError(f"{where}: unknown layer type {kind[:40]!r}")
    rng = np.random.default_rng(0)  # nothing is drawn ("zeros"); a Dropout keeps it, unused at inference
    try:
        layer = layer_type.from_config(spec, np.float32, rng, where)
    except (TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"{where}: bad {kind} settings ({str(exc)[:200]})") from None
    return layer


def _keys(spec: Dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ValueError(f"{where}: unexpected key {extra[0][:40]!r} (expected {sorted(allowed)})")


def expected_arrays(layer: Layer) -> Dict[str, tuple[int, ...]]:
    """name -> shape of the arrays a file must hold for ``layer``."""
    return {name: tuple(int(n) for n in value.shape) for name, value in _named(layer).items()}


def set_layer_arrays(layer: Layer, arrays: Dict[str, np.ndarray[Any, Any]]) -> None:
    """Copy the checked float32 ``arrays`` (expected_arrays' names) into ``layer``."""
    for name, target in _named(layer).items():
        target[...] = arrays[name]
