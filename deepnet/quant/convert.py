"""Quantizing a float model: deepnet.quantize(model, x_calibration) -> Int8Model.

The model's layers are read in order (plain Sequential containers opened up):

- a Convolution or an Affine, with a BatchNormalization right after it folded in
  (W' = W * gamma / std, b' = (b - mean) * gamma / std + beta), the ReLU after it (fused, or a
  Relu layer) and, for a convolution, a 2x2 stride-2 max-pooling after it, becomes one int8
  convolution step: weights symmetric int8 per output channel, bias int32;
- a Dropout after such a step is folded into it (at inference the book's Dropout scales by
  1 - ratio, a positive factor that commutes with ReLU and max-pooling), and a Flatten before
  an Affine is dropped (the int8 affine step flattens its input);
- every other layer (a residual block, global average pooling, a BatchNormalization not
  after a convolution or affine layer, an activation other than ReLU...) stays a float32 step,
  with dequantize/quantize steps around it.

Activations are uint8 with a per-tensor scale and zero point, calibrated on ``x_calibration``
from the float model's own activations: by default the range [min(0, min), max(0, max)] of
the values (zero point 0 after a ReLU); with ``percentile=p`` the p-th percentile (and the
(100 - p)-th) instead of the extremes, which clips rare outliers.  A model input in [0, 1]
(MNIST pixels) is quantized with scale 1/255 and zero point 0.  An int8 step followed by a
float step or by nothing gives float32 outputs directly (the classifier's scores: no rounding).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..nn import Affine, BatchNormalization, Convolution, Dropout, Flatten, Layer, Pooling, Relu, Residual
from ..nn.base import _pair
from ..nn.containers import Sequential
from . import layerspec
from .model import ConvStep, DequantizeStep, FloatStep, Int8Model, QuantizeStep, Step
from .reference import MAX_K

__all__ = ["quantize", "quantize_weights", "activation_range"]

_INT32 = np.iinfo(np.int32)
_SMALLEST_SCALE = 1e-30  # 1 / scale stays finite in float32


class _Unit:
    """A Convolution or Affine with what fuses into it (layers: the float model's, to calibrate with)."""

    def __init__(self, layers: List[Layer], W: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
        self.layers, self.W, self.b = layers, W, b
        first = layers[0]
        self.affine = isinstance(first, Affine)
        stride, pad = ((1, 1), (0, 0)) if self.affine else (_pair(first.stride), _pair(first.pad))  # type: ignore[attr-defined]
        self.stride: Tuple[int, int] = (int(stride[0]), int(stride[1]))
        self.pad: Tuple[int, int] = (int(pad[0]), int(pad[1]))
        self.relu = bool(getattr(first, "relu", False))
        self.pool = False


def quantize(model: Any, x_calibration: ArrayLike, *, percentile: Optional[float] = None) -> Int8Model:
    """The int8 form of a float classifier (a deepnet.models.Sequential: DeepConvNet with or
    without BN, VGG, ResNet, any spec), calibrated on ``x_calibration``.

    Parameters
    ----------
    model : deepnet.models.Sequential
        The float model, on the CPU; it is left as it is.
    x_calibration : array_like
        Float images the model takes (N, C, H, W): the activation scales are chosen on them.
        Use training or validation images, never the test set.
    percentile : float, optional
        Calibrate each activation's range on this percentile of its values (in (50, 100])
        instead of the extremes (None, the default: the maximum).

    Returns
    -------
    Int8Model
        The int8 model: predict, classify, probabilities, accuracy, save, describe.

    Raises
    ------
    ValueError
        Not a Sequential on the CPU, calibration images that are empty, not finite or of a
        shape the model does not take, or a bad percentile.
    """
    if not isinstance(model, Sequential):
        raise ValueError(f"quantize: expected a deepnet model (a Sequential), got {type(model).__name__}")
    if getattr(model, "on_gpu", False):
        raise ValueError("quantize: the model is on the GPU; quantize a CPU copy (model.to_cpu())")
    if percentile is not None and not (isinstance(percentile, (int, float)) and 50 < percentile <= 100):
        raise ValueError(f"quantize: percentile must be a number in (50, 100], got {percentile!r}")
    x = np.asarray(x_calibration)
    if x.dtype.kind != "f" or x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"quantize: x_calibration must be a non-empty batch of float images (N, C, H, W), got "
            f"{x.dtype} of shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("quantize: x_calibration holds NaN or infinite values")
    layers = _flatten(model.layers)
    units = _units(layers)
    method: Dict[str, Any] = (
        {"method": "max"} if percentile is None else {"method": "percentile", "percentile": percentile}
    )
    calibration = {**method, "images": int(len(x))}
    steps = _steps(units, x.astype(getattr(model, "dtype", np.float32), copy=False), percentile)
    return Int8Model(steps, x.shape[1:], calibration)


def _flatten(layers: List[Layer]) -> List[Layer]:
    """The layers, plain Sequential containers opened up (a Residual stays one layer)."""
    out: List[Layer] = []
    for layer in layers:
        if isinstance(layer, Sequential):
            out += _flatten(layer.layers)
        else:
            out.append(layer)
    return out


def _units(layers: List[Layer]) -> List[Any]:
    """The model as int8 units (_Unit) and float layers, Flattens before an Affine left out."""
    units: List[Any] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, Flatten) and i + 1 < len(layers) and isinstance(layers[i + 1], Affine):
            i += 1
            continue
        unit = _unit(layers, i) if isinstance(layer, (Convolution, Affine)) else None
        if unit is None:
            units.append(layer)
            i += 1
            continue
        units.append(unit)
        i += len(unit.layers)
    return units


def _unit(layers: List[Any], i: int) -> Optional[_Unit]:
    first = layers[i]
    acc = np.float64
    if isinstance(first, Affine):
        W = np.asarray(first.W, dtype=acc).T.reshape(first.W.shape[1], first.W.shape[0], 1, 1)
    else:
        W = np.asarray(first.W, dtype=acc)
    if int(np.prod(W.shape[1:])) > MAX_K:
        return None  # no int8 form: it stays a float step
    b = np.asarray(first.b, dtype=acc)
    unit = _Unit([first], W, b)
    j = i + 1
    bn = layers[j] if j < len(layers) else None
    if isinstance(bn, BatchNormalization) and not unit.relu and bn.gamma.size == W.shape[0]:
        std = np.sqrt(np.asarray(bn.running_var, dtype=acc) + bn.EPS)
        scale = np.asarray(bn.gamma, dtype=acc) / std
        unit.W = W * scale[:, None, None, None]
        unit.b = (b - np.asarray(bn.running_mean, dtype=acc)) * scale + np.asarray(bn.beta, dtype=acc)
        unit.relu = bool(bn.relu)
        unit.layers.append(bn)
        j += 1
    if j < len(layers) and isinstance(layers[j], Relu):
        unit.relu = True
        unit.layers.append(layers[j])
        j += 1
    if not unit.affine and j < len(layers) and isinstance(layers[j], Pooling) and layers[j].fuses_after_convolution():
        unit.pool = True
        unit.layers.append(layers[j])
        j += 1
        if not unit.relu and j < len(layers) and isinstance(layers[j], Relu):  # relu(pool(y)) = pool(relu(y))
            unit.relu = True
            unit.layers.append(layers[j])
            j += 1
    while j < len(layers) and isinstance(layers[j], Dropout):  # inference: y * (1 - ratio), folded in
        keep = 1.0 - float(layers[j].dropout_ratio)
        unit.W, unit.b = unit.W * keep, unit.b * keep
        unit.layers.append(layers[j])
        j += 1
    return unit


def quantize_weights(W: np.ndarray[Any, Any]) -> Tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(w_q int8, s_w float64) of float filters (FN, ...): symmetric per output channel,
    s_w = max|W[f]| / 127 (1 for an all-zero filter), w_q = clip(rint(W / s_w), -127, 127)."""
    W = np.asarray(W, dtype=np.float64)
    amax = np.abs(W).reshape(len(W), -1).max(axis=1) if W.size else np.zeros(len(W))
    s_w = np.where(amax > 0, amax / 127, 1.0)
    w_q = np.clip(np.rint(W / s_w.reshape((-1,) + (1,) * (W.ndim - 1))), -127, 127).astype(np.int8)
    return w_q, s_w


def activation_range(values: np.ndarray[Any, Any], relu: bool, percentile: Optional[float]) -> Tuple[float, int]:
    """(scale, zero point) of a uint8 tensor covering ``values``: the range [lo, hi] holds 0
    (lo = 0 after a ReLU), from the extremes or the percentile; scale = (hi - lo) / 255."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if percentile is None:
        hi, lo = float(v.max()), float(v.min())
    else:
        hi, lo = (float(p) for p in np.percentile(v, [percentile, 100 - percentile]))
    hi, lo = max(hi, 0.0), 0.0 if relu else min(lo, 0.0)
    scale = max((hi - lo) / 255, _SMALLEST_SCALE)
    if hi == lo:
        return 1 / 255, 0
    return scale, int(np.clip(np.rint(-lo / scale), 0, 255))


def _forward(layers: List[Layer], x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    for layer in layers:
        x = np.asarray(layer.forward(x, False))
    return x


def _float32_copy(layer: Layer) -> Layer:
    """The layer as its file rebuilds it (float32): the quantized model and its reloaded copy compute alike."""
    with layerspec.budget():
        copy = layerspec.build_layer(layerspec.layer_spec(layer), "the layer")
    layerspec.set_layer_arrays(copy, layerspec.layer_arrays(layer))
    return copy


def _steps(units: List[Any], x: np.ndarray[Any, Any], percentile: Optional[float]) -> List[Step]:
    steps: List[Step] = []
    scale: Optional[float] = None  # the uint8 tensor's scale (None: the tensor is float)
    at_input = True
    for k, unit in enumerate(units):
        if not isinstance(unit, _Unit):
            if scale is not None:
                steps.append(DequantizeStep())
                scale = None
            steps.append(FloatStep(_float32_copy(unit)))
            x, at_input = _forward([unit], x), False
            continue
        if scale is None:
            if at_input and float(x.min()) >= 0 and float(x.max()) <= 1:
                s_x, z_x = 1 / 255, 0  # pixels in [0, 1]
            else:
                s_x, z_x = activation_range(x, False, percentile)
            steps.append(QuantizeStep(s_x, z_x))
            scale = s_x
        y = _forward(unit.layers, x)
        w_q, s_w = quantize_weights(unit.W)
        product = scale * s_w
        bias_q = np.clip(np.rint(unit.b / product), _INT32.min, _INT32.max).astype(np.int32)
        to_int8 = k + 1 < len(units) and isinstance(units[k + 1], _Unit)
        if to_int8 or unit.pool:
            s_out, z_out = activation_range(y, unit.relu, percentile)
            requant = (product / s_out).astype(np.float32)
        else:
            s_out, z_out, requant = None, 0, product.astype(np.float32)
        steps.append(
            ConvStep(
                w_q,
                s_w.astype(np.float32),
                bias_q,
                requant,
                unit.stride,
                unit.pad,
                unit.relu,
                unit.pool,
                unit.affine,
                s_out,
                z_out,
            )
        )
        scale = s_out
        if scale is not None and not to_int8:
            steps.append(DequantizeStep())
            scale = None
        x, at_input = y, False
    if scale is not None:
        steps.append(DequantizeStep())
    if not steps:
        raise ValueError("quantize: the model has no layer to run")
    return steps


# Residual is named for the docs above: it has no int8 form and stays a float step.
_ = Residual
