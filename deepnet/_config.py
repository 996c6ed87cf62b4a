"""Settings: the CPU backend and the thread count, scoped per thread and context.

Both live in contextvars, as sklearn's config_context keeps its settings per thread:
set_backend / set_num_threads and the ``with backend(...)`` block change them for the
calling thread (or asyncio task) only, and a new thread starts from the defaults (the
compiled backend, OMP_NUM_THREADS or all CPUs).

The thread count is decided here and passed down to the kernels as a plain int; kernels
never ask OpenMP themselves.  BLAS (numpy's matmul) has one process-wide limit: the latest
set_num_threads(n) sets it to n with threadpoolctl, so OpenMP and BLAS never oversubscribe
the cores, and set_num_threads(None) restores the limit BLAS had before deepnet changed it.
"""

from __future__ import annotations
import contextlib
import contextvars
import os
import warnings

BACKENDS = ("cython", "numpy")

try:
    from deepnet._kernels import openmp_helpers as _openmp  # type: ignore[attr-defined]  # compiled, no stub
except ImportError:  # a source tree whose kernels were not built
    _openmp = None
    warnings.warn(
        "deepnet: the compiled kernels are not importable, so everything runs on the NumPy "
        f"reference backend (about 6x slower). deepnet was imported from {os.path.dirname(__file__)}, "
        "probably a source tree without built kernels: build them there with `pip install -e .`, "
        "or run from outside the source tree to use the installed package.",
        RuntimeWarning,
        stacklevel=2,
    )

WINOGRAD_MODES = ("auto", "always", "never")

_backend = contextvars.ContextVar("deepnet_backend", default="cython" if _openmp is not None else "numpy")
_num_threads = contextvars.ContextVar("deepnet_num_threads", default=None)  # None: the default
_winograd = contextvars.ContextVar("deepnet_winograd", default=None)  # None: DEEPNET_WINOGRAD or "auto"
_blas_limiter = None  # threadpoolctl's record of the BLAS limits before deepnet first set them


def kernels_compiled():
    """True when the compiled Cython kernels can be imported."""
    return _openmp is not None


def cpu_variant() -> tuple[str, str] | None:
    """The compiled kernels' instruction-set variant and why it was chosen, e.g. ("avx2",
    "the best this CPU supports ..."), or None without compiled kernels.  A build with
    DEEPNET_MARCH=dispatch chooses at import by CPUID, or as DEEPNET_CPU_VARIANT says
    (docs/building.md); any other build has the one variant its compiler flags gave."""
    if _openmp is None:
        return None
    name, reason = _openmp.cpu_variant()
    return name, reason


def cpu_dispatch() -> bool:
    """True when the compiled kernels choose their instruction set at import (a build with
    DEEPNET_MARCH=dispatch)."""
    return _openmp is not None and _openmp.dispatch_enabled()


def get_backend():
    """Name of the CPU backend in use: "cython" (compiled kernels) or "numpy" (reference)."""
    return _backend.get()


def _checked_backend(name, caller):
    if name not in BACKENDS:
        raise ValueError(f"{caller}: expected one of {BACKENDS}, got {name!r}")
    if name == "cython" and not kernels_compiled():
        raise ImportError(f"{caller}: the compiled kernels are not built; install the package with `pip install .`")
    return name


def set_backend(name):
    """Choose the CPU backend of this thread/context: "cython" (compiled kernels) or
    "numpy" (pure-NumPy reference)."""
    _backend.set(_checked_backend(name, "deepnet.set_backend"))


@contextlib.contextmanager
def backend(name):
    """Context manager: run the block with another CPU backend, then restore the previous
    one (in this thread/context only; other threads keep theirs)."""
    token = _backend.set(_checked_backend(name, "deepnet.backend"))
    try:
        yield
    finally:
        _backend.reset(token)


def _default_num_threads():
    if _openmp is not None:
        return _openmp.max_threads()  # honours OMP_NUM_THREADS and the CPU affinity
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def get_num_threads():
    """Threads the kernels use: set_num_threads(n) if called, else OMP_NUM_THREADS, else all CPUs."""
    return _num_threads.get() or _default_num_threads()


def set_num_threads(n):
    """Use n threads in the kernels (this thread/context) and in BLAS (process-wide).

    None goes back to the default and gives BLAS back the limit it had before deepnet
    first changed it.
    """
    global _blas_limiter
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"deepnet.set_num_threads: expected a positive int or None, got {n!r}")
    _num_threads.set(n)
    from threadpoolctl import threadpool_limits

    if n is None:
        if _blas_limiter is not None:
            _blas_limiter.restore_original_limits()
            _blas_limiter = None
    elif _blas_limiter is None:
        _blas_limiter = threadpool_limits(limits=n, user_api="blas")
    else:
        threadpool_limits(limits=n, user_api="blas")


_blas_pools = None


@contextlib.contextmanager
def single_threaded_blas():
    """Run numpy's BLAS on one thread inside the block.

    For the small matrix products between the OpenMP kernels (the affine layers): after a
    threaded call, OpenBLAS's idle workers keep spinning for a while and take the cores
    away from the kernels' threads; a single-threaded call never wakes them.
    """
    global _blas_pools
    if _blas_pools is None:
        from threadpoolctl import ThreadpoolController

        _blas_pools = ThreadpoolController().select(user_api="blas")
    with _blas_pools.limit(limits=1):
        yield


def get_winograd():
    """When 3x3 stride-1 convolutions run as Winograd F(2x2, 3x3) on the CPU: "auto" (where
    measured faster, see deepnet.backends.cpu.uses_winograd, and only within Winograd's
    range: its transforms grow values up to 81 C max|x| max|W|, so that inputs near the
    largest float overflow where the direct kernel's result is finite; outside that range,
    and for inputs holding NaN or Inf, "auto" runs the direct kernel, see
    deepnet.backends.cpu.winograd_in_range), "always" (every eligible pass as Winograd, even
    outside its range, where it can give Inf or NaN that the direct kernel does not) or
    "never" (direct only).
    set_winograd(mode) if called, else the DEEPNET_WINOGRAD environment variable, else "auto"."""
    mode = _winograd.get()
    if mode is None:
        mode = os.environ.get("DEEPNET_WINOGRAD", "auto")
        if mode not in WINOGRAD_MODES:
            raise ValueError(f"deepnet: DEEPNET_WINOGRAD must be one of {WINOGRAD_MODES}, got {mode!r}")
    return mode


def _checked_winograd(mode, caller):
    if mode not in WINOGRAD_MODES:
        raise ValueError(f"{caller}: expected one of {WINOGRAD_MODES}, got {mode!r}")
    return mode


def set_winograd(mode):
    """Choose when convolutions use Winograd (this thread/context): "auto", "always", "never"."""
    _winograd.set(_checked_winograd(mode, "deepnet.set_winograd"))


@contextlib.contextmanager
def winograd(mode):
    """Context manager: run the block with another Winograd mode, then restore the previous one."""
    token = _winograd.set(_checked_winograd(mode, "deepnet.winograd"))
    try:
        yield
    finally:
        _winograd.reset(token)
