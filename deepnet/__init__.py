"""deepnet: Deep Learning from Scratch, chapter 8 (DeepConvNet on MNIST) on compiled kernels.

Users import ``deepnet.layers`` (the book's layers) and ``deepnet.functional`` (the kernels
as functions); ``deepnet.reference`` is the pure-NumPy reference of every kernel.  The
compute backends and their contract are in ``deepnet.backends``.
"""

from __future__ import annotations
from typing import TYPE_CHECKING, Any, Dict, Optional

from deepnet._config import (
    backend,
    get_backend,
    get_num_threads,
    get_winograd,
    kernels_compiled,
    set_backend,
    set_num_threads,
    set_winograd,
    winograd,
)
from deepnet._version import __version__
from deepnet import _memory
from deepnet._memory import keep_freed_memory

if TYPE_CHECKING:
    from deepnet.models.compiled import CompiledModel
    from deepnet.quant import Int8Model

__all__ = [
    "__version__",
    "backend",
    "get_backend",
    "get_num_threads",
    "get_winograd",
    "keep_freed_memory",
    "kernels_compiled",
    "set_backend",
    "set_num_threads",
    "set_winograd",
    "show_config",
    "config",
    "winograd",
    "quantize",
    "compile",
    "fit",
]


def quantize(model: Any, x_calibration: Any, *, percentile: Optional[float] = None) -> Int8Model:
    """The int8 form of a float model, its activation scales calibrated on ``x_calibration``
    (training or validation images, never the test set): deepnet.quant.quantize, imported
    only when called.  ``percentile``: calibrate on that percentile of each activation
    instead of its maximum."""
    from deepnet.quant import quantize as _quantize

    return _quantize(model, x_calibration, percentile=percentile)


def compile(model: Any, *, input_shape: Optional[Any] = None) -> CompiledModel:
    """The model's inference as one compiled plan: ``plan = deepnet.compile(model)``, then
    ``plan(x)`` gives ``model.predict(x)``'s bits with no Python between the layers
    (deepnet.models.compiled, imported only when called)."""
    from deepnet.models.compiled import compile as _compile

    return _compile(model, input_shape=input_shape)


def fit(model: Any, x: Any, t: Any, **settings: Any) -> Dict[str, Any]:
    """Train ``model`` in one call and return its history as a dict: deepnet.training.fit
    (epochs, batch_size, lr, lr_schedule, validation_split, augment, ...), imported only
    when called."""
    from deepnet.training.fit import fit as _fit

    return _fit(model, x, t, **settings)


def config() -> Dict[str, Any]:
    """What this installation has, as a dict (see show_config)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from deepnet import _config
    from deepnet.backends import cuda as _cuda

    openmp = _config._openmp
    blas = [
        f"{info.get('internal_api')} {info.get('version')} ({info.get('num_threads')} threads)"
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {
        "deepnet": __version__,
        "numpy": np.__version__,
        "kernels compiled": kernels_compiled(),
        "backend": get_backend(),
        "OpenMP": bool(openmp and openmp.openmp_enabled()),
        "threads": get_num_threads(),
        "F16C": bool(openmp and openmp.f16c_enabled()),
        "vector width": f"{openmp.vector_bits()} bits" if openmp else "none",
        "CPU variant": _cpu_variant_config(),
        "Winograd": _winograd_config() if kernels_compiled() else "no (kernels not built)",
        "BLAS": ", ".join(blas) or "none found",
        "freed memory": _memory.status,
        "CuPy": _cuda.cupy_or_none() is not None,
        "GPU usable": _cuda.gpu_available(),
    }


def _cpu_variant_config() -> str:
    from deepnet import _config

    variant = _config.cpu_variant()
    if variant is None:
        return "none (kernels not built)"
    dispatch = "chosen at import" if _config.cpu_dispatch() else "fixed by the build"
    return f"{variant[0]} ({dispatch}: {variant[1]})"


def _winograd_config() -> str:
    from deepnet.backends import cpu as _cpu

    return f"{get_winograd()} ({_cpu.WINOGRAD_RULE})"


def show_config() -> None:
    """Print how deepnet was built and what it will use (kernels, OpenMP, threads, BLAS, GPU)."""
    for key, value in config().items():
        value = "yes" if value is True else "no" if value is False else value
        print(f"{key:>17}: {value}")
