"""Settings (backend, threads) are scoped per thread and context; an uncompiled source tree
says so when imported."""

import contextvars
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import deepnet
from deepnet import _config
from deepnet import functional as F

needs_kernels = pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")


@needs_kernels
def test_overlapping_backend_blocks_in_two_threads_keep_their_own_backend():
    """A enters "numpy", B enters "cython", A leaves, B leaves: with one process-wide
    setting A's exit put "cython" back under B's feet, and B's exit left "numpy" behind."""
    default = deepnet.get_backend()
    entered, a_left = threading.Barrier(2), threading.Event()
    seen = {}

    def thread_a():
        with deepnet.backend("numpy"):
            entered.wait()
            seen["a inside"] = deepnet.get_backend()
        a_left.set()

    def thread_b():
        with deepnet.backend("cython"):
            entered.wait()
            a_left.wait()
            seen["b after a left"] = deepnet.get_backend()
            seen["b computes with"] = F._backend("test", np.zeros(1)).__name__
        seen["b after"] = deepnet.get_backend()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {
        "a inside": "numpy",
        "b after a left": "cython",
        "b computes with": "deepnet.backends.cpu",
        "b after": "cython",
    }
    assert deepnet.get_backend() == default


def test_settings_of_one_thread_or_context_do_not_leak_into_another():
    default_backend, default_threads = deepnet.get_backend(), deepnet.get_num_threads()
    seen = {}

    def worker():
        deepnet.set_backend("numpy")
        _config._num_threads.set(7)  # the thread count alone (set_num_threads also sets BLAS)
        seen["worker"] = (deepnet.get_backend(), deepnet.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"] == ("numpy", 7)
    assert (deepnet.get_backend(), deepnet.get_num_threads()) == (default_backend, default_threads)
    # and a new thread starts from the defaults, not from what another thread set
    thread = threading.Thread(target=lambda: seen.update(fresh=(deepnet.get_backend(), deepnet.get_num_threads())))
    thread.start()
    thread.join()
    assert seen["fresh"] == (default_backend, default_threads)
    contextvars.copy_context().run(deepnet.set_backend, "numpy")
    assert deepnet.get_backend() == default_backend


def test_backend_block_restores_the_previous_backend_on_error():
    before = deepnet.get_backend()
    with pytest.raises(ZeroDivisionError):
        with deepnet.backend("numpy"):
            assert deepnet.get_backend() == "numpy"
            1 / 0
    assert deepnet.get_backend() == before
    with pytest.raises(ValueError, match=r"deepnet.backend: expected one of .* got 'torch'"):
        with deepnet.backend("torch"):
            pass
    assert deepnet.get_backend() == before


def blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_set_num_threads_none_restores_the_blas_limit_the_user_had(monkeypatch):
    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library")
    # Make deepnet's default thread count (2) differ from the user's BLAS limit (1): giving
    # BLAS deepnet's default is then visibly not the same as restoring the user's limit.
    monkeypatch.setattr(_config, "_default_num_threads", lambda: 2)
    user = threadpool_limits(limits=1, user_api="blas")  # what the user had set
    try:
        deepnet.set_num_threads(2)
        assert set(blas_threads()) == {2}
        deepnet.set_num_threads(3)
        deepnet.set_num_threads(None)
        assert set(blas_threads()) == {1}
        assert deepnet.get_num_threads() == 2
    finally:
        deepnet.set_num_threads(None)
        user.restore_original_limits()


SOURCE_TREE = Path(__file__).resolve().parents[1] / "deepnet"


def run_python(code, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
        timeout=120,
    )


def test_importing_a_source_tree_without_kernels_warns_once_and_names_the_fix(tmp_path):
    """python -m deepnet from a repository root whose kernels were not built used to run
    everything on the NumPy reference without a word."""
    shutil.copytree(SOURCE_TREE, tmp_path / "deepnet", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    result = run_python(
        "import deepnet, deepnet.functional, deepnet.layers\ndeepnet.show_config()",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("RuntimeWarning") == 1, result.stderr
    for fragment in (
        "compiled kernels are not importable",
        "NumPy reference",
        str(tmp_path / "deepnet"),
        "pip install -e .",
        "outside the source tree",
    ):
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "kernels compiled: no" in result.stdout


@needs_kernels
def test_importing_the_built_package_does_not_warn(tmp_path):
    package_home = str(Path(deepnet.__file__).resolve().parents[1])  # installed, or an in-place build
    result = run_python(
        "import deepnet, deepnet.layers", cwd=tmp_path, env={"PYTHONPATH": package_home, "PYTHONWARNINGS": "error"}
    )
    assert result.returncode == 0, result.stderr
