"""deepnet.backends: every backend keeps the contract, and the registry picks the documented one.

The cuda backend's module imports without CuPy (CuPy is imported on first use), so its
functions are checked here on any machine; tests/test_cuda.py runs them.
"""

import ast
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepnet
from deepnet import backends, functional as F

# Without the compiled kernels the cpu module cannot import; the others always import.
AVAILABLE = [name for name in backends.NAMES if name != "cpu" or deepnet.kernels_compiled()]


def _parameters(function):
    return tuple(inspect.signature(function).parameters)


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("op", sorted(backends.REQUIRED_OPS))
def test_every_backend_defines_every_required_op(name, op):
    function = getattr(backends.get(name), op, None)
    assert callable(function), f"backend {name} lacks the required op {op}"
    assert _parameters(function) == backends.REQUIRED_OPS[op], (
        f"{name}.{op}{inspect.signature(function)}: the contract says {backends.REQUIRED_OPS[op]}"
    )


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("op", sorted(backends.OPTIONAL_OPS))
def test_optional_ops_are_absent_or_keep_the_contract(name, op):
    module = backends.get(name)
    function = getattr(module, op, None)
    assert backends.supports(module, op) is backends.supports(name, op) is (function is not None)
    if function is not None:
        assert callable(function)
        assert _parameters(function) == backends.OPTIONAL_OPS[op]


def test_required_and_optional_ops_are_apart():
    assert not set(backends.REQUIRED_OPS) & set(backends.OPTIONAL_OPS)
    with pytest.raises(ValueError, match="not an optional op"):
        backends.supports("reference", "im2col")


def test_the_cuda_backend_exports_its_ops():
    """``from deepnet.backends.cuda import *`` (deepnet._cuda, the old path) gets every op."""
    assert set(backends.REQUIRED_OPS) <= set(backends.get("cuda").__all__)


def test_functional_calls_only_ops_of_the_contract():
    """Every ``.name(`` functional calls on a backend module is a required or optional op
    (functional's own ops and those it re-exports from the modules of batch normalisation
    and of the image warps)."""
    from deepnet import _batchnorm_ops, _warp_ops

    tree = ast.Module(
        body=[node for module in (F, _batchnorm_ops, _warp_ops) for node in ast.parse(inspect.getsource(module)).body],
        type_ignores=[],
    )
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and getattr(node.func.value.func, "id", None) == "_backend"
    }
    called |= {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and getattr(node.func.value, "id", None) == "backend"
    }
    assert called, "the parse found no backend calls"
    assert called <= set(backends.REQUIRED_OPS) | set(backends.OPTIONAL_OPS), sorted(
        called - set(backends.REQUIRED_OPS) - set(backends.OPTIONAL_OPS)
    )
    # And functional calls every required op: none is required without a caller.
    assert set(backends.REQUIRED_OPS) <= called


@pytest.mark.parametrize("setting, name", sorted(backends.SETTINGS.items()))
def test_the_registry_picks_the_setting_s_backend_for_numpy_arrays(setting, name):
    if name == "cpu" and not deepnet.kernels_compiled():
        pytest.skip("kernels not built")
    with deepnet.backend(setting):
        assert backends.name_for("test", np.zeros(1), np.ones((2, 2))) == name
        assert backends.for_arrays("test", np.zeros(1)) is backends.get(name)
        assert F._backend("test", np.zeros(1)).__name__ == f"deepnet.backends.{name}"


def test_the_settings_are_deepnet_s():
    assert {"cython", "numpy"} == set(backends.SETTINGS)
    for setting in backends.SETTINGS:
        with deepnet.backend(setting):
            assert deepnet.get_backend() == setting


class _FakeCupyArray:
    """Enough of a CuPy array for deepnet._array.is_cupy_array (see tests/test_cuda.py)."""

    __module__ = "cupy"


def test_the_registry_picks_cuda_for_cupy_arrays_and_refuses_a_mix(monkeypatch):
    from deepnet import _array

    fake = _FakeCupyArray()
    assert _array.is_cupy_array(fake)
    monkeypatch.setattr(_array, "require_cupy", lambda: object())
    for setting in backends.SETTINGS:
        with deepnet.backend(setting):
            assert backends.name_for("test", fake) == "cuda"
    with pytest.raises(TypeError, match="test: cannot mix NumPy and CuPy"):
        backends.name_for("test", fake, np.zeros(1))


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="no backend 'torch'"):
        backends.get("torch")


def test_importing_the_registry_imports_no_backend():
    code = (
        "import sys\nimport deepnet.backends, deepnet.functional\n"
        "loaded = [m for m in ('deepnet.backends.cpu', 'deepnet.backends.cuda', 'deepnet._kernels.conv', 'cupy')"
        " if m in sys.modules]\nassert not loaded, loaded\n"
    )
    root = Path(deepnet.__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "old, new, private",
    [
        ("deepnet.reference", "deepnet.backends.reference", ()),
        ("deepnet._cpu", "deepnet.backends.cpu", ("_prepared_filters", "_prepared", "_max_abs")),
        ("deepnet._cuda", "deepnet.backends.cuda", ("_cupy", "_kernel", "_module")),
    ],
)
def test_the_old_paths_re_export_the_backends(old, new, private):
    if new.endswith("cpu") and not deepnet.kernels_compiled():
        pytest.skip("kernels not built")
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in tuple(backends.REQUIRED_OPS) + private:
        assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name}"


def test_the_reference_and_cuda_share_one_batch_norm_and_adam():
    from deepnet.backends import _shared

    for op in ("adam_update", "batch_norm_sums", "channel_affine", "batch_norm_backward_sums", "batch_norm_dx"):
        assert getattr(backends.get("reference"), op) is getattr(_shared, op)
        assert getattr(backends.get("cuda"), op) is getattr(_shared, op)
