"""Build the Cython/OpenMP kernels of deepnet.

Flags: -O3 -fno-wrapv, OpenMP when the compiler has it (else a single-threaded build and a warning;
on macOS Homebrew's libomp is used when installed), and -march=native unless DEEPNET_MARCH
says otherwise: the package is built from source on the machine that runs it, and
-march=native is what enables AVX2/FMA/F16C or AVX-512 there.  DEEPNET_MARCH=x86-64-v3 (any
-march value) builds for that CPU; DEEPNET_MARCH=none for the compiler's baseline (SSE2 on
x86-64); DEEPNET_MARCH=dispatch (GCC on x86-64) builds the hot kernels for baseline, AVX2 and
AVX-512 and chooses at import by CPUID (src/deepnet_isa.h), for a wheel that runs anywhere.
DEEPNET_DEBUG=1 turns Cython's bounds checking back on for testing.
DEEPNET_SANITIZE=address builds the kernels with AddressSanitizer, for the CI job that runs
the kernel tests under it (a Python process then needs libasan preloaded, see .ci/run).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["openmp_helpers", "im2col", "pooling", "conv", "elementwise", "batchnorm", "warp", "bf16", "int8", "binary", "plan"]


OPENMP_PROBE = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"
# Dispatch needs GCC's `#pragma GCC target` (which defines the target's macros) on x86-64.
DISPATCH_PROBE = """#if !defined(__GNUC__) || defined(__clang__) || !defined(__x86_64__)
#error "dispatch needs GCC on x86-64"
#endif
int main(void){return !__builtin_cpu_supports("sse2");}
"""


def compiler_accepts(compiler_cmd, flags, source=None):
    """True when the C compiler builds and links ``source`` with ``flags`` (by default an
    OpenMP-using file when the flags ask for OpenMP, else an empty one)."""
    if source is None:
        source = OPENMP_PROBE if "-fopenmp" in flags else "int main(void){return 0;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        cmd = [compiler_cmd, path, "-o", os.path.join(tmp, "probe")] + flags
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def homebrew_libomp():
    """Homebrew's libomp prefix on macOS (Apple's clang has no OpenMP of its own), or None."""
    if sys.platform != "darwin":
        return None
    candidates = ["/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"]
    try:
        found = subprocess.run(["brew", "--prefix", "libomp"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.insert(0, found.stdout.strip())
    except OSError:
        pass
    return next((p for p in candidates if os.path.exists(os.path.join(p, "include", "omp.h"))), None)


def openmp_flags(compiler):
    """(compile flags, link flags) for OpenMP, or None when the compiler has none."""
    if compiler_accepts(compiler, ["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"]
    prefix = homebrew_libomp()
    if prefix is not None:
        compile_flags = ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"]
        link_flags = [f"-L{prefix}/lib", "-lomp", f"-Wl,-rpath,{prefix}/lib"]
        if compiler_accepts(compiler, compile_flags + link_flags, OPENMP_PROBE):
            return compile_flags, link_flags
    return None


class BuildExt(build_ext):
    """Probe the compiler once, then add OpenMP and -march flags it accepts."""

    def build_extensions(self):
        compiler = self.compiler.compiler_so[0] if hasattr(self.compiler, "compiler_so") else "cc"
        # -fno-wrapv undoes the -fwrapv in Python's own flags: with wrapping signed ints GCC
        # cannot analyse the kernels' index arithmetic and leaves loops unvectorised.
        extra = ["-O3", "-fno-wrapv"]
        march = os.environ.get("DEEPNET_MARCH", "native")
        if march == "dispatch":
            if compiler_accepts(compiler, [], DISPATCH_PROBE):
                extra.append("-DDEEPNET_DISPATCH")
            else:
                warnings.warn("deepnet: DEEPNET_MARCH=dispatch needs GCC on x86-64; building for the baseline")
        elif march != "none" and compiler_accepts(compiler, [f"-march={march}"]):
            extra.append(f"-march={march}")
        openmp = openmp_flags(compiler)
        if openmp is None:
            warnings.warn("deepnet: the C compiler has no OpenMP; building single-threaded kernels")
        compile_openmp, link = openmp if openmp is not None else ([], [])
        if sanitize:
            extra += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
            link += [f"-fsanitize={sanitize}"]
        for ext in self.extensions:
            ext.extra_compile_args = extra + compile_openmp
            ext.extra_link_args = link
        super().build_extensions()


debug = os.environ.get("DEEPNET_DEBUG", "0") == "1"
sanitize = os.environ.get("DEEPNET_SANITIZE", "")
if sanitize not in ("", "address"):
    sys.exit(f"setup.py: DEEPNET_SANITIZE must be 'address' or unset, got {sanitize!r}")
extensions = [
    Extension(
        f"deepnet._kernels.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=["src", numpy.get_include()],
        depends=sorted(glob.glob("src/*.h")) + sorted(glob.glob("kernels/*.pxi")),  # rebuilt when they change
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": debug,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
