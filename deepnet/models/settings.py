"""Checking a named model's settings (type and range) before anything uses them.

A named model's config comes from a file as often as from code: DeepConvNet, SimpleConvNet,
ResNet and VGG check every setting with these before any arithmetic or allocation uses it.
"""

from __future__ import annotations
import math

import numpy as np

from .init import _charge_layers
from .limits import MAX_DIMENSION, MAX_LAYERS, _short


def _config_int(model, key, value, minimum=1, maximum=MAX_DIMENSION):
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, (bool, np.bool_))
        or not minimum <= value <= maximum
    ):
        raise ValueError(f"{model}: {key!r} must be an int from {minimum} to {maximum}, got {_short(value)}")
    return int(value)


def _config_ints(model, key, value, length=None, minimum=1, maximum=MAX_DIMENSION, allow_empty=True):
    if (
        not isinstance(value, (list, tuple))
        or (length is not None and len(value) != length)
        or len(value) > MAX_LAYERS
        or (not allow_empty and not value)
    ):
        count = f"{length}" if length is not None else ("a non-empty list of" if not allow_empty else "a list of")
        raise ValueError(f"{model}: {key!r} must be {count} ints from {minimum} to {maximum}, got {_short(value)}")
    return [_config_int(model, f"{key}[{i}]", item, minimum, maximum) for i, item in enumerate(value)]


def _config_float(model, key, value, minimum, maximum, include_maximum=True):
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
    return value


def _config_flag(model, key, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{model}: {key!r} must be true or false, got {_short(value)}")
    return bool(value)


_CONV_PARAM_KEYS = ("filter_num", "filter_size", "pad", "stride")


def _config_conv(model, key, value):
    """A convolution's settings: exactly filter_num, filter_size, pad and stride, as ints."""
    if not isinstance(value, dict) or set(value) != set(_CONV_PARAM_KEYS):
        raise ValueError(
            f"{model}: {key!r} must be an object with exactly the entries "
            f"{', '.join(_CONV_PARAM_KEYS)}, got {_short(value)}"
        )
    minimum = {"filter_num": 1, "filter_size": 1, "pad": 0, "stride": 1}
    return {name: _config_int(model, f"{key}.{name}", value[name], minimum[name]) for name in value}


def _config_layers(model, count):
    """A named model of ``count`` layers: refused above MAX_LAYERS, charged to build's budget."""
    if count > MAX_LAYERS:
        raise ValueError(f"{model}: the settings make {count} layers, more than {MAX_LAYERS}")
    _charge_layers(count)


def _next_shape(model, what, layer, shape):
    """``layer``'s output shape for ``shape``, which must leave at least one pixel."""
    out = tuple(layer.output_shape(shape))
    if any(n < 1 for n in out):
        raise ValueError(
            f"{model}: {what} leaves no output for input_dim {list(shape[1:])} "
            f"(output shape {out}): its window is larger than the padded input"
        )
    return out
