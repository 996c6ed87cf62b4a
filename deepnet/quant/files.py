"""int8 model files: loading one (an .npz with a JSON spec, as Int8Model.save writes it) from an untrusted file.

The file holds the spec as UTF-8 JSON bytes under INT8_KEY (data, never pickle) and each
step's arrays as ``steps/<index>/<name>``: an int8 convolution's w_q (int8), w_scale and
scale (float32) and bias_q (int32); a float step's parameters and buffers (float32).
``deepnet.models.load_model`` sees INT8_KEY and hands the file to ``load_int8_model``.

Loading trusts nothing: the spec's size, keys and values (scales finite and > 0, zero
points in 0..255, shapes positive and bounded, at most MAX_STEPS steps) and the steps'
shapes through the model (from ``input_shape``) are checked first; then every array's
name, dtype and shape from the file's headers before it is read; then the values (finite
float arrays, finite and > 0 scales).  Any failure is a ValueError naming the file.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from .. import io
from ..nn.base import Layer
from . import layerspec
from .model import FORMAT, INT8_KEY, VERSION, ConvStep, DequantizeStep, FloatStep, Int8Model, QuantizeStep, Step
from .reference import MAX_K

__all__ = ["INT8_KEY", "FORMAT", "VERSION", "save_int8_model", "load_int8_model", "MAX_STEPS", "MAX_SPEC_BYTES"]

PathLike = Union[str, "os.PathLike[str]"]

MAX_SPEC_BYTES = 1 << 20
MAX_STEPS = 1000
MAX_DIMENSION = 1 << 16  # any one size: channels, filters, kernel, stride, pad, image side
MAX_VALUES = 1 << 24  # one image's tensor between two steps
MAX_WORK = 10**10  # multiply-adds for one image
_CONV_ARRAYS = {"w_q": np.int8, "w_scale": np.float32, "bias_q": np.int32, "scale": np.float32}


def save_int8_model(model: Int8Model, path: PathLike) -> str:
    """Write ``model`` to ``path`` (.npz appended when missing), atomically; return the path written."""
    return model.save(path)


def load_int8_model(path: PathLike) -> Int8Model:
    """The int8 model saved in ``path`` (``Int8Model.save``, ``deepnet quantize``), checked throughout.

    Raises
    ------
    ValueError
        The file is not an int8 model file, or anything in it is malformed or out of bounds.
    OSError
        The file cannot be read.
    """
    path = os.fspath(path)
    raw = io.read_params(path, {INT8_KEY: None}, strict=False, entry_limits={INT8_KEY: MAX_SPEC_BYTES}).get(INT8_KEY)
    if raw is None:
        raise ValueError(f"{path}: not an int8 model file (no {INT8_KEY} entry; make one with 'deepnet quantize')")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: {INT8_KEY} must be UTF-8 bytes (uint8), got {raw.dtype} of shape {raw.shape}")
    try:
        spec = _parse(raw.tobytes())
        with layerspec.budget():
            input_shape, calibration, plans = _check_spec(spec)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    expected: Dict[str, Any] = {INT8_KEY: None}
    for index, (_, _, shapes) in enumerate(plans):
        expected.update({f"steps/{index}/{name}": shape for name, shape in shapes.items()})
    arrays = io.read_params(path, expected, strict=True)  # names and shapes from the headers, before reading
    arrays.pop(INT8_KEY)
    try:
        steps = [_make_step(index, plan, arrays) for index, plan in enumerate(plans)]
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return Int8Model(steps, input_shape, calibration)


def _refuse_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice in one object")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number a spec may hold")


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("the int8 spec is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the int8 spec is not valid JSON ({str(exc)[:200]})") from None


# -- the spec, checked before any array is read --------------------------------------------

# One step's plan: (kind, checked settings, name -> shape of its arrays; a float step's layer in settings).
_Plan = Tuple[str, Dict[str, Any], Dict[str, Tuple[int, ...]]]


def _check_spec(spec: Any) -> Tuple[Tuple[int, ...], Dict[str, Any], List[_Plan]]:
    if not isinstance(spec, dict):
        raise ValueError("the int8 spec must be a JSON object")
    _keys(spec, {"format", "version", "input_shape", "calibration", "steps"}, "the int8 spec")
    if spec.get("format") != FORMAT or spec.get("version") != VERSION:
        raise ValueError(
            f"not a {FORMAT} version {VERSION} file (format {str(spec.get('format'))[:40]!r}, "
            f"version {str(spec.get('version'))[:20]!r})"
        )
    input_shape = spec.get("input_shape")
    if not (isinstance(input_shape, list) and 1 <= len(input_shape) <= 3):
        raise ValueError("input_shape must be a list of 1 to 3 sizes")
    shape = (1,) + tuple(_size(v, "input_shape") for v in input_shape)
    _bound_values(shape, "the input")
    image = shape[1:]
    calibration = spec.get("calibration", {})
    if not isinstance(calibration, dict):
        raise ValueError("calibration must be an object")
    steps = spec.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"steps must be a list of 1 to {MAX_STEPS} steps")
    plans: List[_Plan] = []
    kind = "float"  # the tensor's kind between steps: the input is float
    work = 0
    for index, step in enumerate(steps):
        where = f"step {index}"
        if not isinstance(step, dict) or not isinstance(step.get("type"), str):
            raise ValueError(f"{where} must be an object with a string 'type'")
        plan, kind, shape, cost = _check_step(step, where, kind, shape)
        work += cost
        if work > MAX_WORK:
            raise ValueError(f"{where}: the model needs more than {MAX_WORK:.0e} multiply-adds for one image")
        plans.append(plan)
    if kind != "float" or len(shape) != 2:
        raise ValueError(f"the last step must give float scores (N, classes), it gives {kind} of shape {shape}")
    return image, calibration, plans


def _check_step(
    step: Dict[str, Any], where: str, kind: str, shape: Tuple[int, ...]
) -> Tuple[_Plan, str, Tuple[int, ...], int]:
    """(plan, the output's kind, the output's shape, multiply-adds) of one step."""
    typ = step["type"]
    needs = {"quantize": "float", "dequantize": "uint8", "float": "float", "conv": "uint8"}.get(typ)
    if needs is None:
        raise ValueError(f"{where}: unknown step type {typ[:40]!r} (expected quantize, conv, dequantize or float)")
    if kind != needs:
        raise ValueError(f"{where}: a {typ} step takes {needs} values, the step before gives {kind}")
    if typ == "quantize":
        _keys(step, {"type", "scale", "zero"}, where)
        settings = {"scale": _scale(step.get("scale"), where), "zero": _zero(step.get("zero"), where)}
        return (typ, settings, {}), "uint8", shape, 0
    if typ == "dequantize":
        _keys(step, {"type"}, where)
        return (typ, {}, {}), "float", shape, 0
    if typ == "float":
        _keys(step, {"type", "layer"}, where)
        layer = layerspec.build_layer(step.get("layer"), f"{where}.layer")
        try:
            out = tuple(int(n) for n in layer.output_shape(shape))
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{where}: its layer cannot take input of shape {shape} ({str(exc)[:100]})") from None
        if not out or any(n < 1 for n in out[1:]):
            raise ValueError(f"{where}: its layer gives no output for input of shape {shape}")
        _bound_values(out, where)
        return (typ, {"layer": layer}, layerspec.expected_arrays(layer)), "float", out, math.prod(out)
    return _check_conv(step, where, shape)


def _check_conv(step: Dict[str, Any], where: str, shape: Tuple[int, ...]) -> Tuple[_Plan, str, Tuple[int, ...], int]:
    keys = {"type", "filters", "in_channels", "kernel", "stride", "pad", "relu", "pool", "affine"}
    _keys(step, keys | {"out_scale", "out_zero"}, where)
    missing = sorted(keys - set(step))
    if missing:
        raise ValueError(f"{where}: missing {missing[0]!r}")
    FN, C = _size(step["filters"], f"{where}.filters"), _size(step["in_channels"], f"{where}.in_channels")
    KH, KW = _pair(step["kernel"], f"{where}.kernel", 1)
    stride, pad = _pair(step["stride"], f"{where}.stride", 1), _pair(step["pad"], f"{where}.pad", 0)
    flags = {name: step[name] for name in ("relu", "pool", "affine")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError(f"{where}: relu, pool and affine must be true or false")
    if C * KH * KW > MAX_K:
        raise ValueError(f"{where}: C*KH*KW = {C * KH * KW} is more than {MAX_K} (int32 accumulators)")
    out_scale = step.get("out_scale")
    settings = {
        "stride": stride,
        "pad": pad,
        **flags,
        "out_scale": None if out_scale is None else _scale(out_scale, f"{where}.out_scale"),
        "out_zero": _zero(step.get("out_zero", 0), where),
    }
    if out_scale is None and flags["pool"]:
        raise ValueError(f"{where}: a pooled convolution gives uint8 (needs out_scale)")
    if flags["affine"] and ((KH, KW) != (1, 1) or stride != (1, 1) or pad != (0, 0) or flags["pool"]):
        raise ValueError(f"{where}: an affine step has a 1x1 kernel, stride 1, no padding and no pooling")
    probe = ConvStep.__new__(ConvStep)  # shapes only: nothing is allocated
    probe.w_q = np.broadcast_to(np.zeros((), np.int8), (FN, C, KH, KW))
    probe.stride, probe.pad, probe.pool, probe.affine = stride, pad, flags["pool"], flags["affine"]
    try:
        out = probe.output_shape(shape)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    _bound_values(out, where)
    if not flags["affine"]:
        _bound_values((1, C * KH * KW) + out[2:], f"{where} (its column matrix)")
    shapes = {"w_q": (FN, C, KH, KW), "w_scale": (FN,), "bias_q": (FN,), "scale": (FN,)}
    work = FN * C * KH * KW * (math.prod(out[2:]) * (4 if flags["pool"] else 1) if len(out) == 4 else 1)
    return ("conv", settings, shapes), ("float" if out_scale is None else "uint8"), out, work


def _keys(spec: Dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ValueError(f"{where}: unexpected key {extra[0][:40]!r}")


def _size(value: Any, where: str, low: int = 1) -> int:
    if type(value) is not int or not low <= value <= MAX_DIMENSION:
        raise ValueError(f"{where}: expected an integer in {low}..{MAX_DIMENSION}, got {str(value)[:40]}")
    return value


def _pair(value: Any, where: str, low: int) -> Tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2):
        raise ValueError(f"{where}: expected a list of two integers, got {str(value)[:40]}")
    return _size(value[0], where, low), _size(value[1], where, low)


def _scale(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}: a scale must be a finite number > 0, got {str(value)[:40]}")
    largest = float(np.finfo(np.float32).max)
    if not (1 / largest <= value <= largest):  # the scale and its inverse are float32 numbers
        raise ValueError(f"{where}: the scale {value!r} is out of float32's range")
    return float(value)


def _zero(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= 255:
        raise ValueError(f"{where}: a zero point must be an integer in 0..255, got {str(value)[:40]}")
    return value


def _bound_values(shape: Tuple[int, ...], where: str) -> None:
    if math.prod(shape[1:]) > MAX_VALUES:
        raise ValueError(f"{where}: an output of shape {shape} has more than {MAX_VALUES} values for one image")


# -- the steps, from the checked plans and arrays ------------------------------------------


def _make_step(index: int, plan: _Plan, arrays: Dict[str, np.ndarray[Any, Any]]) -> Step:
    kind, settings, shapes = plan
    where = f"step {index}"
    mine = {name: arrays[f"steps/{index}/{name}"] for name in shapes}
    if kind == "quantize":
        return QuantizeStep(settings["scale"], settings["zero"])
    if kind == "dequantize":
        return DequantizeStep()
    if kind == "float":
        for name, value in mine.items():
            _check_float(value, f"{where} {name}")
        layer: Layer = settings["layer"]
        layerspec.set_layer_arrays(layer, mine)
        return FloatStep(layer)
    for name, dtype in _CONV_ARRAYS.items():
        if mine[name].dtype != np.dtype(dtype):
            raise ValueError(f"{where} {name}: expected {np.dtype(dtype)}, got {mine[name].dtype}")
    if (mine["w_q"] == -128).any():
        raise ValueError(f"{where} w_q: int8 weights are in -127..127, found -128")
    for name in ("w_scale", "scale"):
        _check_float(mine[name], f"{where} {name}")
        if not (mine[name] > 0).all():
            raise ValueError(f"{where} {name}: scales must be > 0, found {float(mine[name].min())!r}")
    return ConvStep(
        np.ascontiguousarray(mine["w_q"]),
        np.ascontiguousarray(mine["w_scale"]),
        np.ascontiguousarray(mine["bias_q"]),
        np.ascontiguousarray(mine["scale"]),
        settings["stride"],
        settings["pad"],
        settings["relu"],
        settings["pool"],
        settings["affine"],
        settings["out_scale"],
        settings["out_zero"],
    )


def _check_float(value: np.ndarray[Any, Any], where: str) -> None:
    if value.dtype != np.float32:
        raise ValueError(f"{where}: expected float32, got {value.dtype}")
    if not np.isfinite(value).all():
        raise ValueError(f"{where}: holds NaN or infinite values")
