"""The compute backends: their contract, and the registry that picks one for a call.

Three backends implement the same ops, each a module of this package:

- ``reference``: pure NumPy, the book's algorithms (the "numpy" setting of
  deepnet.set_backend; also importable as ``deepnet.reference``);
- ``cpu``: the compiled kernels in deepnet._kernels (the "cython" setting);
- ``cuda``: CuPy RawModule kernels and cuBLAS, for CuPy arrays whatever the setting.

Code that more than one backend runs lives in ``deepnet.backends._shared``.

The contract.  deepnet.functional validates and normalises every argument before it calls
a backend: arrays are C-contiguous float16/32/64 (argmax int32) of the checked shapes,
``stride`` and ``pad`` are (vertical, horizontal) pairs of ints, and all the arrays of a
call live on one device.  An op returns arrays of its input's dtype (float16 is a storage
format: arithmetic runs in float32, rounded once).  REQUIRED_OPS lists the ops every
backend defines, with their parameters in order (functional passes the first ones by
position and the ones with defaults by keyword); OPTIONAL_OPS lists the ops a backend may
define, which functional asks for only through supports().

Importing this package imports no backend: each is imported on its first use, so that
``import deepnet`` never loads CuPy or the compiled kernels unless they compute.
"""

import sys
from typing import Any

import numpy as np

from deepnet import _config
from deepnet._array import get_array_module
from deepnet._dtypes import is_bfloat16

NAMES = ("reference", "cpu", "cuda")

# deepnet.set_backend's setting -> the backend module that computes for NumPy arrays.
# (CuPy arrays always go to "cuda".)
SETTINGS = {"cython": "cpu", "numpy": "reference"}

REQUIRED_OPS = {
    "im2col": ("x", "kh", "kw", "stride", "pad"),
    "col2im": ("col", "x_shape", "kh", "kw", "stride", "pad"),
    "conv_forward": ("x", "W", "b", "stride", "pad", "relu"),
    "conv_backward": ("dout", "x", "W", "stride", "pad", "relu_out", "input_gradient", "pool_argmax"),
    "max_pool_forward": ("x", "pool_h", "pool_w", "stride", "pad"),
    "max_pool_backward": ("dout", "argmax", "x_shape", "pool_h", "pool_w", "stride", "pad"),
    "relu_forward": ("x",),
    "relu_backward": ("dout", "y"),
    "cast": ("a", "dtype"),
    "adam_update": ("param", "grad", "m", "v", "lr_t", "beta1", "beta2", "eps"),
    "batch_norm_sums": ("x", "shift"),
    "channel_affine": ("x", "shift", "scale", "offset", "relu"),
    "batch_norm_backward_sums": ("dout", "x", "mean", "inv_std", "relu_out"),
    "batch_norm_dx": ("dout", "x", "mean", "inv_std", "gamma", "mean_dout", "mean_dout_xhat", "relu_out"),
    "affine_warp": ("x", "theta", "fill"),
    "elastic_warp": ("x", "displacement", "theta", "fill"),
}
"""op -> its parameter names, in order: every backend module defines each of these ops."""

OPTIONAL_OPS = {
    "conv_pool_forward": ("x", "W", "b", "stride", "pad", "relu", "argmax"),
    "affine_forward": ("x", "W", "b"),
    "global_average_pool": ("x",),
}
"""op -> its parameter names: ops a backend may define, to do faster what the required ops
can do together.

A backend declines an optional op in one of two ways:

- for every call, by not defining it (supports() is then False and the caller never asks);
- for one call, by returning None from it; the caller then computes the result with the
  required ops.

conv_pool_forward(x, W, b, stride, pad, relu=False, argmax=False) is conv_forward followed
by a 2x2, stride-2 max_pool_forward, fused (functional.conv2d_max_pool2d asks for it only
when the convolution's output is at least 2x2).  It returns what the two calls would give:
the pooled output, or with argmax (pooled, argmax).  Of the backends only ``cpu`` defines
it, and it returns None for a batch of fewer images than threads.
"""

_loaded: dict[str, Any] = {}


def get(name):
    """The backend module ``name`` ("reference", "cpu" or "cuda"), imported on first use."""
    module = _loaded.get(name)
    if module is None:
        module = _loaded[name] = _import(name)
    return module


def _import(name):
    # Literal imports, one per backend: the import graph (tests/test_imports.py) sees them.
    if name == "reference":
        from deepnet.backends import reference as module
    elif name == "cpu":
        from deepnet.backends import cpu as module
    elif name == "cuda":
        from deepnet.backends import cuda as module
    elif name == "bf16":  # not in NAMES: it computes on another backend (see for_arrays)
        from deepnet.backends import bf16 as module
    else:
        raise ValueError(f"deepnet.backends.get: no backend {name!r}; the backends are {', '.join(NAMES)}")
    return module


def name_for(caller, *arrays):
    """The name of the backend that computes for these arrays: "cuda" for CuPy arrays, else
    the one deepnet.set_backend's setting names (SETTINGS).  A mix of NumPy and CuPy arrays
    is refused (a TypeError naming ``caller``)."""
    if get_array_module(*arrays, name=caller) is not np:
        return "cuda"
    return SETTINGS[_config.get_backend()]


def for_arrays(caller, *arrays):
    """The backend module that computes for these arrays (see name_for), or the bfloat16
    backend (deepnet.backends.bf16) when one of them is bfloat16.  Every op of
    deepnet.functional asks this first, so it is name_for and get written out."""
    if get_array_module(*arrays, name=caller) is not np:
        name = "cuda"
    else:
        name = SETTINGS[_config.get_backend()]
        # No bfloat16 array exists before ml_dtypes is imported: one lookup skips the test.
        if "ml_dtypes" in sys.modules and any(is_bfloat16(getattr(a, "dtype", None)) for a in arrays):
            name = "bf16"
    module = _loaded.get(name)
    return module if module is not None else get(name)


def supports(backend, op):
    """Whether ``backend`` (a module or a name) defines the optional op ``op``.  A call may
    still decline by returning None (see OPTIONAL_OPS)."""
    if op not in OPTIONAL_OPS:
        raise ValueError(
            f"deepnet.backends.supports: {op!r} is not an optional op "
            f"(those are {', '.join(OPTIONAL_OPS)}; every backend defines the required ones)"
        )
    module = get(backend) if isinstance(backend, str) else backend
    return callable(getattr(module, op, None))
