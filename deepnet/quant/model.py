"""The int8 model: its steps (quantize, int8 convolution, dequantize, float layer) and inference (predict, classify, accuracy).

Tensors between steps are float32 or uint8 with a per-tensor scale and zero point
(real = scale * (q - zero)).  An int8 convolution (a Convolution or an Affine, with its
bias, ReLU and 2x2 max-pooling fused) takes uint8 and gives uint8, or float32 scores for
the classifier's last layer.  Layers with no int8 form run as float steps on dequantized
values.  deepnet.quant.convert makes these models, deepnet.quant.files saves and loads them.
"""

from __future__ import annotations

import json
import itertools
import math
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import io
from ..nn.classifier import Classifier
from ..nn.base import Layer
from .._config import get_num_threads
from . import layerspec, ops

__all__ = [
    "QuantizeStep",
    "ConvStep",
    "DequantizeStep",
    "FloatStep",
    "Step",
    "Int8Model",
    "INT8_KEY",
    "FORMAT",
    "VERSION",
]

INT8_KEY = "__int8_model__"  # a model file's entry holding the int8 spec (a float model's is __model_spec__)
FORMAT = "deepnet-int8"
VERSION = 1


class _Tensor:
    """A batch between two steps: float32 values, or uint8 values with their scale and zero point."""

    def __init__(self, values: np.ndarray[Any, Any], scale: float = 1.0, zero: int = 0) -> None:
        self.values, self.scale, self.zero = values, scale, zero

    @property
    def quantized(self) -> bool:
        return bool(self.values.dtype == np.uint8)


class _Versioned:
    """A step whose every attribute assignment gives it a new version, unique in the process:
    (id, version) names what a compiled plan was made from, even after an id is reused."""

    _version = 0

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_version", next(_versions))


_versions = itertools.count(1)


def _frozen(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A read-only copy of array."""
    copy = np.array(array)
    copy.flags.writeable = False
    return copy


class QuantizeStep(_Versioned):
    """float32 -> uint8 with the tensor's calibrated scale and zero point."""

    kind = "quantize"

    def __init__(self, scale: float, zero: int) -> None:
        self.scale, self.zero = float(scale), int(zero)

    def run(self, x: _Tensor) -> _Tensor:
        return _Tensor(ops.quantize_uint8(x.values, self.scale, self.zero), self.scale, self.zero)

    def spec(self) -> Dict[str, Any]:
        return {"type": self.kind, "scale": self.scale, "zero": self.zero}

    def arrays(self) -> Dict[str, np.ndarray[Any, Any]]:
        return {}


class DequantizeStep:
    """uint8 -> float32: (q - zero) * scale of the tensor it gets."""

    kind = "dequantize"

    def run(self, x: _Tensor) -> _Tensor:
        return _Tensor(ops.dequantize_uint8(x.values, x.scale, x.zero))

    def spec(self) -> Dict[str, Any]:
        return {"type": self.kind}

    def arrays(self) -> Dict[str, np.ndarray[Any, Any]]:
        return {}


class ConvStep(_Versioned):
    """An int8 convolution (``affine``: a fully connected layer, its input flattened to (N, K, 1, 1))
    with bias, ReLU and 2x2 max-pooling fused; uint8 output with ``out_scale`` and ``out_zero``,
    or float32 (``out_scale`` None).

    w_q: int8 (FN, C, KH, KW); w_scale: float32 (FN,) (W ~ w_q * w_scale); bias_q: int32 (FN,);
    scale: float32 (FN,), the requantization factors the kernel multiplies by.
    """

    kind = "conv"

    def __init__(
        self,
        w_q: np.ndarray[Any, Any],
        w_scale: np.ndarray[Any, Any],
        bias_q: np.ndarray[Any, Any],
        scale: np.ndarray[Any, Any],
        stride: Tuple[int, int],
        pad: Tuple[int, int],
        relu: bool,
        pool: bool,
        affine: bool,
        out_scale: Optional[float],
        out_zero: int = 0,
    ) -> None:
        # read-only copies: the packed filters and a compiled plan hold what they were made from
        self.w_q, self.w_scale, self.bias_q, self.scale = (_frozen(a) for a in (w_q, w_scale, bias_q, scale))
        self.stride, self.pad = (int(stride[0]), int(stride[1])), (int(pad[0]), int(pad[1]))
        self.relu, self.pool, self.affine = bool(relu), bool(pool), bool(affine)
        self.out_scale = None if out_scale is None else float(out_scale)
        self.out_zero = int(out_zero)
        # backend -> the filters packed for it; packed now, so a bad w_q fails here, not at the first image
        self._packed: Dict[str, Any] = {ops.current(): ops.pack_filters(self.w_q)}
        self._packed_w_q = self.w_q

    @property
    def filters(self) -> Any:
        """w_q packed for the backend in use (packed once per backend, and again if w_q is replaced)."""
        backend = ops.current()
        if self._packed_w_q is not self.w_q:
            self._packed, self._packed_w_q = {}, self.w_q
        if backend not in self._packed:
            self._packed[backend] = ops.pack_filters(self.w_q)
        return self._packed[backend]

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        FN, C, KH, KW = (int(n) for n in self.w_q.shape)
        return FN, C, KH, KW

    def output_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        """The output's shape for an input of ``shape`` (batch first), or ValueError."""
        FN, C, KH, KW = self.shape
        if self.affine:
            if len(shape) < 2 or math.prod(shape[1:]) != C:
                raise ValueError(f"an int8 affine layer of {C} inputs gets shape {tuple(shape)}")
            return (shape[0], FN)
        if len(shape) != 4 or shape[1] != C:
            raise ValueError(f"an int8 convolution expects (N, {C}, H, W) input, gets shape {tuple(shape)}")
        oh, ow = ops.output_shape(tuple(shape), (KH, KW), self.stride, self.pad, self.pool)
        if oh < 1 or ow < 1:
            raise ValueError(f"an int8 {KH}x{KW} convolution gives no output for input of shape {tuple(shape)}")
        return (shape[0], FN, oh, ow)

    def run(self, x: _Tensor) -> _Tensor:
        values = x.values
        if self.affine:
            values = values.reshape(len(values), -1, 1, 1)
        out_dtype = np.float32 if self.out_scale is None else np.uint8
        y = ops.conv_int8(
            values,
            x.zero,
            self.filters,
            self.shape,
            self.stride,
            self.pad,
            self.bias_q,
            self.scale,
            self.out_zero,
            self.relu,
            self.pool,
            out_dtype,
        )
        if self.affine:
            y = y.reshape(len(y), -1)
        return _Tensor(y) if self.out_scale is None else _Tensor(y, self.out_scale, self.out_zero)

    def spec(self) -> Dict[str, Any]:
        FN, C, KH, KW = self.shape
        return {
            "type": self.kind,
            "filters": FN,
            "in_channels": C,
            "kernel": [KH, KW],
            "stride": list(self.stride),
            "pad": list(self.pad),
            "relu": self.relu,
            "pool": self.pool,
            "affine": self.affine,
            "out_scale": self.out_scale,
            "out_zero": self.out_zero,
        }

    def arrays(self) -> Dict[str, np.ndarray[Any, Any]]:
        return {"w_q": self.w_q, "w_scale": self.w_scale, "bias_q": self.bias_q, "scale": self.scale}


class FloatStep:
    """A layer with no int8 form (a residual block, global average pooling, a BatchNormalization
    not after a convolution...), run in float32 in inference mode."""

    kind = "float"

    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def run(self, x: _Tensor) -> _Tensor:
        return _Tensor(np.asarray(self.layer.forward(x.values, False), dtype=np.float32))

    def spec(self) -> Dict[str, Any]:
        return {"type": self.kind, "layer": layerspec.layer_spec(self.layer)}

    def arrays(self) -> Dict[str, np.ndarray[Any, Any]]:
        return layerspec.layer_arrays(self.layer)


Step = Union[QuantizeStep, ConvStep, DequantizeStep, FloatStep]


class Int8Model(Classifier):
    """A classifier computing in int8 (deepnet.quantize makes one, deepnet.models.load_model
    loads one): predict, classify, probabilities and accuracy as deepnet.models.Sequential's,
    save and describe.

    Parameters
    ----------
    steps : sequence of Step
        The steps, in order: their tensors' kinds must follow (a float step gets float32,
        an int8 convolution uint8), and the last gives float32 scores (N, classes).
    input_shape : sequence of int
        One image's shape (C, H, W) (or (features,)).
    calibration : dict, optional
        How the activation scales were chosen (recorded in the file and by describe).
    """

    on_gpu = False

    def __init__(
        self, steps: Sequence[Step], input_shape: Sequence[int], calibration: Optional[Dict[str, Any]] = None
    ) -> None:
        self.steps = list(steps)
        self.input_shape = tuple(int(n) for n in input_shape)
        self.calibration = dict(calibration or {})
        # (_plan_key(), the compiled Int8Plan or None, a lock: a plan runs one batch at a time)
        self._plan: Optional[Tuple[Tuple[Tuple[int, int], ...], Any, threading.Lock]] = None

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of the inputs and scores (float32); the convolutions compute in int8."""
        return np.dtype(np.float32)

    def predict(self, x: ArrayLike, train: Optional[bool] = None) -> NDArray[np.float32]:
        """Class scores (before softmax), float32 (N, classes), for a batch of float images ``x``
        (inference only: ``train`` must not be True)."""
        if train:
            raise ValueError("Int8Model.predict: an int8 model only infers (train must be False or None)")
        values = np.asarray(x)
        if values.dtype.kind != "f":
            values = values.astype(np.float32)
        if values.ndim < 1 or tuple(values.shape[1:]) != self.input_shape:
            raise ValueError(
                f"Int8Model.predict: expected inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(values.shape)}"
            )
        values = np.asarray(values, dtype=np.float32)
        scores = self._run_plan(values)
        if scores is not None:
            return scores
        tensor = _Tensor(values)
        for step in self.steps:
            tensor = step.run(tensor)
        return tensor.values

    def _run_plan(self, x: NDArray[np.float32]) -> Optional[NDArray[np.float32]]:
        """The scores of x through one compiled Int8Plan (the same integers as the steps, without a
        Python call and a fresh array per step), where the model is a quantization then int8
        convolutions ending in float32 scores and the compiled kernels are in use; else None."""
        if ops.current() != "kernel":
            return None
        key = self._plan_key()
        entry = self._plan  # one read: another thread may replace it meanwhile
        if entry is None or entry[0] != key:
            entry = self._plan = (key, self._make_plan(), threading.Lock())
        _, plan, lock = entry
        if plan is None or not lock.acquire(blocking=False):  # busy in another thread: run the steps
            return None
        try:
            if np.isnan(x).any():
                raise ValueError("quantize_uint8: the input holds NaN; expected finite values")
            scores = np.empty((len(x), plan.out_size), np.float32)
            plan.run(np.ascontiguousarray(x).reshape(len(x), plan.in_size), scores, get_num_threads())
            return scores
        finally:
            lock.release()

    def _plan_key(self) -> Tuple[Tuple[int, int], ...]:
        """What the plan is made of: each step and its version (a step replaced, or an attribute
        of one assigned, makes a new plan; the steps' arrays are read-only)."""
        return tuple((id(step), getattr(step, "_version", 0)) for step in self.steps)

    def _make_plan(self) -> Any:
        """The Int8Plan of the steps, or None where they are not one quantization then convolutions."""
        first, convs = self.steps[0] if self.steps else None, self.steps[1:]
        if not isinstance(first, QuantizeStep) or not convs or not all(isinstance(c, ConvStep) for c in convs):
            return None
        if any((c.out_scale is None) != (i == len(convs) - 1) for i, c in enumerate(convs) if isinstance(c, ConvStep)):
            return None
        specs = [
            (c.filters, c.stride, c.pad, c.bias_q, c.scale, c.out_zero, c.relu, c.pool, c.affine, c.out_scale is None)
            for c in convs
            if isinstance(c, ConvStep)
        ]
        shape = self.input_shape if len(self.input_shape) == 3 else (1, 1, math.prod(self.input_shape))
        try:
            return ops.plan(first.scale, first.zero, specs, shape)
        except ValueError:  # steps that do not chain: running them says why
            return None

    def feature_maps(self, image: ArrayLike) -> List[Tuple[str, NDArray[Any]]]:
        """[(name, float32 maps (C, H, W))] after each step whose output is a stack of maps,
        for one input image (its shape: input_shape)."""
        tensor = _Tensor(np.asarray(image, dtype=np.float32).reshape((1,) + self.input_shape))
        maps: List[Tuple[str, NDArray[Any]]] = []
        counts: Dict[str, int] = {}
        for step in self.steps:
            tensor = step.run(tensor)
            if isinstance(step, (QuantizeStep, DequantizeStep)):
                continue
            if tensor.values.ndim != 4:
                break
            name = "int8 conv" if isinstance(step, ConvStep) else type(step.layer).__name__
            counts[name] = counts.get(name, 0) + 1
            values = tensor.values
            if tensor.quantized:
                values = ops.dequantize_uint8(values, tensor.scale, tensor.zero)
            maps.append((f"{name} {counts[name]}", values[0].copy()))
        return maps

    def first_filters(self) -> Optional[NDArray[Any]]:
        """The first int8 convolution's filters as float32 (w_q * w_scale), or None."""
        for step in self.steps:
            if isinstance(step, ConvStep) and not step.affine:
                return (step.w_q.astype(np.float32) * step.w_scale[:, None, None, None]).astype(np.float32)
        return None

    def named_arrays(self) -> Dict[str, np.ndarray[Any, Any]]:
        """Every array of the model, named as in its file ("steps/3/w_q")."""
        return {
            f"steps/{index}/{name}": value
            for index, step in enumerate(self.steps)
            for name, value in step.arrays().items()
        }

    def spec(self) -> Dict[str, Any]:
        """The model as JSON-ready data (its file's spec)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "input_shape": list(self.input_shape),
            "calibration": self.calibration,
            "steps": [step.spec() for step in self.steps],
        }

    def save(self, path: Any) -> str:
        """Write the model to an .npz file (atomically; no pickle): the spec as JSON bytes under
        INT8_KEY, each step's arrays as steps/<index>/<name>; return the path written
        (.npz appended when missing)."""
        arrays: Dict[str, Any] = dict(self.named_arrays())
        arrays[INT8_KEY] = np.frombuffer(json.dumps(self.spec(), allow_nan=False).encode(), dtype=np.uint8)
        return io.save_params(path, arrays)

    def describe(self) -> Dict[str, Any]:
        """What the model holds: its steps (kind, shape), how many run in int8 and in float,
        its stored values and bytes, the output shape for one image, and the calibration."""
        steps: List[Dict[str, Any]] = []
        shape: Tuple[int, ...] = (1,) + self.input_shape
        for step in self.steps:
            if isinstance(step, ConvStep):
                shape = step.output_shape(shape)
                FN, C, KH, KW = step.shape
                what = f"affine {C}->{FN}" if step.affine else f"conv {KH}x{KW} {C}->{FN}"
                what += (" + relu" if step.relu else "") + (" + pool" if step.pool else "")
                what += " -> float32" if step.out_scale is None else " -> uint8"
            elif isinstance(step, FloatStep):
                shape = tuple(step.layer.output_shape(shape))
                what = f"float {type(step.layer).__name__}"
            else:
                what = step.kind
            steps.append({"step": what, "output_shape": list(shape[1:])})
        arrays = self.named_arrays()
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(shape[1:]),
            "int8_steps": sum(isinstance(s, ConvStep) for s in self.steps),
            "float_steps": sum(isinstance(s, FloatStep) for s in self.steps),
            "stored_values": int(sum(a.size for a in arrays.values())),
            "bytes": int(sum(a.nbytes for a in arrays.values())),
            "calibration": self.calibration,
            "steps": steps,
        }
