"""Initialising parameters: He and normal weights and zero biases, charged to the budget of a build.

Every parameter a layer's ``from_config`` (or a named model) makes is allocated here, and
charged first to the parameter budget of the ``build`` in progress (``_parameter_limit``):
a spec from a file cannot make deepnet allocate more than the limit.  ``_initialised``
says how the parameters are filled: drawn at random (a new model), zeros (a model about to
be loaded: nothing is drawn) or shapes only (a skeleton of read-only arrays that take no
memory).
"""

from __future__ import annotations
from typing import Any, Dict, Iterator, Optional, Sequence
from numpy.typing import DTypeLike
from deepnet.functional import Array
import contextlib
import contextvars
import math

import numpy as np

from .config import _short

# While build() runs: the parameters and layers it may still make.  Every parameter of every
# net is allocated through the functions below, which charge it here first, so a spec from a
# file cannot make deepnet allocate more than MAX_PARAMETERS.
_parameter_budget: contextvars.ContextVar[Optional[Dict[str, Any]]] = contextvars.ContextVar(
    "deepnet_parameter_budget", default=None
)

# How the functions below fill the parameters: "random" (a new model), "zeros" (a model
# whose parameters are about to be loaded: nothing is drawn) or "shapes" (a skeleton that
# only says the shapes: read-only zero-strided arrays that take no memory).
_init_mode = contextvars.ContextVar("deepnet_init_mode", default="random")


def _charge(shape: Sequence[int]) -> None:
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
        raise ValueError(f"a parameter of shape {_short(tuple(shape))}: sizes must be ints >= 0")
    budget = _parameter_budget.get()
    if budget is not None:
        budget["parameters"] -= math.prod(shape)
        if budget["parameters"] < 0:
            raise ValueError(f"the architecture asks for more than {budget['limit']} parameters")


def _charge_layers(count: int) -> None:
    budget = _parameter_budget.get()
    if budget is not None:
        budget["layers"] -= count
        if budget["layers"] < 0:
            raise ValueError(f"the architecture has more than {budget['layer_limit']} layers")


@contextlib.contextmanager
def _parameter_limit(limit: Optional[int], layers: Optional[int]) -> Iterator[None]:
    token = _parameter_budget.set({"parameters": limit, "layers": layers, "limit": limit, "layer_limit": layers})
    try:
        yield
    finally:
        _parameter_budget.reset(token)


@contextlib.contextmanager
def _initialised(mode: str) -> Iterator[None]:
    token = _init_mode.set(mode)
    try:
        yield
    finally:
        _init_mode.reset(token)


def _placeholder(shape: Sequence[int], dtype: DTypeLike) -> Array:
    """A parameter that is not drawn: a skeleton's (no memory) or zeros (to be loaded)."""
    if _init_mode.get() == "shapes":
        return np.broadcast_to(np.zeros((), dtype), tuple(shape))
    return np.zeros(shape, dtype)


_DRAW_CHUNK = 1 << 16  # values drawn at a time (512 kB of float64): a layer costs its own size, not 3x


def _draw(shape: Sequence[int], std: float, rng: np.random.Generator, dtype: DTypeLike) -> Array:
    """std * N(0, 1) of ``shape`` in ``dtype``, drawn in float64 chunk by chunk (the same
    values as one float64 draw, without its float64 copy of the whole array)."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _DRAW_CHUNK):
        stop = min(start + _DRAW_CHUNK, flat.size)
        flat[start:stop] = std * rng.standard_normal(stop - start)
    return out


def he_normal(shape: Sequence[int], rng: np.random.Generator, dtype: DTypeLike) -> Array:
    """He initialisation (std sqrt(2 / fan_in)), suited to ReLU: the book's choice."""
    _charge(shape)
    if _init_mode.get() != "random":
        return _placeholder(shape, dtype)
    fan_in = math.prod(shape[1:]) if len(shape) == 4 else shape[0]
    return _draw(shape, np.sqrt(2.0 / max(fan_in, 1)), rng, dtype)


def normal(shape: Sequence[int], std: float, rng: np.random.Generator, dtype: DTypeLike) -> Array:
    _charge(shape)
    if _init_mode.get() != "random":
        return _placeholder(shape, dtype)
    return _draw(shape, std, rng, dtype)


def zeros(size: int, dtype: DTypeLike) -> Array:
    _charge((size,))
    if _init_mode.get() == "shapes":
        return _placeholder((size,), dtype)
    return np.zeros(size, dtype)
