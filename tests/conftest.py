import os

import numpy as np
import pytest

import deepnet
from cases import BACKENDS, DTYPES


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    """Caches (the parsed MNIST arrays) go to a directory of this session, never ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def default_thread_count():
    """A test that sets the thread count (a --threads option) leaves the default behind."""
    yield
    if deepnet.get_num_threads() != deepnet._config._default_num_threads():
        deepnet.set_num_threads(None)


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each CPU backend in turn (its name); a test that parametrizes "backend" overrides it."""
    with deepnet.backend(request.param):
        yield request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    """Each floating dtype in turn; a test that parametrizes "dtype" (a subset) overrides it."""
    return request.param


@pytest.fixture
def numpy_backend():
    with deepnet.backend("numpy"):
        yield


def pytest_sessionstart(session):
    # On CI the compiled kernels must be what is tested, never silently skipped.
    if os.environ.get("CI") and not deepnet.kernels_compiled():
        pytest.exit("CI: deepnet's compiled kernels are not importable; the build is broken", returncode=3)


def pytest_report_header(config):
    cfg = deepnet.config()
    return [
        f"deepnet: kernels compiled={cfg['kernels compiled']} OpenMP={cfg['OpenMP']} "
        f"threads={cfg['threads']} F16C={cfg['F16C']} BLAS={cfg['BLAS']}"
    ]
