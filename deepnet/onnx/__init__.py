"""ONNX export and import: a deepnet model as an ONNX graph that any runtime reads, and back.

``export(model, path)`` writes the file, ``to_onnx(model)`` returns the ``onnx.ModelProto``;
``deepnet export MODEL --out model.onnx`` is the same from the command line.  ``load(path)``
reads an ONNX file of the operators deepnet has (a model trained in PyTorch, say) as a
deepnet model that runs on deepnet's kernels.  The ``onnx``
package is an optional extra (``pip install -e ".[onnx]"`` in deepnet's source directory).
"""

from __future__ import annotations
from .export import OPSET, ExportError, export, to_onnx
from .load import ImportRefused, from_bytes, load

__all__ = ["OPSET", "ExportError", "export", "to_onnx", "ImportRefused", "load", "from_bytes"]
