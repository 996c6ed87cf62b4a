"""deepnet.onnx.export: a model's inference pass (predict in eval mode) as an ONNX graph, opset 17.

Each layer becomes the ONNX operators that compute what its inference pass computes:
Convolution -> Conv (+ Relu), ConvTranspose -> ConvTranspose, Pooling -> MaxPool (its
padding never wins a window, as ONNX's does not), Affine -> Flatten + Gemm, Dropout -> Mul by
1 - ratio (the book's inference scaling), BatchNormalization -> BatchNormalization with the
running statistics (or folded into the convolution before it: ``fold_batch_norm=True``),
GlobalAveragePooling -> GlobalAveragePool + Flatten, Residual -> Add, Concat -> Concat on
the channels, and the binary layers -> sign(x) by GreaterOrEqual/Where, Conv or MatMul with
sign(W), Round (to even, as NumPy's rint) and Add.  The graph's input is ``input`` (N, C, H, W)
with the batch size left free, its output ``scores``.

The graph computes in float32 whatever the model's dtype (the parameters are converted):
float32 is what every runtime runs, and deepnet computes float16 and bfloat16 layers in
float32 too (the graph skips their rounding to 16 bits between layers).  ``dtype="float64"``
keeps double precision, which ONNX allows but ONNX Runtime's CPU Conv does not run.
"""

from __future__ import annotations
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from .. import _array
from .._atomic import atomic_write
from ..models.cost import check_cost
from ..models.cost import input_shape as model_input_shape
from ..models.folding import fold_batch_norm as fold
from ..models.sequential import Sequential as Model
from ..nn import (
    Affine,
    BatchNormalization,
    BinaryAffine,
    BinaryConvolution,
    Concat,
    Convolution,
    ConvTranspose,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    Layer,
    LeakyReLU,
    Pooling,
    Relu,
    Residual,
    Sigmoid,
    Tanh,
    containers,
)
from ..nn.base import _pair
from ..quant import Int8Model
from ..quant.model import ConvStep, DequantizeStep, FloatStep, QuantizeStep

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: readers older than the newest onnx package accept it
INPUT, OUTPUT = "input", "scores"
_EXPORTED = (
    "Convolution, ConvTranspose, BinaryConvolution, Pooling, Relu, LeakyReLU, Sigmoid, Tanh, Dropout, "
    "BatchNormalization, Flatten, Affine, BinaryAffine, GlobalAveragePooling, Sequential, Residual and Concat"
)


class ExportError(TypeError, ValueError):
    """The model holds something ONNX export does not cover (named in the message)."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            'deepnet.onnx needs the onnx package: pip install -e ".[onnx]" in deepnet\'s source directory '
            "(or pip install onnx)"
        ) from exc
    return onnx


class _Graph:
    """The nodes and initializers of the graph being built, with unique names."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx, self.dtype = onnx, dtype
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self._used: Dict[str, int] = {}

    def _unique(self, name: str) -> str:
        count = self._used.get(name, 0)
        self._used[name] = count + 1
        return name if count == 0 else f"{name}_{count}"

    def constant(self, name: str, value: Any, dtype: Optional[Any] = None) -> str:
        """An initializer holding ``value`` (in the graph's dtype unless ``dtype``)."""
        array = np.ascontiguousarray(_array.to_cpu(value), dtype=dtype or self.dtype)
        unique = self._unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, unique))
        return unique

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attributes: Any) -> str:
        """A node ``op_type`` on ``inputs``; returns its output's name."""
        output = self._unique(name)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output


def _conv_attributes(kernel: Tuple[int, ...], stride: Any, pad: Any) -> Dict[str, Any]:
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    return {"kernel_shape": [int(k) for k in kernel], "strides": [sh, sw], "pads": [ph, pw, ph, pw]}


def _sign(graph: _Graph, x: str, name: str) -> str:
    """+1 where x >= 0, else -1 (NaN included): deepnet.nn.binary.sign."""
    zero = graph.constant(f"{name}.zero", 0.0)
    nonnegative = graph.op("GreaterOrEqual", [x, zero], f"{name}.nonnegative")
    return graph.op(
        "Where",
        [nonnegative, graph.constant(f"{name}.plus", 1.0), graph.constant(f"{name}.minus", -1.0)],
        f"{name}.sign",
    )


def _flatten(graph: _Graph, x: str, rank: int, name: str) -> str:
    return x if rank == 2 else graph.op("Flatten", [x], f"{name}.flatten", axis=1)


def _emit(graph: _Graph, layer: Layer, x: str, shape: Tuple[int, ...], name: str) -> str:
    """The nodes of ``layer`` applied to tensor ``x`` of shape ``shape``; returns the output's name."""
    if isinstance(layer, containers.Sequential):
        for index, child in enumerate(layer.layers):
            x = _emit(graph, child, x, shape, f"{name}{index}.")
            shape = tuple(child.output_shape(shape))
        return x
    label = name.rstrip(".") or type(layer).__name__
    if isinstance(layer, Residual):
        body = _emit(graph, layer.body, x, shape, f"{name}body.")
        skip = x if layer.shortcut is None else _emit(graph, layer.shortcut, x, shape, f"{name}shortcut.")
        return graph.op("Add", [body, skip], f"{label}.add")
    if isinstance(layer, Concat):
        outputs = [_emit(graph, branch, x, shape, f"{name}{i}.") for i, branch in enumerate(layer.branches)]
        return graph.op("Concat", outputs, f"{label}.concat", axis=1)
    if isinstance(layer, Convolution):
        W, b = graph.constant(f"{name}W", layer.W), graph.constant(f"{name}b", layer.b)
        y = graph.op("Conv", [x, W, b], f"{label}.conv", **_conv_attributes(layer.W.shape[2:], layer.stride, layer.pad))
        return graph.op("Relu", [y], f"{label}.relu") if layer.relu else y
    if isinstance(layer, ConvTranspose):
        W, b = graph.constant(f"{name}W", layer.W), graph.constant(f"{name}b", layer.b)
        attributes = _conv_attributes(layer.W.shape[2:], layer.stride, layer.pad)
        attributes["output_padding"] = list(_pair(layer.output_padding))
        return graph.op("ConvTranspose", [x, W, b], f"{label}.conv_transpose", **attributes)
    if isinstance(layer, BinaryConvolution):
        W = graph.constant(f"{name}W.sign", np.where(_array.to_cpu(layer.W) >= 0, 1.0, -1.0))
        attributes = _conv_attributes(layer.W.shape[2:], layer.stride, layer.pad)
        y = graph.op("Conv", [_sign(graph, x, label), W], f"{label}.conv", **attributes)
        b = graph.constant(f"{name}b", _array.to_cpu(layer.b).reshape(-1, 1, 1))
        return graph.op("Add", [graph.op("Round", [y], f"{label}.round"), b], f"{label}.add_bias")
    if isinstance(layer, BinaryAffine):
        W = graph.constant(f"{name}W.sign", np.where(_array.to_cpu(layer.W) >= 0, 1.0, -1.0))
        signs = _sign(graph, _flatten(graph, x, len(shape), label), label)
        y = graph.op("MatMul", [signs, W], f"{label}.matmul")
        b = graph.constant(f"{name}b", layer.b)
        return graph.op("Add", [graph.op("Round", [y], f"{label}.round"), b], f"{label}.add_bias")
    if isinstance(layer, Affine):
        W, b = graph.constant(f"{name}W", layer.W), graph.constant(f"{name}b", layer.b)
        return graph.op("Gemm", [_flatten(graph, x, len(shape), label), W, b], f"{label}.gemm")
    if isinstance(layer, Pooling):
        attributes = _conv_attributes((layer.pool_h, layer.pool_w), layer.stride, layer.pad)
        return graph.op("MaxPool", [x], f"{label}.max_pool", **attributes)
    if isinstance(layer, BatchNormalization):
        return _batch_norm(graph, layer, x, shape, name, label)
    if isinstance(layer, GlobalAveragePooling):
        pooled = graph.op("GlobalAveragePool", [x], f"{label}.global_average_pool")
        return graph.op("Flatten", [pooled], f"{label}.flatten", axis=1)
    if isinstance(layer, Flatten):
        return graph.op("Flatten", [x], f"{label}.flatten", axis=1)
    if isinstance(layer, Dropout):
        if layer.dropout_ratio == 0:
            return x
        return graph.op("Mul", [x, graph.constant(f"{name}keep", 1.0 - layer.dropout_ratio)], f"{label}.scale")
    if isinstance(layer, LeakyReLU):
        return graph.op("LeakyRelu", [x], f"{label}.leaky_relu", alpha=layer.alpha)
    for kind, op_type in ((Relu, "Relu"), (Sigmoid, "Sigmoid"), (Tanh, "Tanh")):
        if isinstance(layer, kind):
            return graph.op(op_type, [x], f"{label}.{op_type.lower()}")
    raise ExportError(
        f"deepnet.onnx.export: no ONNX form for layer {label} ({type(layer).__name__}); exported are {_EXPORTED}"
    )


def _batch_norm(graph: _Graph, layer: BatchNormalization, x: str, shape: Tuple[int, ...], name: str, label: str) -> str:
    """ONNX BatchNormalization in inference mode; a (N, F) input is viewed as (N, F, 1)."""
    inputs = [
        graph.constant(f"{name}gamma", layer.gamma),
        graph.constant(f"{name}beta", layer.beta),
        graph.constant(f"{name}running_mean", layer.running_mean),
        graph.constant(f"{name}running_var", layer.running_var),
    ]
    flat = len(shape) == 2
    if flat:
        axes = graph.constant(f"{name}axes", [2], np.int64)
        x = graph.op("Unsqueeze", [x, axes], f"{label}.unsqueeze")
    y = graph.op("BatchNormalization", [x] + inputs, f"{label}.batch_norm", epsilon=layer.EPS)
    if flat:
        y = graph.op("Squeeze", [y, axes], f"{label}.squeeze")
    return graph.op("Relu", [y], f"{label}.relu") if layer.relu else y


def _emit_int8(graph: _Graph, model: Int8Model, shape: Tuple[int, ...]) -> Tuple[str, Tuple[int, ...]]:
    """An int8 model in ONNX's QDQ form: uint8 activations as QuantizeLinear, each int8
    convolution as DequantizeLinear of its input, its int8 filters (per output channel) and
    its int32 bias, then Conv, Relu, MaxPool and a QuantizeLinear of the output; float steps
    as the float layers.  Runtimes that know QDQ (ONNX Runtime) run the convolutions in int8."""
    x, quantized = INPUT, None  # quantized: (scale, zero) while x is a uint8 tensor
    for index, step in enumerate(model.steps):
        name = f"step{index}"
        if isinstance(step, QuantizeStep):
            quantized = (step.scale, step.zero)
            x = _quantize(graph, x, step.scale, step.zero, name)
        elif isinstance(step, DequantizeStep):
            assert quantized is not None  # the int8 model's steps alternate so
            x, quantized = _dequantize(graph, x, *quantized, name), None
        elif isinstance(step, FloatStep):
            x = _emit(graph, step.layer, x, shape, f"{name}.")
            shape = tuple(step.layer.output_shape(shape))
        else:
            assert quantized is not None
            x, shape, quantized = _int8_conv(graph, step, x, shape, quantized, name)
    return x, shape


def _quantize(graph: _Graph, x: str, scale: float, zero: int, name: str) -> str:
    scale_name = graph.constant(f"{name}.scale", scale, np.float32)
    zero_name = graph.constant(f"{name}.zero", zero, np.uint8)
    return graph.op("QuantizeLinear", [x, scale_name, zero_name], f"{name}.quantize")


def _dequantize(graph: _Graph, x: str, scale: float, zero: int, name: str) -> str:
    scale_name = graph.constant(f"{name}.scale", scale, np.float32)
    zero_name = graph.constant(f"{name}.zero", zero, np.uint8)
    return graph.op("DequantizeLinear", [x, scale_name, zero_name], f"{name}.dequantize")


def _int8_conv(
    graph: _Graph, step: ConvStep, x: str, shape: Tuple[int, ...], quantized: Tuple[float, int], name: str
) -> Tuple[str, Tuple[int, ...], Optional[Tuple[float, int]]]:
    x_scale, x_zero = quantized
    FN, C, KH, KW = step.shape
    if step.affine:  # an affine layer runs as a 1x1 convolution of (N, K, 1, 1), as deepnet's kernel does
        x = graph.op("Reshape", [x, graph.constant(f"{name}.as_maps", [0, -1, 1, 1], np.int64)], f"{name}.reshape")
    inputs = _dequantize(graph, x, x_scale, x_zero, name)
    w_scale = np.asarray(step.w_scale, np.float32)
    filters = graph.op(
        "DequantizeLinear",
        [graph.constant(f"{name}.w_q", step.w_q, np.int8), graph.constant(f"{name}.w_scale", w_scale, np.float32)],
        f"{name}.filters",
        axis=0,
    )
    bias_scale = (np.float32(x_scale) * w_scale).astype(np.float32)
    bias = graph.op(
        "DequantizeLinear",
        [graph.constant(f"{name}.bias_q", step.bias_q, np.int32), graph.constant(f"{name}.bias_scale", bias_scale)],
        f"{name}.bias",
        axis=0,
    )
    y = graph.op("Conv", [inputs, filters, bias], f"{name}.conv", **_conv_attributes((KH, KW), step.stride, step.pad))
    if step.relu:
        y = graph.op("Relu", [y], f"{name}.relu")
    if step.pool:
        y = graph.op("MaxPool", [y], f"{name}.max_pool", kernel_shape=[2, 2], strides=[2, 2])
    out_shape = step.output_shape(shape)
    if step.affine:
        y = graph.op("Flatten", [y], f"{name}.flatten", axis=1)
    if step.out_scale is None:
        return y, out_shape, None
    return _quantize(graph, y, step.out_scale, step.out_zero, f"{name}.out"), out_shape, (step.out_scale, step.out_zero)


def _image_shape(model: Model, input_shape: Optional[Sequence[int]]) -> Tuple[int, ...]:
    """One image's shape: ``input_shape`` checked against the model, or the model's own."""
    if input_shape is None:
        return tuple(int(n) for n in model_input_shape(model)[1:])
    if (
        not isinstance(input_shape, (tuple, list))
        or not input_shape
        or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in input_shape)
    ):
        raise ValueError(f"deepnet.onnx.export: input_shape must be positive integers (C, H, W), got {input_shape!r}")
    image = tuple(int(n) for n in input_shape)
    try:
        check_cost(model, (1,) + image)
    except ValueError as exc:
        raise ValueError(f"deepnet.onnx.export: the model does not take images of shape {image}: {exc}") from exc
    return image


def to_onnx(
    model: Union[Model, Int8Model],
    *,
    fold_batch_norm: bool = False,
    input_shape: Optional[Sequence[int]] = None,
    dtype: DTypeLike = np.float32,
) -> Any:
    """The ONNX graph (an ``onnx.ModelProto``, opset 17) of ``model``'s inference pass.

    Parameters
    ----------
    model : deepnet.models.Sequential or deepnet.quant.Int8Model
        The model (any deepnet builds: DeepConvNet, its BN variant, ResNet, VGG, GoogLeNet,
        a Sequential of the layers listed in this module's docstring), or an int8 model of
        deepnet.quantize, in ONNX's QDQ form (QuantizeLinear / DequantizeLinear around
        float operators, int8 filters per output channel, an int32 bias).
    fold_batch_norm : bool
        Fold each BatchNormalization that follows a Convolution into it (as deepnet.compile
        does) instead of exporting it as a BatchNormalization node.
    input_shape : sequence of int, optional
        One image's shape (C, H, W); default: the model's (deepnet.models.input_shape).
    dtype : float32 or float64
        The graph's dtype (its input, parameters and scores).

    Raises
    ------
    ExportError
        The model is not a deepnet Sequential, or holds a layer with no ONNX form here.
    ImportError
        The onnx package is not installed.
    """
    onnx = _onnx()
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"deepnet.onnx.export: dtype must be float32 or float64, got {dtype}")
    if isinstance(model, Int8Model):
        if dtype != np.float32 or input_shape is not None:
            raise ValueError("deepnet.onnx.export: an int8 model exports as float32, for its own input shape")
        image = model.input_shape
        graph = _Graph(onnx, dtype)
        output, out_shape = _emit_int8(graph, model, (1,) + image)
    elif isinstance(model, Model):
        image = _image_shape(model, input_shape)
        if fold_batch_norm:
            model = fold(model)
        graph = _Graph(onnx, dtype)
        output = _emit(graph, model, INPUT, (1,) + image, "")
        out_shape = tuple(model.output_shape((1,) + image))
    else:
        raise ExportError(
            "deepnet.onnx.export: expected a deepnet model (deepnet.models.Sequential or an int8 model), "
            f"got {type(model).__name__}"
        )
    if output == INPUT:
        output = graph.op("Identity", [INPUT], "identity")
    graph.nodes[-1].output[0] = OUTPUT
    graph.nodes[-1].name = OUTPUT
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes,
            "deepnet",
            [onnx.helper.make_tensor_value_info(INPUT, elem, ["N", *image])],
            [onnx.helper.make_tensor_value_info(OUTPUT, elem, ["N", *out_shape[1:]])],
            graph.initializers,
        ),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="deepnet",
    )
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto)
    return proto


def export(
    model: Union[Model, Int8Model],
    path: "os.PathLike[str] | str",
    *,
    fold_batch_norm: bool = False,
    input_shape: Optional[Sequence[int]] = None,
    dtype: DTypeLike = np.float32,
) -> None:
    """Write ``model``'s ONNX graph (see to_onnx) to ``path``, atomically."""
    proto = to_onnx(model, fold_batch_norm=fold_batch_norm, input_shape=input_shape, dtype=dtype)
    data = proto.SerializeToString()
    with atomic_write(path) as f:
        f.write(data)
