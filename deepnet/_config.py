"""Process-wide settings: the CPU backend and the thread count.

The thread count is decided here, once, and passed down to the kernels as a plain int;
kernels never ask OpenMP themselves.  BLAS (numpy's matmul) is limited to the same
number of threads with threadpoolctl, so OpenMP and BLAS never oversubscribe the cores.
"""
import contextlib
import os

BACKENDS = ("cython", "numpy")

try:
    from deepnet._kernels import openmp_helpers as _openmp
except ImportError:  # a source tree whose kernels were not built
    _openmp = None

_state = {
    "backend": "cython" if _openmp is not None else "numpy",
    "num_threads": None,  # None: follow OMP_NUM_THREADS / the CPUs available
}


def kernels_compiled():
    """True when the compiled Cython kernels can be imported."""
    return _openmp is not None


def get_backend():
    """Name of the CPU backend in use: "cython" (compiled kernels) or "numpy" (reference)."""
    return _state["backend"]


def set_backend(name):
    """Choose the CPU backend: "cython" (compiled kernels) or "numpy" (pure-NumPy reference)."""
    if name not in BACKENDS:
        raise ValueError(f"deepnet.set_backend: expected one of {BACKENDS}, got {name!r}")
    if name == "cython" and not kernels_compiled():
        raise ImportError("deepnet.set_backend: the compiled kernels are not built; "
                          "install the package with `pip install .`")
    _state["backend"] = name


@contextlib.contextmanager
def backend(name):
    """Context manager: run the block with another CPU backend, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def _default_num_threads():
    if _openmp is not None:
        return _openmp.max_threads()  # honours OMP_NUM_THREADS and the CPU affinity
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def get_num_threads():
    """Threads the kernels use: set_num_threads(n) if called, else OMP_NUM_THREADS, else all CPUs."""
    return _state["num_threads"] or _default_num_threads()


def set_num_threads(n):
    """Use n threads in the kernels and in BLAS (None: back to the default)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"deepnet.set_num_threads: expected a positive int or None, got {n!r}")
    _state["num_threads"] = n
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=get_num_threads(), user_api="blas")


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
