"""deepnet.compile: a model's inference as one compiled plan, with no Python between the layers.

``compile(model)`` walks the model once: it folds BatchNormalization into the convolution
before it (fold_batch_norm), fuses each Convolution with the ReLU and 2x2 max-pooling after
it, prepares every filter matrix (direct and Winograd), and hands the steps to the compiled
plan (kernels/plan.pyx, src/deepnet_plan.h), which also owns the buffers.  A call then runs
the whole network in one call into compiled code, without the GIL.

Each step runs the arithmetic of the layer's own kernel, so ``plan(x)`` equals
``fold_batch_norm(model).predict(x, train=False)`` bit for bit (the model's own predict
where it has no BatchNormalization to fold), at any thread count.  A float16 model's plan
computes in float32, as its kernels do, and rounds to float16 wherever a layer stores its
result.  The plan holds a copy of the weights: compile again after changing them.
"""

from __future__ import annotations
import math
import threading
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _config
from .. import functional as F
from .._dtypes import is_bfloat16
from ..nn import (
    Affine,
    BatchNormalization,
    BinaryAffine,
    BinaryConvolution,
    Concat,
    Convolution,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    Layer,
    Pooling,
    Relu,
    Residual,
    containers,
)
from ..nn.classifier import Classifier
from ..nn.base import _pair
from .cost import input_shape as _input_shape
from ..quant import Int8Model
from ..quant import ops as int8_ops
from ..quant.model import ConvStep, DequantizeStep, FloatStep, QuantizeStep
from . import plan_steps
from .folding import fold_batch_norm
from .sequential import Sequential

Shape = Tuple[int, ...]

COMPILED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
SUPPORTED_LAYERS = (
    "Convolution, Pooling, Relu, Dropout, BatchNormalization, Flatten, Affine, GlobalAveragePooling, "
    "Residual, Concat, BinaryConvolution, BinaryAffine and Sequential"
)


class NotCompilable(TypeError, ValueError):
    """The plan cannot run this model (its dtype, its device or one of its layers): run its
    own predict instead (for_inference does)."""


class CompiledModel(Classifier):
    """A model's inference as a compiled plan (see deepnet.models.compiled): ``plan(x)``
    returns what ``model.predict(x, train=False)`` returns, the class scores (N, classes).

    Attributes
    ----------
    input_shape : tuple of int
        The shape of one image, (C, H, W).
    dtype : numpy.dtype
        The model's dtype; inputs are converted to it as predict converts them.
    """

    def __init__(
        self, plan: Any, input_shape: Tuple[int, ...], output_size: int, dtype: np.dtype, *, int8: bool = False
    ) -> None:
        self._plan = plan
        self._compute = plan_steps.compute_dtype(dtype)  # the plan's own
        self._int8 = int8  # an int8 model's plan: quantizing refuses NaN, as the model does
        self._lock = threading.Lock()  # one call at a time: the calls share the plan's buffers
        self.input_shape = input_shape
        self.output_size = output_size
        self.dtype = dtype

    def __call__(self, x: ArrayLike, out: Optional[NDArray[Any]] = None) -> NDArray[Any]:
        """Class scores (N, classes) for images x (N, C, H, W), in out if given."""
        return self.predict(x, out=out)

    def predict(self, x: ArrayLike, *, out: Optional[NDArray[Any]] = None) -> NDArray[Any]:
        """Class scores (N, classes) for images x (N, C, H, W): model.predict's bits."""
        images = x if type(x) is np.ndarray else np.asarray(x)
        if images.dtype.kind not in "fiub":
            raise TypeError(f"deepnet.compile: x must hold numbers, got dtype {images.dtype}")
        if images.ndim != 1 + len(self.input_shape) or images.shape[1:] != self.input_shape:
            raise ValueError(
                f"deepnet.compile: the plan takes images of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got x of shape {images.shape}; compile with input_shape= for other sizes"
            )
        flat = np.ascontiguousarray(images.reshape(images.shape[0], math.prod(self.input_shape)), dtype=self.dtype)
        flat = F.cast(flat, self._compute)  # float16 widened exactly, as its kernels load it
        N = flat.shape[0]
        if out is None:
            out = np.empty((N, self.output_size), dtype=self.dtype)
        elif out.shape != (N, self.output_size) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"deepnet.compile: out must be a C-contiguous {self.dtype} array of shape "
                f"{(N, self.output_size)}, got {out.dtype} {out.shape}"
            )
        if self._int8 and np.isnan(flat).any():
            raise ValueError("quantize_uint8: the input holds NaN; expected finite values")
        scores = out if self._compute == self.dtype else np.empty(out.shape, self._compute)
        with self._lock:
            self._plan.run(flat, scores, _config.get_num_threads(), _config.get_winograd())
        if scores is not out:
            out[...] = F.cast(scores, self.dtype)  # float16 values already: exact
        return out

    def reserve(self, batch: int) -> None:
        """Allocate now the buffers of a call on ``batch`` images (else the first call does)."""
        self._plan.reserve(batch, _config.get_num_threads())


def compile(model: Layer, *, input_shape: Optional[Sequence[int]] = None) -> CompiledModel:
    """The compiled inference plan of ``model`` (see deepnet.models.compiled).

    Parameters
    ----------
    model : Sequential or Int8Model
        A float16, bfloat16, float32 or float64 model on the CPU, of the layers
        SUPPORTED_LAYERS names (BatchNormalization after a Convolution is folded into it), or
        an int8 model (deepnet.quantize).
    input_shape : sequence of int, optional
        (C, H, W) of the images; by default the model's (deepnet.models.input_shape).

    Raises
    ------
    NotCompilable (a TypeError and a ValueError)
        Another dtype, a model on the GPU, a layer the plan cannot run, or no compiled
        kernels (the NumPy backend chosen, or not built).
    ValueError
        Layers that do not fit together, or an input_shape they do not take.
    """
    if _config.get_backend() != "cython":
        raise NotCompilable("deepnet.compile: the plan is the compiled backend's; deepnet.set_backend chose NumPy")
    try:
        from .._kernels import plan as _plan  # noqa: F401  (the compiled backend: is it there?)
    except ImportError as exc:
        raise NotCompilable(f"deepnet.compile: the compiled kernels are not importable ({exc})") from None
    if isinstance(model, Int8Model):
        return _int8_plan(model)
    if not isinstance(model, Layer):
        raise NotCompilable(f"deepnet.compile: compiles deepnet's models, got a {type(model).__name__}")
    dtype = np.dtype(getattr(model, "dtype", np.float32))
    if dtype not in COMPILED_DTYPES and not is_bfloat16(dtype):
        raise NotCompilable(
            f"deepnet.compile: compiles float16, bfloat16, float32 and float64 models, got a {dtype} model"
        )
    if getattr(model, "on_gpu", False):
        raise NotCompilable("deepnet.compile: compiles models on the CPU; call model.to_cpu() first")
    shape = tuple(int(n) for n in (input_shape if input_shape is not None else _input_shape(model)[1:]))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"deepnet.compile: input_shape must be (C, H, W) of positive sizes, got {shape}")
    folded = fold_batch_norm(model) if isinstance(model, Sequential) else model
    plan, out_shape = _float_plan([folded], shape, dtype)
    if len(out_shape) != 1:
        raise ValueError(f"deepnet.compile: the model must end in class scores (N, classes), it gives (N, {out_shape})")
    return CompiledModel(plan, shape, out_shape[0], dtype)


def _float_plan(layers: Sequence[Layer], shape: Shape, dtype: np.dtype) -> Tuple[Any, Shape]:
    """The Plan (kernels/plan.pyx) of ``layers`` on images of ``shape``, and its output's shape."""
    from .._kernels import plan as _plan  # the compiled backend, loaded only where used

    builder = _Builder(dtype)
    slot, out_shape = builder.emit(layers, 0, shape, set())
    steps = builder.steps
    if (
        slot == 0
        or steps[-1]["dst"] != slot
        or steps[-1]["kind"] == "concat"  # its other branches wrote the slot too
        or any(step.get("other") == slot for step in steps)
    ):
        steps.append({"kind": "activate", "ops": [("scale", 1.0)], "src": slot, "dst": 1})  # a copy
    else:
        steps[-1]["dst"] = 1
    return _plan.Plan(steps, builder.dtype, math.prod(shape)), out_shape


class _Builder:
    """Turns layers into the plan's steps, each reading and writing slots (0: the input,
    1: the output, 2...: buffers), one image's shape at a time."""

    def __init__(self, storage: np.dtype) -> None:
        self.storage = storage  # the model's dtype
        self.dtype = plan_steps.compute_dtype(storage)  # the plan's
        self.rounding = {"float16": "round_half", "bfloat16": "round_bf16"}.get(storage.name)
        self.steps: List[Dict[str, Any]] = []

    def stored(self, slot: int, keep: Set[int]) -> int:
        """The value in ``slot`` as the model's layer stores it: rounded to a float16 or
        bfloat16 model's dtype."""
        return self.activate([(self.rounding,)], slot, keep) if self.rounding else slot

    def emit(self, layers: Sequence[Layer], slot: int, shape: Shape, keep: Set[int]) -> Tuple[int, Shape]:
        """Steps for ``layers`` on the value in ``slot``; the slot and shape of the result.
        The slots in ``keep`` hold values needed later: no step overwrites them."""
        i = 0
        while i < len(layers):
            layer = layers[i]
            where = f"{type(layer).__name__} layer"
            if isinstance(layer, containers.Sequential):
                slot, shape = self.emit(layer.layers, slot, shape, keep)
            elif isinstance(layer, Residual):
                slot, shape = self.residual(layer, slot, shape, keep)
            elif isinstance(layer, Concat):
                slot, shape = self.concat(layer, slot, shape, keep)
            elif isinstance(layer, (BinaryConvolution, BinaryAffine)):
                step, shape = plan_steps.binary(layer, shape, self.dtype, where)
                slot = self.stored(self.produce(step, slot, keep), keep)
            elif isinstance(layer, Pooling):  # one that no Convolution's epilogue took
                if len(shape) != 3:
                    raise ValueError(f"deepnet.compile: a {where} needs (C, H, W) images, gets {shape}")
                (sh, sw), (ph, pw) = _pair(layer.stride), _pair(layer.pad)
                geometry = {"kh": layer.pool_h, "kw": layer.pool_w, "sh": sh, "sw": sw, "ph": ph, "pw": pw}
                step = {"kind": "max_pool", "C": shape[0], "H": shape[1], "W": shape[2], **geometry}
                slot = self.produce(step, slot, keep)
                shape = tuple(int(n) for n in layer.output_shape((1,) + shape)[1:])
            elif isinstance(layer, Convolution):
                # A Relu and a 2x2, stride-2 Pooling after it run in its epilogue (the same
                # values: the ReLU's max(., 0) is the fused one's), a Relu layer only where no
                # rounding comes between them (it would turn -tiny into -0, the ReLU into 0).
                relu = layer.relu or (not self.rounding and i + 1 < len(layers) and isinstance(layers[i + 1], Relu))
                i += 1 if relu and not layer.relu else 0
                following = layers[i + 1] if i + 1 < len(layers) else None
                dot = is_bfloat16(self.storage) and plan_steps.bf16_dot_convolution()
                pooled = not dot and isinstance(following, Pooling) and following.fuses_after_convolution()
                step, shape = plan_steps.convolution(layer, shape, pooled, self.dtype, where)
                step["relu"] = relu
                if dot:  # rounds in its own epilogue, as the bfloat16 backend's conv_forward
                    step["bf16_filters"] = plan_steps.bf16_pairs(layer.W)
                    slot = self.produce(step, slot, keep)
                else:
                    slot = self.stored(self.produce(step, slot, keep), keep)
                i += 1 if pooled else 0
            elif isinstance(layer, Affine):
                W = np.asarray(layer.W)
                if W.shape[0] != math.prod(shape):
                    raise ValueError(f"deepnet.compile: an {where} of {W.shape[0]} features gets {shape}")
                step = {
                    "kind": "affine",
                    "weights": W.astype(self.dtype),
                    "bias": np.asarray(layer.b).astype(self.dtype),
                }
                slot, shape = self.stored(self.produce(step, slot, keep), keep), (int(W.shape[1]),)
            elif isinstance(layer, GlobalAveragePooling):
                if len(shape) != 3:
                    raise ValueError(f"deepnet.compile: a {where} needs (C, H, W) images, gets {shape}")
                slot = self.stored(self.produce({"kind": "mean", "plane": shape[1] * shape[2]}, slot, keep), keep)
                shape = (shape[0],)
            elif isinstance(layer, Flatten):
                shape = (math.prod(shape),)
            elif isinstance(layer, Relu):  # exact in any dtype
                slot = self.activate([("relu",)], slot, keep)
            elif isinstance(layer, (Dropout, BatchNormalization)):
                ops = plan_steps.activation_ops(layer, shape, self.storage, self.dtype, where)
                slot = self.stored(self.activate(ops, slot, keep), keep)
            else:
                raise NotCompilable(f"deepnet.compile: cannot compile a {where}; the plan runs {SUPPORTED_LAYERS}")
            i += 1
        return slot, shape

    def residual(self, block: Residual, slot: int, shape: Shape, keep: Set[int]) -> Tuple[int, Shape]:
        body, body_shape = self.emit([block.body], slot, shape, keep | {slot})
        skip, skip_shape = slot, shape
        if block.shortcut is not None:
            skip, skip_shape = self.emit([block.shortcut], slot, shape, keep | {slot, body})
        if body_shape != skip_shape:
            raise ValueError(f"deepnet.compile: a Residual's body gives {body_shape}, its shortcut {skip_shape}")
        target = body if body not in keep | {0, slot, skip} else self.fresh(keep | {slot, body, skip})
        self.steps.append({"kind": "add", "src": body, "other": skip, "dst": target})
        return self.stored(target, keep), body_shape

    def concat(self, block: Concat, slot: int, shape: Shape, keep: Set[int]) -> Tuple[int, Shape]:
        """Each branch on the value in ``slot``, its output copied into its channels of a
        buffer that the later branches leave alone."""
        if len(shape) != 3:
            raise ValueError(f"deepnet.compile: a Concat layer needs (C, H, W) images, gets {shape}")
        shapes = [tuple(int(n) for n in branch.output_shape((1,) + shape)[1:]) for branch in block.branches]
        if any(len(s) != 3 or s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"deepnet.compile: a Concat's branches must agree on all but the channels, got {shapes}")
        total = sum(math.prod(s) for s in shapes)
        target = self.fresh(keep | {slot})
        offset = 0
        for branch in block.branches:
            branch_slot, branch_shape = self.emit([branch], slot, shape, keep | {slot, target})
            step = {"kind": "concat", "src": branch_slot, "dst": target, "offset": offset, "total": total}
            self.steps.append(step)
            offset += math.prod(branch_shape)
        return target, (sum(s[0] for s in shapes),) + shapes[0][1:]

    def produce(self, step: Dict[str, Any], slot: int, keep: Set[int]) -> int:
        """Append a step that reads ``slot`` and writes a buffer of its own."""
        target = self.fresh(keep | {slot})
        self.steps.append({**step, "src": slot, "dst": target})
        return target

    def activate(self, ops: List[Tuple[Any, ...]], slot: int, keep: Set[int]) -> int:
        """Element-wise ops, in place where the value in ``slot`` is needed nowhere else
        (merged into the activation or residual sum just before, that wrote it)."""
        last = self.steps[-1] if self.steps else None
        if last is not None and last["dst"] == slot:
            if last["kind"] == "activate" and len(last["ops"]) + len(ops) <= 8:
                last["ops"].extend(ops)
                return slot
            if last["kind"] == "add" and ops == [("relu",)] and not last.get("relu"):
                last["relu"] = True  # a residual block's ReLU, in the pass of its sum
                return slot
        target = slot if slot not in keep | {0} else self.fresh(keep | {slot})
        self.steps.append({"kind": "activate", "ops": ops, "src": slot, "dst": target})
        return target

    def fresh(self, busy: Set[int]) -> int:
        """A buffer slot not in ``busy``."""
        return next(slot for slot in range(2, 64) if slot not in busy)


def _int8_plan(model: Int8Model) -> CompiledModel:
    """The plan of an int8 model: each run of int8 steps (a quantization, then int8
    convolutions and affine layers, the last giving float32 or followed by a dequantization)
    one Int8Plan of kernels/int8.pyx, each run of float steps one float32 Plan, chained (_Chain).  Integers,
    and the float steps' own kernels, so the same bits as its predict."""
    if int8_ops.current() != "kernel":
        raise NotCompilable("deepnet.compile: an int8 plan needs the compiled int8 kernels")
    from .._kernels import int8 as _int8  # the compiled backend, loaded only where used

    refusal = "deepnet.compile: an int8 model's int8 runs must start with a quantize step"
    steps, shape = model.steps, tuple(model.input_shape)
    segments: List[Tuple[Any, bool]] = []  # (plan, whether it quantizes its input)
    i = 0
    while i < len(steps):
        j = i + 1
        if isinstance(steps[i], FloatStep):
            while j < len(steps) and isinstance(steps[j], FloatStep):
                j += 1
            layers = [step.layer for step in steps[i:j] if isinstance(step, FloatStep)]
            plan, shape = _float_plan(layers, shape, np.dtype(np.float32))
            segments.append((plan, False))
        elif isinstance(steps[i], QuantizeStep):
            while j < len(steps) and isinstance(steps[j], ConvStep):
                j += 1
            convs = [step for step in steps[i + 1 : j] if isinstance(step, ConvStep)]
            dequantize = None  # a run of uint8 output ends in a dequantize step
            if convs and convs[-1].out_scale is not None and j < len(steps) and isinstance(steps[j], DequantizeStep):
                dequantize, j = (convs[-1].out_scale, convs[-1].out_zero), j + 1
            if not convs or (convs[-1].out_scale is not None and dequantize is None):
                raise NotCompilable("deepnet.compile: an int8 run must end in float scores or a dequantize step")
            specs = [
                (
                    c.filters,
                    c.stride,
                    c.pad,
                    c.bias_q,
                    c.scale,
                    c.out_zero,
                    c.relu,
                    c.pool,
                    c.affine,
                    c.out_scale is None,
                )
                for c in convs
            ]
            quantize = steps[i]
            assert isinstance(quantize, QuantizeStep)
            in_shape = shape if len(shape) == 3 else (1, 1) + shape
            plan = _int8.Int8Plan(quantize.scale, quantize.zero, specs, in_shape, dequantize=dequantize)
            segments.append((plan, True))
            for conv in convs:
                shape = conv.output_shape((1,) + shape)[1:]
        else:
            raise NotCompilable(refusal)
        i = j
    if len(shape) != 1:
        raise ValueError(f"deepnet.compile: the model must end in class scores (N, classes), it gives (N, {shape})")
    chain = segments[0][0] if len(segments) == 1 else _Chain(segments)
    return CompiledModel(chain, tuple(model.input_shape), shape[0], np.dtype(np.float32), int8=segments[0][1])


class _Chain:
    """Plans run one after the other (an int8 model's int8 and float runs), each in one
    call into compiled code, through buffers kept for the largest batch seen."""

    def __init__(self, segments: List[Tuple[Any, bool]]) -> None:
        self.segments = segments
        self.buffers: List[NDArray[np.float32]] = []

    def reserve(self, batch: int, threads: int) -> None:
        for plan, _ in self.segments:
            plan.reserve(batch, threads)
        if not self.buffers or self.buffers[0].shape[0] < batch:
            self.buffers = [np.empty((batch, plan.out_size), np.float32) for plan, _ in self.segments[:-1]]

    def run(self, x: NDArray[np.float32], out: NDArray[np.float32], threads: int, winograd: str) -> None:
        N = x.shape[0]
        if not self.buffers or self.buffers[0].shape[0] < N:
            self.reserve(N, threads)
        values = x
        for k, (plan, quantizes) in enumerate(self.segments):
            # the first run's input is checked by CompiledModel; later ones as QuantizeStep does
            if quantizes and k and np.isnan(values).any():
                raise ValueError("quantize_uint8: the input holds NaN; expected finite values")
            target = out if k == len(self.segments) - 1 else self.buffers[k][:N]
            plan.run(values, target, threads, winograd)
            values = target


def for_inference(model: Any) -> Any:
    """``compile(model)`` where the plan runs the model, else the model itself (on the GPU,
    or with a layer the plan lacks): what ``deepnet predict``, ``serve`` and ``evaluate``
    compute with.  Both have predict, classify, probabilities and accuracy.  A model with
    binary layers keeps its own predict: their bit kernel (deepnet._kernels.binary, its
    AVX2 table lookups) outruns the plan's popcount loop at evaluate's batches."""
    binary = (BinaryConvolution, BinaryAffine)
    if isinstance(model, binary) or (
        isinstance(model, Layer) and any(isinstance(layer, binary) for _, layer in model.named_layers())
    ):
        return model
    try:
        return compile(model)
    except NotCompilable:
        return model
