"""Checking a named model's settings (type and range) before anything uses them.

A named model's config comes from a file as often as from code: DeepConvNet, SimpleConvNet,
ResNet and VGG check every setting with these before any arithmetic or allocation uses it.
"""

from __future__ import annotations
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast
import math

import numpy as np

from ..nn.base import Layer
from .init import _charge_layers
from .limits import MAX_DIMENSION, MAX_LAYERS, _short


def _config_int(model: str, key: str, value: Any, minimum: int = 1, maximum: int = MAX_DIMENSION) -> int:
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, (bool, np.bool_))
        or not minimum <= value <= maximum
    ):
        raise ValueError(f"{model}: {key!r} must be an int from {minimum} to {maximum}, got {_short(value)}")
    return int(value)


def _config_ints(
    model: str,
    key: str,
    value: Any,
    length: Optional[int] = None,
    minimum: int = 1,
    maximum: int = MAX_DIMENSION,
    allow_empty: bool = True,
) -> List[int]:
    if (
        not isinstance(value, (list, tuple))
        or (length is not None and len(value) != length)
        or len(value) > MAX_LAYERS
        or (not allow_empty and not value)
    ):
        count = f"{length}" if length is not None else ("a non-empty list of" if not allow_empty else "a list of")
        raise ValueError(f"{model}: {key!r} must be {count} ints from {minimum} to {maximum}, got {_short(value)}")
    return [_config_int(model, f"{key}[{i}]", item, minimum, maximum) for i, item in enumerate(value)]


def _config_float(
    model: str, key: str, value: Any, minimum: float, maximum: float, include_maximum: bool = True
) -> float:
    if (
        not isinstance(value, (int, float, np.integer, np.floating))
        or isinstance(value, (bool, np.bool_))
        or not math.isfinite(value)
        or value < minimum
        or value > maximum
        or (value == maximum and not include_maximum)
    ):
        interval = f"[{minimum}, {maximum}{']' if include_maximum else ')'}"
        raise ValueError(f"{model}: {key!r} must be a number in {interval}, got {_short(value)}")
    return cast(float, value)  # as given: an int or a NumPy scalar is not converted


def _config_flag(model: str, key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{model}: {key!r} must be true or false, got {_short(value)}")
    return bool(value)


_CONV_PARAM_KEYS = ("filter_num", "filter_size", "pad", "stride")


def _config_conv(model: str, key: str, value: Any) -> Dict[str, int]:
    """A convolution's settings: exactly filter_num, filter_size, pad and stride, as ints."""
    if not isinstance(value, dict) or set(value) != set(_CONV_PARAM_KEYS):
        raise ValueError(
            f"{model}: {key!r} must be an object with exactly the entries "
            f"{', '.join(_CONV_PARAM_KEYS)}, got {_short(value)}"
        )
    minimum = {"filter_num": 1, "filter_size": 1, "pad": 0, "stride": 1}
    return {name: _config_int(model, f"{key}.{name}", value[name], minimum[name]) for name in value}


def _config_layers(model: str, count: int) -> None:
    """A named model of ``count`` layers: refused above MAX_LAYERS, charged to build's budget."""
    if count > MAX_LAYERS:
        raise ValueError(f"{model}: the settings make {count} layers, more than {MAX_LAYERS}")
    _charge_layers(count)


def _next_shape(model: str, what: str, layer: Layer, shape: Sequence[int]) -> Tuple[int, ...]:
    """``layer``'s output shape for ``shape``, which must leave at least one pixel."""
    out = tuple(layer.output_shape(shape))
    if any(n < 1 for n in out):
        raise ValueError(
            f"{model}: {what} leaves no output for input_dim {list(shape[1:])} "
            f"(output shape {out}): its window is larger than the padded input"
        )
    return out
