"""Tests of the optional CUDA backend (deepnet._cuda and kernels/cuda/*.cu).

Three layers, so that something meaningful runs on every machine:

* nvcc: every .cu file compiles to PTX for all three dtypes (needs only nvcc).
* host: the very same kernel source is compiled as plain C++ with g++ (CUDA
  keywords defined away, one "thread" that walks every grid-stride loop) and
  deepnet._cuda runs on top of it with NumPy standing in for CuPy.  This
  checks the index arithmetic, the argument lists and the dtypes that
  deepnet._cuda passes to each kernel -- everything except CuPy itself.
* cuda: the same tests on a real GPU through CuPy.

Results are compared with deepnet's NumPy reference (deepnet.backends.reference), evaluated
in float64.
"""

import ctypes
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

from deepnet.backends import cuda as _cuda
from deepnet.backends import reference
from cases import WINDOWS, random_windows
from support import numerical_gradient

NVCC = shutil.which("nvcc")
GPU_REASON = "CuPy with a usable GPU not available"
TOLERANCE = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}


# ========================================================== nvcc compilation

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not found on PATH")

# Itanium-mangled template argument of each storage type (float -> "f", ...).
MANGLED_TYPES = {"__half": "6__half", "float": "f", "double": "d"}


@needs_nvcc
@pytest.mark.parametrize("source", _cuda.cuda_sources(), ids=lambda p: p.name)
def test_nvcc_compiles_every_dtype(source, tmp_path):
    ptx = tmp_path / (source.name + ".ptx")
    result = subprocess.run(
        [NVCC, "--ptx", "-arch=sm_80", "-Werror", "all-warnings", str(source), "-o", str(ptx)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stderr}"

    entries = re.findall(r"\.entry\s+(\w+)", ptx.read_text())
    for kernel in _cuda.KERNELS[source.name]:
        for ctype, mangled in MANGLED_TYPES.items():
            prefix = f"_Z{len(kernel)}{kernel}I{mangled}E"
            assert any(e.startswith(prefix) for e in entries), (
                f"{source.name}: no {kernel}<{ctype}> kernel in the PTX (entries: {entries})"
            )


def test_kernel_table_matches_source_files():
    assert sorted(p.name for p in _cuda.cuda_sources()) == sorted(_cuda.KERNELS)
    for name in _cuda.KERNELS:
        text = _cuda.load_cuda_source(name)
        assert '#include "' not in text  # local headers are pasted in for NVRTC
        assert "#include <cuda_fp16.h>" in text
        for kernel in _cuda.KERNELS[name]:
            assert re.search(rf"__global__ void {kernel}\(", text), kernel


# ============================================== helpers that need no CuPy/GPU


def test_import_never_imports_cupy():
    """Importing deepnet._cuda works without CuPy and does not import it."""
    repo = Path(_cuda.__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "sys.modules['cupy'] = None  # any 'import cupy' now fails\n"
        "from deepnet.backends import cuda as _cuda\n"
        "assert _cuda.cupy_or_none() is None\n"
        "assert _cuda.gpu_available() is False\n"
        "try:\n"
        "    _cuda.to_gpu([1.0])\n"
        "except RuntimeError as e:\n"
        "    assert 'CuPy' in str(e)\n"
        "else:\n"
        "    raise AssertionError('to_gpu without CuPy must raise')\n"
    )
    check_code = "import sys\nfrom deepnet.backends import cuda as _cuda\nassert 'cupy' not in sys.modules\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    for snippet in (check_code, code):
        result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr


class FakeCupyArray:
    """Looks like a CuPy array to is_cupy_array (which only checks the module name)."""


FakeCupyArray.__module__ = "cupy._core.core"


def test_is_cupy_array():
    assert _cuda.is_cupy_array(FakeCupyArray())
    assert not _cuda.is_cupy_array(np.zeros(3))
    assert not _cuda.is_cupy_array([1, 2])


def test_get_array_module_numpy_and_mixing():
    assert _cuda.get_array_module(np.zeros(2), None, 3.0, np.ones(1)) is np
    assert _cuda.get_array_module() is np
    with pytest.raises(TypeError, match=r"conv_forward: cannot mix NumPy and CuPy"):
        _cuda.get_array_module(np.zeros(2), FakeCupyArray(), name="conv_forward")


def test_to_cpu_passes_numpy_through():
    a = np.arange(3.0)
    assert _cuda.to_cpu(a) is a
    np.testing.assert_array_equal(_cuda.to_cpu([1, 2]), [1, 2])


# ============================================================ the backends


@functools.lru_cache(maxsize=None)
def _cuda_include_dir():
    """The CUDA include directory (with cuda_fp16.h), or None."""
    candidates = []
    if NVCC:
        dryrun = subprocess.run(
            [NVCC, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull], capture_output=True, text=True
        )
        for line in (dryrun.stdout + dryrun.stderr).splitlines():
            if "INCLUDES=" in line:
                candidates += re.findall(r'-I"?([^"\s]+)', line)
        candidates.append(str(Path(NVCC).resolve().parent.parent / "include"))
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "include"))
    candidates.append("/usr/local/cuda/include")
    for directory in candidates:
        if os.path.isfile(os.path.join(directory, "cuda_fp16.h")):
            return directory
    return None


# C++ prelude that turns CUDA kernels into ordinary functions: one thread
# (threadIdx = blockIdx = 0, blockDim = gridDim = 1) runs each grid-stride loop
# over every item.  No kernel uses shared memory or synchronisation, so this is
# the same computation as on the GPU, just serial.
HOST_PRELUDE = r"""
#include <cuda_fp16.h>
#include <math.h>
#undef __global__
#undef __device__
#define __global__
#define __device__
struct HostDim3 { unsigned int x, y, z; };
static const HostDim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static const HostDim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
template <typename F> const char* host_signature(F) { return __PRETTY_FUNCTION__; }
"""

HOST_SCALARS = {
    "int": (np.int32, ctypes.c_int32),
    "long long int": (np.int64, ctypes.c_int64),
    "float": (np.float32, ctypes.c_float),
    "double": (np.float64, ctypes.c_double),
}
HOST_POINTEES = {"__half": np.float16, "float": np.float32, "double": np.float64, "int": np.int32}
_HOST_BUILD_DIR = None


@functools.lru_cache(maxsize=None)
def _host_library(code, names):
    """Compile ``code`` with g++ into a shared library exporting each template in ``names``."""
    global _HOST_BUILD_DIR
    if _HOST_BUILD_DIR is None:
        _HOST_BUILD_DIR = tempfile.TemporaryDirectory(prefix="deepnet-host-kernels-")
    exports = "".join(
        f'extern "C" void* host_kernel_{i}(void) {{ return reinterpret_cast<void*>(&{name}); }}\n'
        f'extern "C" const char* host_signature_{i}(void) {{ return host_signature(&{name}); }}\n'
        for i, name in enumerate(names)
    )
    build = Path(_HOST_BUILD_DIR.name)
    stem = f"kernels{len(list(build.iterdir()))}"
    (build / f"{stem}.cpp").write_text(HOST_PRELUDE + code + "\n" + exports)
    result = subprocess.run(
        [
            "g++",
            "-O1",
            "-shared",
            "-fPIC",
            "-I",
            _cuda_include_dir(),
            str(build / f"{stem}.cpp"),
            "-o",
            str(build / f"{stem}.so"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"g++ failed on the host build of the kernels:\n{result.stderr}"
    return ctypes.CDLL(str(build / f"{stem}.so"))


class HostKernel:
    """Stands in for a CuPy RawKernel: checks each argument against the C++ signature."""

    def __init__(self, library, index, name):
        self.name = name
        get_address = getattr(library, f"host_kernel_{index}")
        get_address.restype = ctypes.c_void_p
        get_signature = getattr(library, f"host_signature_{index}")
        get_signature.restype = ctypes.c_char_p
        signature = get_signature().decode()  # "... [with F = void (*)(const float*, int, ...)]"
        params = re.search(r"void \(\*\)\((.*)\)\]$", signature).group(1)
        self.params = [p.replace("__restrict__", "").strip() for p in params.split(",")]
        ctypes_types = [ctypes.c_void_p if p.endswith("*") else HOST_SCALARS[p][1] for p in self.params]
        self.function = ctypes.CFUNCTYPE(None, *ctypes_types)(get_address())

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} args for {self.params}"
        values = []
        for position, (arg, param) in enumerate(zip(args, self.params)):
            where = f"{self.name} argument {position} ({param})"
            if param.endswith("*"):
                pointee = param.rstrip("*").replace("const", "").strip()
                assert isinstance(arg, np.ndarray), f"{where}: got {type(arg)}"
                assert arg.dtype == HOST_POINTEES[pointee], f"{where}: got dtype {arg.dtype}"
                assert arg.flags.c_contiguous, f"{where}: array is not C-contiguous"
                values.append(arg.ctypes.data)
            else:
                assert type(arg) is HOST_SCALARS[param][0], f"{where}: got {type(arg)}"
                values.append(arg.item())
        self.function(*values)


class HostRawModule:
    """Stands in for cupy.RawModule, compiling the kernels for the CPU."""

    def __init__(self, code, options=(), name_expressions=()):
        self.names = list(name_expressions)
        self.library = _host_library(code, tuple(self.names))

    def get_function(self, name):
        return HostKernel(self.library, self.names.index(name), name)


# The part of the CuPy API that deepnet._cuda uses, served by NumPy.
HOST_CUPY = types.SimpleNamespace(
    RawModule=HostRawModule,
    ascontiguousarray=np.ascontiguousarray,
    empty=np.empty,
    empty_like=np.empty_like,
    matmul=np.matmul,
    random=np.random,
)


class Backend:
    def __init__(self, name, put, get):
        self.name, self.put, self.get = name, put, get


@pytest.fixture(params=["host", "cuda"])
def cuda_backend(request, monkeypatch):
    """Where the CUDA kernels run: the host emulation (g++ on cupy's raw kernels) or the GPU.
    Not conftest's ``backend`` (which selects deepnet's CPU backend)."""
    if request.param == "cuda":
        if not _cuda.gpu_available():
            pytest.skip(GPU_REASON)
        yield Backend("cuda", _cuda.to_gpu, _cuda.to_cpu)
        return
    if shutil.which("g++") is None or _cuda_include_dir() is None:
        pytest.skip("host emulation needs g++ and the CUDA headers (cuda_fp16.h)")
    monkeypatch.setattr(_cuda, "_cupy", lambda: HOST_CUPY)
    _cuda._module.cache_clear()
    _cuda._kernel.cache_clear()
    yield Backend("host", np.ascontiguousarray, np.asarray)
    _cuda._module.cache_clear()
    _cuda._kernel.cache_clear()


# ============================================================ random cases


def geometries(pool=False):
    """Five random windows (cases.random_geometries: batch 1..8, channels 1..17, H != W,
    kernel 1..7, stride 1..3, pad 0..3) and the fixed cases.WINDOWS, as
    (x shape, kh, kw, stride, pad)."""
    fixed = [(g.x_shape, *g.kernel, g.stride, g.pad) for g in WINDOWS]
    return random_windows(5, seed=2027 if pool else 2026, pool=pool) + fixed


def random_array(rng, shape, dtype):
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def assert_close(got, want, dtype):
    """Compare with the dtype's relative tolerance, scaled by the largest expected value."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    tol = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def as64(*arrays):
    return [a.astype(np.float64) for a in arrays]


# ============================================================ kernel tests


@pytest.mark.parametrize("geometry", geometries(), ids=str)
def test_im2col_col2im(cuda_backend, dtype, geometry):
    shape, kh, kw, stride, pad = geometry
    rng = np.random.default_rng(1)
    x = random_array(rng, shape, dtype)
    want_col = reference.im2col(*as64(x), kh, kw, stride, pad)
    col = cuda_backend.get(_cuda.im2col(cuda_backend.put(x), kh, kw, stride, pad))
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, want_col.astype(dtype))  # a pure copy: exact

    dcol = random_array(rng, want_col.shape, dtype)
    want_x = reference.col2im(*as64(dcol), shape, kh, kw, stride, pad)
    dx = cuda_backend.get(_cuda.col2im(cuda_backend.put(dcol), shape, kh, kw, stride, pad))
    assert dx.dtype == dtype and dx.shape == shape
    assert_close(dx, want_x, dtype)


@pytest.mark.parametrize("geometry", geometries(), ids=str)
def test_conv_forward_backward(cuda_backend, dtype, geometry):
    (N, C, H, W_), kh, kw, stride, pad = geometry
    rng = np.random.default_rng(2)
    FN = int(rng.integers(1, 9))
    x = random_array(rng, (N, C, H, W_), dtype)
    W = random_array(rng, (FN, C, kh, kw), dtype)
    b = random_array(rng, (FN,), dtype)
    want_y = reference.conv_forward(*as64(x, W, b), stride, pad)
    y = cuda_backend.get(_cuda.conv_forward(cuda_backend.put(x), cuda_backend.put(W), cuda_backend.put(b), stride, pad))
    assert y.dtype == dtype
    assert_close(y, want_y, dtype)

    dout = random_array(rng, want_y.shape, dtype)
    want = reference.conv_backward(*as64(dout, x, W), stride, pad)
    got = _cuda.conv_backward(cuda_backend.put(dout), cuda_backend.put(x), cuda_backend.put(W), stride, pad)
    for g, w, name in zip(got, want, ("dx", "dW", "db")):
        g = cuda_backend.get(g)
        assert g.dtype == dtype, name
        assert_close(g, w, dtype)


@pytest.mark.parametrize("geometry", geometries(pool=True), ids=str)
def test_max_pool(cuda_backend, dtype, geometry):
    shape, kh, kw, stride, pad = geometry
    rng = np.random.default_rng(3)
    x = random_array(rng, shape, dtype)
    x.flat[::7] = x.flat[1]  # plenty of ties
    want_y, want_arg = reference.max_pool_forward(*as64(x), kh, kw, stride, pad)
    y, arg = _cuda.max_pool_forward(cuda_backend.put(x), kh, kw, stride, pad)
    y, arg = cuda_backend.get(y), cuda_backend.get(arg)
    assert y.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(y, want_y.astype(dtype))
    np.testing.assert_array_equal(arg, want_arg)

    dout = random_array(rng, y.shape, dtype)
    want_dx = reference.max_pool_backward(*as64(dout), want_arg, shape, kh, kw, stride, pad)
    dx = _cuda.max_pool_backward(cuda_backend.put(dout), cuda_backend.put(arg), shape, kh, kw, stride, pad)
    dx = cuda_backend.get(dx)
    assert dx.dtype == dtype
    assert_close(dx, want_dx, dtype)


def test_max_pool_nan_ties_and_padding(cuda_backend, dtype):
    x = np.zeros((1, 1, 4, 5), dtype=dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 1, 3] = np.nan
    x[0, 0, 2, 2] = 5  # loses against the NaN in its window
    y, arg = _cuda.max_pool_forward(cuda_backend.put(x), 3, 3, (1, 1), (0, 0))
    arg = cuda_backend.get(arg)
    np.testing.assert_array_equal(arg, [[[[6, 6, 8], [6, 6, 8]]]])  # first NaN wins
    assert np.isnan(cuda_backend.get(y)).all()

    # All -inf with padding: padding must not win, the first real pixel does.
    x = np.full((2, 3, 5, 4), -np.inf, dtype=dtype)
    y, arg = _cuda.max_pool_forward(cuda_backend.put(x), 3, 2, (2, 2), (2, 1))
    y, arg = cuda_backend.get(y), cuda_backend.get(arg)
    OH, OW = arg.shape[2:]
    rows = np.maximum(np.arange(OH) * 2 - 2, 0)
    cols = np.maximum(np.arange(OW) * 2 - 1, 0)
    expected = rows[:, None] * 4 + cols[None, :]
    np.testing.assert_array_equal(arg, np.broadcast_to(expected, arg.shape))
    assert np.isneginf(y).all()


def test_relu(cuda_backend, dtype):
    rng = np.random.default_rng(4)
    x = random_array(rng, (3, 4, 5, 7), dtype)
    x.flat[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 2.5]
    y = cuda_backend.get(_cuda.relu_forward(cuda_backend.put(x)))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.maximum(x, 0))

    dout = random_array(rng, x.shape, dtype)
    dout.flat[:6] = [1.0, np.nan, np.inf, np.nan, -2.0, 3.0]  # NaN/inf * 0 must give NaN
    dx = cuda_backend.get(_cuda.relu_backward(cuda_backend.put(dout), cuda_backend.put(y)))
    assert dx.dtype == dtype
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(dx, dout * (y > 0))


def test_softmax_cross_entropy(cuda_backend, dtype):
    rng = np.random.default_rng(5)
    N, K = 13, 10
    x = (rng.normal(size=(N, K)) * 4).astype(dtype)
    x[0] = np.linspace(0, 1000, K)  # large logits must stay finite (max is subtracted)
    t = rng.integers(0, K, size=N)
    onehot = np.eye(K, dtype=dtype)[t]

    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    want_y = e / e.sum(axis=1, keepdims=True)
    want_loss = -np.mean(np.log(want_y[np.arange(N), t] + 1e-7))
    want_dx = (want_y - np.eye(K)[t]) / N

    for target in (t, onehot):
        loss, y = _cuda.softmax_cross_entropy(cuda_backend.put(x), cuda_backend.put(target))
        assert isinstance(loss, float)
        assert cuda_backend.get(y).dtype == dtype
        assert_close(cuda_backend.get(y), want_y, dtype)
        np.testing.assert_allclose(loss, want_loss, rtol=TOLERANCE[dtype])
        dx = cuda_backend.get(_cuda.softmax_cross_entropy_backward(y, cuda_backend.put(target)))
        assert dx.dtype == dtype
        assert_close(dx, want_dx, dtype)

    with pytest.raises(ValueError, match="labels must lie in"):
        _cuda.softmax_cross_entropy(cuda_backend.put(x), cuda_backend.put(t + K))


def test_conv_backward_fuses_the_pooling_with_either_relu_mask(cuda_backend, dtype):
    """With pool_argmax the ReLU's mask may be the convolution's output or the pooling's (all
    a fused training forward pass keeps): the same gradients, and the reference's."""
    from deepnet import reference

    rng = np.random.default_rng(11)
    x, W, b = (
        random_array(rng, (3, 4, 8, 6), dtype),
        random_array(rng, (5, 4, 3, 3), dtype),
        random_array(rng, (5,), dtype),
    )
    y = reference.relu_forward(reference.conv_forward(x, W, b, (1, 1), (1, 1)))
    pooled, argmax = reference.max_pool_forward(y, 2, 2, (2, 2), (0, 0))
    dpooled = random_array(rng, pooled.shape, dtype)
    want = reference.conv_backward(
        *as64(dpooled, x, W), (1, 1), (1, 1), relu_out=y.astype(np.float64), pool_argmax=argmax
    )
    for mask in (y, pooled):
        got = _cuda.conv_backward(
            cuda_backend.put(dpooled),
            cuda_backend.put(x),
            cuda_backend.put(W),
            (1, 1),
            (1, 1),
            relu_out=cuda_backend.put(mask),
            pool_argmax=cuda_backend.put(argmax),
        )
        for g, w in zip(got, want):
            assert_close(cuda_backend.get(g), w, dtype)


@pytest.mark.parametrize("N,C,FN", [(0, 3, 2), (2, 0, 2), (2, 3, 0), (0, 0, 0)])
def test_empty_batches_channels_and_filters(cuda_backend, dtype, N, C, FN):
    """Empty results of the right shape, and with no channels the bias (an empty sum is 0)."""
    from deepnet import reference

    rng = np.random.default_rng(9)
    stride, pad = (2, 1), (1, 1)
    x = random_array(rng, (N, C, 5, 4), dtype)
    W = random_array(rng, (FN, C, 3, 2), dtype)
    b = random_array(rng, (FN,), dtype)
    col = cuda_backend.get(_cuda.im2col(cuda_backend.put(x), 3, 2, stride, pad))
    np.testing.assert_array_equal(col, reference.im2col(x, 3, 2, stride, pad))
    dx = cuda_backend.get(_cuda.col2im(cuda_backend.put(col), x.shape, 3, 2, stride, pad))
    assert dx.shape == x.shape and dx.dtype == dtype
    y = cuda_backend.get(_cuda.conv_forward(cuda_backend.put(x), cuda_backend.put(W), cuda_backend.put(b), stride, pad))
    want_y = reference.conv_forward(*as64(x, W, b), stride, pad)
    assert y.dtype == dtype
    assert_close(y, want_y, dtype)
    dout = random_array(rng, y.shape, dtype)
    got = _cuda.conv_backward(cuda_backend.put(dout), cuda_backend.put(x), cuda_backend.put(W), stride, pad)
    for g, w in zip(got, reference.conv_backward(*as64(dout, x, W), stride, pad)):
        g = cuda_backend.get(g)
        assert g.dtype == dtype
        assert_close(g, w, dtype)
    pooled, argmax = _cuda.max_pool_forward(cuda_backend.put(x), 2, 2, stride, pad)
    assert cuda_backend.get(pooled).shape == cuda_backend.get(argmax).shape == (N, C, 3, 5)
    dx = cuda_backend.get(_cuda.max_pool_backward(pooled, argmax, x.shape, 2, 2, stride, pad))
    assert dx.shape == x.shape and dx.dtype == dtype


def test_dropout_mask(cuda_backend):
    mask = cuda_backend.get(_cuda.dropout_mask((64, 50), 0.3, 0))
    assert mask.dtype == np.bool_ and mask.shape == (64, 50)
    assert 0.6 < mask.mean() < 0.8
    np.testing.assert_array_equal(mask, cuda_backend.get(_cuda.dropout_mask((64, 50), 0.3, 0)))
    assert (mask != cuda_backend.get(_cuda.dropout_mask((64, 50), 0.3, 1))).any()


# ======================================================= gradient checks


def test_conv_gradient_check(cuda_backend):
    rng = np.random.default_rng(6)
    stride, pad = (2, 1), (1, 2)
    x = rng.normal(size=(2, 3, 7, 6))
    W = rng.normal(size=(4, 3, 3, 2))
    b = rng.normal(size=4)
    y = cuda_backend.get(_cuda.conv_forward(cuda_backend.put(x), cuda_backend.put(W), cuda_backend.put(b), stride, pad))
    G = rng.normal(size=y.shape)

    def loss():
        y = _cuda.conv_forward(cuda_backend.put(x), cuda_backend.put(W), cuda_backend.put(b), stride, pad)
        return float(np.sum(cuda_backend.get(y) * G))

    dx, dW, db = (
        cuda_backend.get(g)
        for g in _cuda.conv_backward(cuda_backend.put(G), cuda_backend.put(x), cuda_backend.put(W), stride, pad)
    )
    for analytic, param in ((dx, x), (dW, W), (db, b)):
        np.testing.assert_allclose(analytic, numerical_gradient(loss, param), rtol=1e-6, atol=1e-7)


def test_max_pool_gradient_check(cuda_backend):
    rng = np.random.default_rng(7)
    shape, ph_, pw_, stride, pad = (2, 3, 7, 6), 3, 2, (2, 1), (1, 1)
    # Distinct values far apart: no ties, so the max is differentiable.
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1
    y, arg = _cuda.max_pool_forward(cuda_backend.put(x), ph_, pw_, stride, pad)
    G = rng.normal(size=cuda_backend.get(y).shape)

    def loss():
        y, _ = _cuda.max_pool_forward(cuda_backend.put(x), ph_, pw_, stride, pad)
        return float(np.sum(cuda_backend.get(y) * G))

    dx = cuda_backend.get(_cuda.max_pool_backward(cuda_backend.put(G), arg, shape, ph_, pw_, stride, pad))
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)


# ======================================================= image warps (warp.cu)


def random_warp_case(rng, shape):
    """Random affine matrices about the centre (parts of the image leave the frame), one
    arbitrary matrix, one row of NaN, and a displacement field with a few huge entries."""
    N, _, H, W = shape
    angle = rng.uniform(-np.pi, np.pi, N)
    scale = rng.uniform(0.5, 2.0, N)
    theta = np.zeros((N, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = scale * np.cos(angle), -scale * np.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * np.sin(angle), scale * np.cos(angle)
    centre = (np.array([H, W]) - 1) / 2
    theta[:, :, 2] = centre - theta[:, :, :2] @ centre + rng.uniform(-0.4, 0.4, (N, 2)) * [H, W]
    theta[0, :, :2] = rng.normal(size=(2, 2))
    theta[-1, 1] = np.nan
    displacement = rng.normal(scale=3.0, size=(N, 2, H, W))
    flat = displacement.reshape(-1)
    flat[::17], flat[5::23], flat[7::29] = 1e300, -np.inf, np.nan
    return theta, displacement


@pytest.mark.parametrize("shape", [(3, 2, 7, 9), (2, 1, 28, 28), (4, 3, 1, 5)], ids=str)
def test_affine_and_elastic_warp(cuda_backend, dtype, shape):
    rng = np.random.default_rng(9)
    x = random_array(rng, shape, dtype)
    theta, displacement = random_warp_case(rng, shape)
    want = reference.affine_warp(*as64(x), theta, 0.25)
    got = cuda_backend.get(_cuda.affine_warp(cuda_backend.put(x), cuda_backend.put(theta), 0.25))
    assert got.dtype == dtype
    assert_close(got, want, dtype)

    want = reference.elastic_warp(*as64(x), displacement, theta, -0.5)
    got = cuda_backend.get(
        _cuda.elastic_warp(cuda_backend.put(x), cuda_backend.put(displacement), cuda_backend.put(theta), -0.5)
    )
    assert got.dtype == dtype
    assert_close(got, want, dtype)


def test_conv_transpose_layer_on_the_cuda_kernels(cuda_backend, dtype, monkeypatch):
    """ConvTranspose runs on the convolution's CUDA kernels (col2im, conv forward and
    backward): the same values as its float64 run on the CPU."""
    import contextlib

    from deepnet import functional as F
    from deepnet.layers import ConvTranspose

    @contextlib.contextmanager
    def on_cuda():
        """NumPy arrays on the host emulation: send deepnet.functional's ops to its kernels."""
        with monkeypatch.context() as patch:
            if cuda_backend.name == "host":
                patch.setattr(F, "_backend", lambda caller, *arrays: _cuda)
            yield

    rng = np.random.default_rng(7)
    W, b = random_array(rng, (3, 4, 3, 3), dtype), random_array(rng, (4,), dtype)
    x = random_array(rng, (2, 3, 5, 4), dtype)
    layer = ConvTranspose(cuda_backend.put(W), cuda_backend.put(b), stride=2, pad=1, output_padding=1)
    reference_layer = ConvTranspose(*as64(W, b), stride=2, pad=1, output_padding=1)
    with on_cuda():
        y = cuda_backend.get(layer.forward(cuda_backend.put(x)))
    want = reference_layer.forward(x.astype(np.float64))
    assert y.dtype == dtype
    assert_close(y, want, dtype)
    dout = random_array(rng, want.shape, dtype)
    with on_cuda():
        dx = cuda_backend.get(layer.backward(cuda_backend.put(dout)))
        grads = [cuda_backend.get(g) for g in (layer.dW, layer.db)]
    want_dx = reference_layer.backward(dout.astype(np.float64))
    for got, expected in zip([dx] + grads, (want_dx, reference_layer.dW, reference_layer.db)):
        assert got.dtype == dtype
        assert_close(got, expected, dtype)


def test_the_application_layers_on_the_cuda_path(cuda_backend, dtype, monkeypatch):
    """LeakyReLU, Tanh and the two losses of the applications (SigmoidWithLoss,
    SpatialSoftmaxWithLoss) on device arrays: the float64 formulas' values and gradients."""
    from deepnet import functional as F
    from deepnet.layers import LeakyReLU, SigmoidWithLoss, SpatialSoftmaxWithLoss, Tanh

    if cuda_backend.name == "host":
        monkeypatch.setattr(F, "_backend", lambda caller, *arrays: _cuda)
    rng = np.random.default_rng(11)
    x = random_array(rng, (2, 3, 4, 5), dtype) * 3
    dout = random_array(rng, x.shape, dtype)
    x64, dout64 = as64(x, dout)
    leaky, tanh = LeakyReLU(0.2), Tanh()
    for layer, value, slope in (
        (leaky, np.where(x64 < 0, 0.2 * x64, x64), np.where(x64 < 0, 0.2, 1.0)),
        (tanh, np.tanh(x64), 1 - np.tanh(x64) ** 2),
    ):
        y = cuda_backend.get(layer.forward(cuda_backend.put(x)))
        assert y.dtype == dtype
        assert_close(y, value, dtype)
        dx = cuda_backend.get(layer.backward(cuda_backend.put(dout)))
        assert dx.dtype == dtype
        assert_close(dx, dout64 * slope, dtype)

    targets = (rng.random(x.shape) > 0.5).astype(np.float64)
    loss = SigmoidWithLoss()
    value = loss.forward(cuda_backend.put(x), cuda_backend.put(targets))
    p = 1 / (1 + np.exp(-x64))
    assert_close(value, -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)), dtype)
    dx = cuda_backend.get(loss.backward())
    assert dx.dtype == dtype
    assert_close(dx * x.size, p - targets, dtype)

    labels = rng.integers(0, 3, size=(2, 4, 5))
    loss = SpatialSoftmaxWithLoss()
    value = loss.forward(cuda_backend.put(x), cuda_backend.put(labels))
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    picked = np.take_along_axis(softmax, labels[:, None], axis=1)[:, 0]
    assert_close(value, -np.log(picked).mean(), dtype)
    one_hot = np.moveaxis(np.eye(3)[labels], -1, 1)
    dx = cuda_backend.get(loss.backward())
    assert dx.dtype == dtype
    assert_close(dx * labels.size, softmax - one_hot, dtype)
