"""ONNX export: a deepnet model as an ONNX graph that any runtime reads (ONNX Runtime, TensorRT, ...).

``export(model, path)`` writes the file, ``to_onnx(model)`` returns the ``onnx.ModelProto``;
``deepnet export MODEL --out model.onnx`` is the same from the command line.  The ``onnx``
package is an optional extra (``pip install "deepnet[onnx]"``).
"""

from __future__ import annotations
from .export import OPSET, ExportError, export, to_onnx

__all__ = ["OPSET", "ExportError", "export", "to_onnx"]
