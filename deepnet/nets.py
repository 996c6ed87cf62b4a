"""The book's name for ``deepnet.models``: ``from deepnet.nets import DeepConvNet`` and
``deepnet.nets.load_model`` keep working.

Every model, builder and limit lives in ``deepnet.models`` (one module per job); this module
only re-exports them, so it holds no state of its own.
"""

from __future__ import annotations
from .models import (
    BUFFER_PREFIX,
    DEFAULT_INPUT,
    MAX_ACTIVATION,
    MAX_DIMENSION,
    MAX_LAYERS,  # noqa: F401
    MAX_NESTING,
    MAX_PARAMETERS,
    MAX_SPEC_BYTES,
    MAX_WORK,
    MODELS,
    SPEC_KEY,
    VGG,
    DeepConvNet,
    NamedModel,
    ResNet,
    Sequential,
    SimpleConvNet,
    affine_layer,
    basic_block,
    batch_norm_layer,
    build,
    check_cost,
    conv_layer,
    describe,
    fold_batch_norm,
    he_normal,
    input_shape,
    layer_spec,
    load_model,
    load_spec_file,
    model_spec,
    normal,
    zeros,
)

__all__ = [
    "Sequential",
    "DeepConvNet",
    "SimpleConvNet",
    "ResNet",
    "VGG",
    "build",
    "load_model",
    "describe",
    "check_cost",
    "input_shape",
    "model_spec",
    "fold_batch_norm",
    "MODELS",
]
