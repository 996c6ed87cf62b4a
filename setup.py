"""Build the Cython/OpenMP kernels of deepnet.

Flags: -O3 -fno-wrapv, OpenMP when the compiler has it (else a single-threaded build and a warning),
and -march=native unless DEEPNET_MARCH says otherwise (e.g. DEEPNET_MARCH=x86-64-v3, or
DEEPNET_MARCH=none for a portable build): the package is built from source on the
machine that runs it, and -march=native is what enables AVX2/FMA/F16C there.
DEEPNET_DEBUG=1 turns Cython's bounds checking back on for testing.
DEEPNET_SANITIZE=address builds the kernels with AddressSanitizer, for the CI job that runs
the kernel tests under it (a Python process then needs libasan preloaded, see .ci/run).
"""
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

KERNELS = ["openmp_helpers", "im2col", "pooling", "conv", "elementwise", "batchnorm", "warp"]


def compiler_accepts(compiler_cmd, flags):
    """True when the C compiler builds and links an OpenMP-using file with ``flags``."""
    source = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n" if "-fopenmp" in flags \
        else "int main(void){return 0;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        cmd = [compiler_cmd, path, "-o", os.path.join(tmp, "probe")] + flags
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


class BuildExt(build_ext):
    """Probe the compiler once, then add OpenMP and -march flags it accepts."""

    def build_extensions(self):
        compiler = self.compiler.compiler_so[0] if hasattr(self.compiler, "compiler_so") else "cc"
        # -fno-wrapv undoes the -fwrapv in Python's own flags: with wrapping signed ints GCC
        # cannot analyse the kernels' index arithmetic and leaves loops unvectorised.
        extra = ["-O3", "-fno-wrapv"]
        march = os.environ.get("DEEPNET_MARCH", "native")
        if march != "none" and compiler_accepts(compiler, [f"-march={march}"]):
            extra.append(f"-march={march}")
        openmp = compiler_accepts(compiler, ["-fopenmp"])
        if not openmp:
            warnings.warn("deepnet: the C compiler has no OpenMP; building single-threaded kernels")
        link = ["-fopenmp"] if openmp else []
        if sanitize:
            extra += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
            link += [f"-fsanitize={sanitize}"]
        for ext in self.extensions:
            ext.extra_compile_args = extra + (["-fopenmp"] if openmp else [])
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
