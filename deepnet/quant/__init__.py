"""int8 inference: quantizing a float model (``quantize``), the int8 model, its files and its kernels.

``quantize(model, x_calibration)`` turns a float classifier into an ``Int8Model``: weights
symmetric int8 per output channel, activations uint8 with per-tensor scales calibrated on
the given images, each convolution or affine layer with its bias, ReLU and 2x2 max-pooling
one int8 step (docs/int8.md describes the scheme).  ``Int8Model.save`` writes a file that
``deepnet.models.load_model`` (and ``load_int8_model``) reads back.

One module per job: ``reference`` (the NumPy reference of the int8 kernels), ``ops`` (the
kernels as the model calls them: compiled, or the reference), ``model`` (the steps and the
model), ``convert`` (quantize), ``layerspec`` (float steps as data), ``files`` (the files).
"""

from __future__ import annotations

from .convert import activation_range, quantize, quantize_weights
from .files import INT8_KEY, load_int8_model, save_int8_model
from .model import Int8Model

__all__ = [
    "quantize",
    "quantize_weights",
    "activation_range",
    "Int8Model",
    "load_int8_model",
    "save_int8_model",
    "INT8_KEY",
]
