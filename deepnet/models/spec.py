"""Architectures as data: describing a model as a JSON-ready spec and building one from a spec.

``model_spec(model)`` describes a model; ``build(spec)`` makes a new one.  A spec is
untrusted data (a model file, a --model spec.json): ``build`` checks every entry and
setting (a named model's config too), names only deepnet's layer and model types (MODELS),
and bounds the parameters (MAX_PARAMETERS), the layers (MAX_LAYERS), the nesting
(MAX_NESTING) and the work for one image (``check_cost``) on a skeleton of the model whose
arrays take no memory, before anything is allocated or drawn.
"""

from __future__ import annotations
from typing import Any, Dict, List, Union, cast

from numpy.typing import DTypeLike
import numpy as np

from .._dtypes import FLOAT_DTYPES
from ..nn.base import Layer
from ..nn.config import _check_keys, _entry
from ..nn.containers import Concat, Residual
from .binary import BinaryDeepConvNet
from .book import DeepConvNet, SimpleConvNet
from .cost import check_cost
from .init import _charge_layers, _initialised, _parameter_limit
from .limits import MAX_NESTING, MAX_PARAMETERS, _short
from .googlenet import GoogLeNet
from .resnet import ResNet
from .sequential import _ARCHITECTURE, NamedModel, Sequential
from .vgg import VGG

MODELS = {
    "DeepConvNet": DeepConvNet,
    "SimpleConvNet": SimpleConvNet,
    "ResNet": ResNet,
    "GoogLeNet": GoogLeNet,
    "VGG": VGG,
    "BinaryDeepConvNet": BinaryDeepConvNet,
}


def layer_spec(layer: Layer) -> Dict[str, Any]:
    """A layer as JSON-ready data: ``{"type": class name, **config}``.  A named model whose
    layers were changed after it was built (a new head, folded BN) is described by its
    layers, not by its constructor's settings."""
    if isinstance(layer, NamedModel):
        named = {"type": type(layer).__name__, "config": layer.config()}
        as_built = cast(
            NamedModel, _built(named, np.dtype(np.float32), np.random.default_rng(0), "shapes")
        )  # settings alone
        if _layers_spec(as_built) == _layers_spec(layer):
            return named
        return {"type": "Sequential", **_layers_spec(layer)}
    if isinstance(layer, Residual):
        return {
            "type": "Residual",
            "body": layer_spec(layer.body),
            "shortcut": None if layer.shortcut is None else layer_spec(layer.shortcut),
        }
    if isinstance(layer, Concat):
        return {"type": "Concat", "branches": [layer_spec(branch) for branch in layer.branches]}
    if type(layer) is Sequential:
        return {"type": "Sequential", **_layers_spec(layer)}
    name = getattr(type(layer), "spec_name", None)
    if name is None or Layer.registry.get(name) is not type(layer):
        raise ValueError(
            f"model_spec: a {type(layer).__name__} cannot be described as data; "
            f"known layers: {', '.join(_known_types())}"
        )
    return {"type": name, **layer.config()}


def _layers_spec(model: Sequential) -> Dict[str, Any]:
    """A Sequential's layers and aliases as data (what the generic spec holds)."""
    spec: Dict[str, Any] = {"layers": [layer_spec(child) for child in model.layers]}
    if model.aliases:
        spec["aliases"] = model.aliases
    return spec


def model_spec(model: Layer) -> Dict[str, Any]:
    """The architecture of ``model`` (a Sequential or one of MODELS) as JSON-ready data.

    Parameters
    ----------
    model : Layer
        A Sequential, one of MODELS, or a layer.

    Returns
    -------
    dict
        The spec ``build`` takes: ``{"type": ..., **config}``.
    """
    return layer_spec(model)


def build(
    spec: Dict[str, Any], dtype: DTypeLike = np.float32, rng: Union[None, int, np.random.Generator] = None
) -> Layer:
    """A new, freshly initialised model (or layer) of the architecture ``spec`` describes.

    ``spec`` is untrusted data (a model file, a --model spec.json): every entry is checked,
    only the layer and model types of deepnet can be named, and a spec asking for more than
    MAX_PARAMETERS parameters or MAX_LAYERS layers, or a model whose work for one image is
    out of bounds (see ``check_cost``), is refused before anything is allocated.

    Parameters
    ----------
    spec : dict
        The architecture: ``{"type": ..., **config}`` (``model_spec``'s form).
    dtype : dtype
        The parameters' dtype (float16, float32 or float64).
    rng : int or numpy.random.Generator, optional
        The seed or generator the parameters are drawn with.

    Returns
    -------
    Layer
        The model (a Sequential, one of MODELS) or the layer.

    Raises
    ------
    ValueError
        The spec is malformed, names an unknown type, or is out of bounds.
    """
    rng = np.random.default_rng(rng)
    dtype = _build_dtype(dtype)
    check_cost(_built(spec, dtype, rng, "shapes"))  # a skeleton first: no memory, nothing drawn
    return _built(spec, dtype, rng, "random")


def _build_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"build: dtype must be float16, float32 or float64, got {dtype}")
    return dtype


def _built(spec: Any, dtype: np.dtype[Any], rng: np.random.Generator, mode: str) -> Layer:
    with _parameter_limit(MAX_PARAMETERS), _initialised(mode):
        return _build(spec, dtype, rng, "spec")


def _build(spec: Any, dtype: np.dtype[Any], rng: np.random.Generator, where: str, depth: int = 0) -> Layer:
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
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
        ):
            raise ValueError(f"build: {where}.aliases must map names to names")
        return Sequential(*children, rng=rng, aliases=aliases)
    if kind == "Residual":
        _check_keys(spec, {"type", "body", "shortcut"}, where)
        body = _build(spec.get("body"), dtype, rng, where + ".body", depth + 1)
        shortcut = spec.get("shortcut")
        shortcut = None if shortcut is None else _build(shortcut, dtype, rng, where + ".shortcut", depth + 1)
        return Residual(body, shortcut)
    if kind == "Concat":
        _check_keys(spec, {"type", "branches"}, where)
        branches = _entry(spec, "branches", list, where)
        if not branches:
            raise ValueError(f"build: {where}.branches must hold at least one branch")
        return Concat(
            *(_build(item, dtype, rng, f"{where}.branches[{i}]", depth + 1) for i, item in enumerate(branches))
        )
    layer_type = Layer.registry.get(kind)
    if layer_type is None or kind in MODELS:
        raise ValueError(f"build: {where}: unknown layer type {_short(kind)}; known: {','.join(_known_types())}")
    return layer_type.from_config(spec, dtype, rng, where)


def _known_types() -> List[str]:
    """Every type a spec may name: the registered layers, the containers and the models."""
    return sorted(set(Layer.registry) | set(MODELS) | {"Sequential", "Residual", "Concat"})


_ARCHITECTURE.update(layer_spec=layer_spec, model_spec=model_spec, build=build)  # for Sequential's methods
