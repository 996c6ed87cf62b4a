"""Networks built from ``deepnet.layers``: Sequential, the book's nets, ResNet and VGG, and
self-describing model files.

One module per job:

- ``init``: initialising parameters (he_normal, normal, zeros; conv_layer, affine_layer,
  batch_norm_layer) and the parameter budget of a build;
- ``sequential``: ``Sequential``, a container and a classifier, and ``NamedModel``;
- ``settings``: checking a named model's settings;
- ``book``: the book's DeepConvNet and SimpleConvNet; ``resnet``: ResNet; ``vgg``: VGG;
- ``spec``: architectures as data (``model_spec``, ``build`` and its checks, ``MODELS``);
- ``cost``: what a model costs (``input_shape``, ``check_cost``, ``describe``);
- ``files``: model files and spec files (``load_model``, ``load_spec_file``);
- ``folding``: folding BatchNormalization into convolutions (``fold_batch_norm``);
- ``limits``: the bounds untrusted specs and model files are held to.

Specs and model files are untrusted data.  Before anything is allocated or drawn, ``build``
and ``load_model`` check every entry and setting (a named model's config too), and bound the
parameters (MAX_PARAMETERS), the layers (MAX_LAYERS), the nesting (MAX_NESTING), the spec's
bytes (MAX_SPEC_BYTES) and the work for one image (``check_cost``: MAX_ACTIVATION values a
layer output, MAX_WORK multiply-adds), walking a skeleton of the model whose arrays take no
memory.  Loading never draws random weights: the file's arrays are checked against the
skeleton from their headers, then copied into a model of zeros.

``deepnet.nets`` (the book's name) re-exports this package's names.
"""

from __future__ import annotations
from .binary import BinaryDeepConvNet
from .book import DeepConvNet, SimpleConvNet
from .cost import DEFAULT_INPUT, check_cost, describe, input_shape, summary
from .files import load_model, load_spec_file
from .folding import fold_batch_norm
from .init import affine_layer, batch_norm_layer, conv_layer, he_normal, normal, zeros
from .limits import MAX_ACTIVATION, MAX_DIMENSION, MAX_LAYERS, MAX_NESTING, MAX_PARAMETERS, MAX_SPEC_BYTES, MAX_WORK
from .googlenet import GoogLeNet, inception
from .resnet import ResNet, basic_block
from .sequential import BUFFER_PREFIX, SPEC_KEY, NamedModel, Sequential
from .spec import MODELS, build, layer_spec, model_spec
from .vgg import VGG

__all__ = [
    "Sequential",
    "NamedModel",
    "DeepConvNet",
    "SimpleConvNet",
    "BinaryDeepConvNet",
    "ResNet",
    "GoogLeNet",
    "inception",
    "VGG",
    "basic_block",
    "MODELS",
    "build",
    "model_spec",
    "layer_spec",
    "load_model",
    "load_spec_file",
    "describe",
    "summary",
    "check_cost",
    "input_shape",
    "fold_batch_norm",
    "he_normal",
    "normal",
    "zeros",
    "conv_layer",
    "affine_layer",
    "batch_norm_layer",
    "SPEC_KEY",
    "BUFFER_PREFIX",
    "DEFAULT_INPUT",
    "MAX_PARAMETERS",
    "MAX_NESTING",
    "MAX_LAYERS",
    "MAX_SPEC_BYTES",
    "MAX_DIMENSION",
    "MAX_ACTIVATION",
    "MAX_WORK",
]
