"""Shared setup of the kernel benchmarks (benches/micro/test_bench_kernels.py).

Run from the repository root, with deepnet installed (``pip install .``) or with the
in-place build on the path (``PYTHONPATH=.``):

    pytest benches --benchmark-disable     # every benchmark once, as a quick check (CI)
    pytest benches --benchmark-only        # the timings, grouped kernel vs reference

The thread count is deepnet's default (OMP_NUM_THREADS, else every CPU available);
set OMP_NUM_THREADS to benchmark another one.
"""

import numpy as np
import pytest

import deepnet


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture(params=["cython", "numpy"], ids=["backend=cython", "backend=numpy"])
def backend(request):
    """The CPU backend a benchmark runs on: the compiled kernels or the NumPy reference."""
    if request.param == "cython" and not deepnet.kernels_compiled():
        pytest.skip("deepnet's compiled kernels are not built")
    return request.param


def pytest_report_header(config):
    cfg = deepnet.config()
    return [
        f"deepnet benches: deepnet {cfg['deepnet']}, numpy {cfg['numpy']}, threads={cfg['threads']}, "
        f"OpenMP={cfg['OpenMP']}, F16C={cfg['F16C']}, BLAS={cfg['BLAS']}"
    ]
