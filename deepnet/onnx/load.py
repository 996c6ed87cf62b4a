"""deepnet.onnx.load: an ONNX file of the operators deepnet has, as a deepnet model on its kernels.

The graph is read as data, never run: its size, its tensors and its nodes are checked
before anything is built, and the model is returned whole or not at all.  Refused, with
the operator or the setting named: any operator outside Conv, ConvTranspose, Relu,
LeakyRelu, Sigmoid, Tanh, MaxPool, Gemm, MatMul (+ Add of a constant), BatchNormalization,
Add, GlobalAveragePool, Flatten, Concat, Dropout, Identity and Constant; grouped or dilated
convolutions, asymmetric padding, ceil-mode pooling; tensors stored outside the file; other
operator domains; and graphs that branch other than into a Residual (Add) or a Concat.

A branch point and the Add or Concat where its branches meet become a Residual or a Concat
container; everything between them is nested Sequentials.  ONNX's BatchNormalization epsilon
is carried into the running variance (deepnet's layer adds its own fixed EPS), so the
normalisation divides by sqrt(var + epsilon) as the file says.
"""

from __future__ import annotations
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

from ..models.cost import check_cost
from ..models.limits import MAX_LAYERS, MAX_NESTING, MAX_PARAMETERS, MAX_SPEC_BYTES
from ..models.sequential import Sequential as Model
from ..nn import (
    Affine,
    BatchNormalization,
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
from .export import _onnx

MAX_FILE_BYTES = MAX_PARAMETERS * 8 + MAX_SPEC_BYTES  # float64 parameters and the graph around them
MIN_OPSET = 11
_SIMPLE = {"Relu": Relu, "Sigmoid": Sigmoid, "Tanh": Tanh}
_JOINS = ("Add", "Concat")
_SKIPPED = ("Dropout", "Identity")  # inference passes the input through
SUPPORTED_OPS = (
    "Conv, ConvTranspose, Relu, LeakyRelu, Sigmoid, Tanh, MaxPool, Gemm, MatMul, Add, BatchNormalization, "
    "GlobalAveragePool, Flatten, Concat, Dropout, Identity, Constant, Mul by a constant in (0, 1] (deepnet's "
    "Dropout), Unsqueeze-BatchNormalization-Squeeze (deepnet's BatchNormalization of rows)"
)


class ImportRefused(TypeError, ValueError):
    """The ONNX file uses something deepnet cannot run (named in the message), or is damaged."""


def load(path: "os.PathLike[str] | str", dtype: DTypeLike = np.float32) -> Model:
    """The deepnet model (a Sequential classifier) of the ONNX file at ``path``.

    Parameters
    ----------
    path : path
        The ONNX file: at most MAX_FILE_BYTES, its tensors inside it.
    dtype : dtype
        The model's dtype (default float32).

    Raises
    ------
    ImportRefused
        An operator, setting or structure deepnet has no layer for, or a damaged file (a
        ValueError and a TypeError).
    """
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ImportRefused(f"{os.fspath(path)}: an ONNX file of {size} bytes; at most {MAX_FILE_BYTES} are read")
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    return from_bytes(data, dtype, source=os.fspath(path))


def from_bytes(data: bytes, dtype: DTypeLike = np.float32, source: str = "ONNX model") -> Model:
    """The deepnet model of a serialized ONNX model (see load)."""
    onnx = _onnx()
    if len(data) > MAX_FILE_BYTES:
        raise ImportRefused(f"{source}: {len(data)} bytes; at most {MAX_FILE_BYTES} are read")
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError, whichever implementation
        raise ImportRefused(f"{source}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    return _Reader(onnx, proto, np.dtype(dtype), source).model()


class _Reader:
    """One graph, checked and turned into layers."""

    def __init__(self, onnx: Any, proto: Any, dtype: np.dtype, source: str) -> None:
        self.onnx, self.proto, self.dtype, self.where = onnx, proto, dtype, source
        if dtype.kind != "f":
            raise ValueError(f"deepnet.onnx.load: dtype must be a floating type, got {dtype}")
        graph = proto.graph
        self._check_header(graph)
        self.constants: Dict[str, np.ndarray] = {}
        self.parameters = 0
        for tensor in graph.initializer:
            self.constants[tensor.name] = self._array(tensor)
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self._constant_node(node)
            elif node.op_type == "Identity" and node.input[0] in self.constants and len(node.output) == 1:
                self.constants[node.output[0]] = self.constants[node.input[0]]  # exporters share equal tensors so
            else:
                self.nodes.append(node)
        self.users: Dict[str, List[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                if name and name not in self.constants:
                    self.users.setdefault(name, []).append(node)
        self.used: set = set()

    def fail(self, message: str) -> ImportRefused:
        return ImportRefused(f"{self.where}: {message}")

    # -- the file's structure ----------------------------------------------------------

    def _check_header(self, graph: Any) -> None:
        opsets = {entry.domain or "": entry.version for entry in self.proto.opset_import}
        if set(opsets) - {"", "ai.onnx"}:
            raise self.fail(f"operator domains {sorted(set(opsets) - {'', 'ai.onnx'})} are not supported")
        version = opsets.get("", opsets.get("ai.onnx", 0))
        if version < MIN_OPSET:
            raise self.fail(f"opset {version}: expected opset {MIN_OPSET} or later")
        if len(self.proto.functions) or len(graph.sparse_initializer):
            raise self.fail("model-local functions and sparse initializers are not supported")
        if len(graph.node) > 4 * MAX_LAYERS:
            raise self.fail(f"{len(graph.node)} nodes; at most {4 * MAX_LAYERS}")
        initialized = {tensor.name for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in initialized]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise self.fail(f"expected one input and one output, got {len(inputs)} and {len(graph.output)}")
        self.input_name, self.output_name = inputs[0].name, graph.output[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(shape) not in (2, 4) or any(n is None or n < 1 for n in shape[1:]):
            raise self.fail(
                f"the input {self.input_name!r} must have a fixed shape (N, C, H, W) or (N, F), got {shape}"
            )
        self.image = tuple(int(n) for n in shape[1:])  # type: ignore[arg-type]

    def _array(self, tensor: Any) -> np.ndarray:
        """A tensor of the file as a NumPy array, its size checked before any data is read."""
        if tensor.data_location == self.onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise self.fail(f"tensor {tensor.name!r} is stored outside the file; only self-contained files are read")
        count = 1
        for n in tensor.dims:
            if n < 0:
                raise self.fail(f"tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}")
            count *= n
        self.parameters = getattr(self, "parameters", 0) + count
        if count > MAX_PARAMETERS or self.parameters > MAX_PARAMETERS:
            raise self.fail(f"more than {MAX_PARAMETERS} values in its tensors")
        try:
            return np.asarray(self.onnx.numpy_helper.to_array(tensor))
        except Exception as exc:  # a size that does not match the data, an unknown type
            raise self.fail(f"tensor {tensor.name!r} is damaged ({exc})") from exc

    def _constant_node(self, node: Any) -> None:
        attributes = {a.name: a for a in node.attribute}
        if "value" not in attributes or len(node.output) != 1:
            raise self.fail(f"Constant node {node.name!r}: only a 'value' tensor is supported")
        self.constants[node.output[0]] = self._array(attributes["value"].t)

    # -- the graph as nested containers ----------------------------------------------

    def model(self) -> Model:
        layers, end = self._chain(self.input_name, depth=0)
        if end != self.output_name:
            raise self.fail(f"the path from the input ends at {end!r}, not at the output {self.output_name!r}")
        unused = [node.name or node.op_type for node in self.nodes if id(node) not in self.used]
        if unused:
            raise self.fail(f"nodes off the path from the input to the output: {unused[:5]}")
        model = Model(*layers)
        try:
            check_cost(model, (1,) + self.image)
        except ValueError as exc:
            raise self.fail(f"the graph cannot run on its input {self.image}: {exc}") from exc
        return model

    def _chain(self, tensor: str, depth: int) -> Tuple[List[Layer], str]:
        """The layers from ``tensor`` on, up to the graph's output or to an Add or Concat that
        joins branches started before ``tensor``: (layers, the tensor they end at)."""
        if depth > MAX_NESTING:
            raise self.fail(f"branches nested more than {MAX_NESTING} deep")
        layers: List[Layer] = []
        while True:
            users = self.users.get(tensor, [])
            if not users or (len(users) == 1 and self._is_join(users[0])):
                return layers, tensor
            if len(users) == 1:
                node = users[0]
                layers += self._convert(node)
                tensor = self._single_output(node)
                continue
            container, tensor = self._branches(tensor, users, depth)
            layers.append(container)

    def _branches(self, tensor: str, users: Sequence[Any], depth: int) -> Tuple[Layer, str]:
        """The branches that start at ``tensor`` and the Add or Concat that joins them."""
        ends: Dict[str, containers.Sequential] = {}
        joins = set()
        for node in users:
            if self._is_join(node):
                ends.setdefault(tensor, containers.Sequential())
                joins.add(id(node))
                join = node
                continue
            layers = self._convert(node)
            more, end = self._chain(self._single_output(node), depth + 1)
            following = self.users.get(end, [])
            if len(following) != 1 or not self._is_join(following[0]):
                raise self.fail(
                    f"a branch from {tensor!r} ends at {end!r} without meeting the others in an Add or Concat"
                )
            join = following[0]
            joins.add(id(join))
            ends[end] = containers.Sequential(*(layers + more))
        if len(joins) != 1:
            raise self.fail(
                f"the branches from {tensor!r} meet in {len(joins)} different nodes; expected one Add or Concat"
            )
        if sorted(join.input) != sorted(ends) or len(set(join.input)) != len(join.input):
            raise self.fail(
                f"{join.op_type} node {join.name!r} joins {list(join.input)}, not the branches from {tensor!r}"
            )
        if id(join) in self.used:
            raise self.fail(f"{join.op_type} node {join.name!r} is reached twice: the graph has a cycle")
        self.used.add(id(join))
        branches = [ends[name] for name in join.input]
        if join.op_type == "Add":
            if len(branches) != 2:
                raise self.fail(f"Add node {join.name!r} with {len(branches)} inputs")
            body, shortcut = branches
            if not body.layers:  # the identity on the left: Residual wants the body first
                body, shortcut = shortcut, body
            return Residual(body, shortcut if shortcut.layers else None), self._single_output(join)
        axis = self._attributes(join).get("axis")
        if axis not in (1, -3):
            raise self.fail(f"Concat node {join.name!r} on axis {axis}: only the channels (axis 1) are supported")
        return Concat(*branches), self._single_output(join)

    def _is_join(self, node: Any) -> bool:
        data = [name for name in node.input if name not in self.constants]
        return node.op_type in _JOINS and len(data) > 1

    def _single_output(self, node: Any) -> str:
        outputs = [name for name in node.output if name]
        if len(outputs) != 1:
            raise self.fail(f"{node.op_type} node {node.name!r} has {len(outputs)} outputs; expected one")
        return outputs[0]

    # -- one node ---------------------------------------------------------------------

    def _attributes(self, node: Any) -> Dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _constant(self, node: Any, index: int, ndim: Optional[int] = None) -> np.ndarray:
        if index >= len(node.input) or node.input[index] not in self.constants:
            raise self.fail(f"{node.op_type} node {node.name!r}: input {index} must be a constant (an initializer)")
        value = self.constants[node.input[index]]
        if value.dtype.kind != "f" or (ndim is not None and value.ndim != ndim):
            raise self.fail(
                f"{node.op_type} node {node.name!r}: input {index} must be a float tensor"
                + (f" of {ndim} axes" if ndim is not None else "")
                + f", got {value.dtype} of shape {value.shape}"
            )
        return value.astype(self.dtype)

    def _window(self, node: Any, attributes: Dict[str, Any], kernel: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
        """(stride, pad) of a Conv, ConvTranspose or MaxPool, refusing what deepnet has not."""
        name = f"{node.op_type} node {node.name!r}"
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise self.fail(f"{name}: auto_pad {attributes['auto_pad']!r} is not supported; give explicit pads")
        if any(d != 1 for d in attributes.get("dilations", [1, 1])):
            raise self.fail(f"{name}: dilations {attributes['dilations']} are not supported")
        if len(kernel) != 2:
            raise self.fail(f"{name}: a {len(kernel)}-d window; only 2-d is supported")
        strides = tuple(attributes.get("strides", [1, 1]))
        pads = tuple(attributes.get("pads", [0, 0, 0, 0]))
        if len(strides) != 2 or len(pads) != 4 or pads[:2] != pads[2:] or min(pads) < 0 or min(strides) < 1:
            raise self.fail(f"{name}: strides {list(strides)} and pads {list(pads)}: only equal padding of both sides")
        return (int(strides[0]), int(strides[1])), (int(pads[0]), int(pads[1]))

    def _convert(self, node: Any) -> List[Layer]:
        """The layers of one node that takes one data input."""
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(f"operator {node.domain}.{node.op_type} is not supported")
        if id(node) in self.used:  # a path that comes back to a node: the graph has a cycle
            raise self.fail(f"{node.op_type} node {node.name!r} is reached twice: the graph has a cycle")
        self.used.add(id(node))
        op, attributes = node.op_type, self._attributes(node)
        name = f"{op} node {node.name!r}"
        if op in _SIMPLE:
            return [_SIMPLE[op]()]
        if op in _SKIPPED:
            return []
        if op == "LeakyRelu":
            return [LeakyReLU(float(attributes.get("alpha", 0.01)))]
        if op in ("Conv", "ConvTranspose"):
            W = self._constant(node, 1, ndim=4)
            if attributes.get("group", 1) != 1:
                raise self.fail(f"{name}: group {attributes['group']}; only ungrouped convolutions are supported")
            stride, pad = self._window(node, attributes, W.shape[2:])
            b = self._constant(node, 2, ndim=1) if len(node.input) > 2 else None
            if op == "Conv":
                return [Convolution(W, b if b is not None else np.zeros(W.shape[0], self.dtype), stride, pad)]
            if attributes.get("output_shape"):
                raise self.fail(f"{name}: output_shape is not supported; give pads and output_padding")
            extra = tuple(attributes.get("output_padding", [0, 0]))
            b = b if b is not None else np.zeros(W.shape[1], self.dtype)
            return [ConvTranspose(W, b, stride, pad, output_padding=extra)]  # type: ignore[arg-type]
        if op == "MaxPool":
            if attributes.get("ceil_mode", 0) or attributes.get("storage_order", 0):
                raise self.fail(f"{name}: ceil_mode and storage_order are not supported")
            kernel = attributes.get("kernel_shape", [])
            stride, pad = self._window(node, attributes, kernel)
            return [Pooling(int(kernel[0]), int(kernel[1]), stride, pad)]
        if op in ("Gemm", "MatMul"):
            return [self._affine(node, attributes, name)]
        if op == "BatchNormalization":
            return [self._batch_norm(node, attributes, name)]
        if op == "GlobalAveragePool":
            return [GlobalAveragePooling()]
        if op == "Flatten":
            if attributes.get("axis", 1) != 1:
                raise self.fail(f"{name}: axis {attributes['axis']}; only axis 1 (keep the batch) is supported")
            return [Flatten()]
        if op == "Mul":
            return [self._scale(node, name)]
        if op == "Unsqueeze":
            return [self._flat_batch_norm(node, name)]
        if op == "Add":  # a constant added: only as an affine layer's bias, which _affine takes
            raise self.fail(f"{name} adds a constant that is not a MatMul's bias")
        raise self.fail(f"operator {op} (node {node.name!r}) is not supported; supported are {SUPPORTED_OPS}")

    def _affine(self, node: Any, attributes: Dict[str, Any], name: str) -> Layer:
        if node.op_type == "Gemm":
            if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
                raise self.fail(f"{name}: only transA=0, alpha=1, beta=1 are supported")
            W = self._constant(node, 1, ndim=2)
            W = np.ascontiguousarray(W.T) if attributes.get("transB", 0) else W
            b = self._constant(node, 2) if len(node.input) > 2 and node.input[2] else np.zeros(W.shape[1], self.dtype)
        else:
            W = self._constant(node, 1, ndim=2)
            b = np.zeros(W.shape[1], self.dtype)
            users = self.users.get(self._single_output(node), [])
            if len(users) == 1 and users[0].op_type == "Add" and not self._is_join(users[0]):
                add = users[0]  # MatMul + Add of a constant: the bias
                b = self._constant(add, [i for i, x in enumerate(add.input) if x in self.constants][0])
                self.used.add(id(add))
                self._rewire(node, add)
        if b.size != W.shape[1]:
            raise self.fail(f"{name}: a bias of shape {b.shape} for {W.shape[1]} outputs")
        return Affine(W, np.ascontiguousarray(b.reshape(W.shape[1])))

    def _rewire(self, first: Any, last: Any) -> None:
        """Node ``first`` now ends where ``last`` ended (the nodes between are one layer)."""
        del first.output[:]
        first.output.append(last.output[0])

    def _scale(self, node: Any, name: str) -> Layer:
        """x * c for a constant c in (0, 1]: the inference pass of the book's Dropout(1 - c),
        which is what deepnet.onnx.export writes for a Dropout."""
        constant = [i for i, x in enumerate(node.input) if x in self.constants]
        value = self._constant(node, constant[0]) if len(constant) == 1 and len(node.input) == 2 else None
        if value is None or value.size != 1 or not 0 < float(value.reshape(())) <= 1:
            raise self.fail(f"{name}: only a product with one constant in (0, 1] (a Dropout's scaling) is supported")
        return Dropout(1.0 - float(value.reshape(())))

    def _flat_batch_norm(self, node: Any, name: str) -> Layer:
        """Unsqueeze (N, F) -> (N, F, 1), BatchNormalization, Squeeze back: deepnet's
        BatchNormalization of (N, F) rows, which deepnet.onnx.export writes that way."""
        following = self.users.get(self._single_output(node), [])
        after = self.users.get(self._single_output(following[0]), []) if len(following) == 1 else []
        if not (
            len(following) == 1
            and following[0].op_type == "BatchNormalization"
            and len(after) == 1
            and after[0].op_type == "Squeeze"
            and after[0].input[1:] == node.input[1:]
            and [int(v) for v in self.constants.get(node.input[1], np.zeros(0)).reshape(-1)] in ([2], [-1])
        ):
            raise self.fail(f"{name}: Unsqueeze is supported only around a BatchNormalization of (N, F) rows")
        bn, squeeze = following[0], after[0]
        self.used.update((id(bn), id(squeeze)))
        layer = self._batch_norm(bn, self._attributes(bn), f"BatchNormalization node {bn.name!r}")
        self._rewire(node, squeeze)
        return layer

    def _batch_norm(self, node: Any, attributes: Dict[str, Any], name: str) -> Layer:
        if attributes.get("training_mode", 0) or len([o for o in node.output if o]) != 1:
            raise self.fail(f"{name}: only inference (training_mode 0, one output) is supported")
        gamma, beta, mean, var = (self._constant(node, i, ndim=1) for i in range(1, 5))
        epsilon = float(attributes.get("epsilon", 1e-5))
        variance = np.maximum(var.astype(np.float64) + epsilon - BatchNormalization.EPS, 0)
        return BatchNormalization(gamma, beta, running_mean=mean, running_var=variance.astype(mean.dtype))
