"""The kernels' instruction-set variants (src/deepnet_isa.h): which one a build chooses and
why, the refusal of one the CPU lacks, and the kernel tests run again on each variant this
machine has (forced with DEEPNET_CPU_VARIANT, in a subprocess).  The choice among AVX-512,
AVX2 and baseline is also checked for CPUs this one is not, by compiling the dispatch
header with a given CPU level, so the AVX-512 variant is at least built everywhere."""

import os
import pathlib
import re
import platform
import shutil
import subprocess
import sys

import pytest

from deepnet import _config

pytestmark = pytest.mark.kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "avx2", "avx512")
VECTOR_BITS = {"baseline": 128, "avx": 256, "avx2": 256, "avx512": 512, "neon": 128}
# The kernel tests that compare against the NumPy reference and across thread counts.
KERNEL_TESTS = [
    "tests/test_kernels.py",
    "tests/test_winograd.py",
    "tests/test_prepared_filters.py",
    "tests/test_pooled_backward.py",
    "tests/test_half_conversion.py",
]

needs_kernels = pytest.mark.skipif(not _config.kernels_compiled(), reason="the kernels are not built")


# The subprocesses import the deepnet this process imported (installed, or an in-place build),
# from a directory without a source tree, whose own deepnet/ would come first on sys.path.
DEEPNET_HOME = str(pathlib.Path(_config.__file__).resolve().parents[1])


def variant_env(variant):
    path = os.pathsep.join(filter(None, [DEEPNET_HOME, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, DEEPNET_CPU_VARIANT=variant, PYTHONPATH=path)


def python_with_variant(variant, code, cwd):
    return subprocess.run(
        [sys.executable, "-c", code], env=variant_env(variant), cwd=cwd, capture_output=True, text=True, timeout=300
    )


@needs_kernels
def test_the_variant_is_named_with_its_reason_and_its_width():
    name, reason = _config.cpu_variant()
    assert name in VECTOR_BITS
    assert reason
    assert _config._openmp.vector_bits() == VECTOR_BITS[name]
    if _config.cpu_dispatch():
        assert name in VARIANTS
        assert "CPUID" in reason or "forced by DEEPNET_CPU_VARIANT" in reason
    else:
        assert "fixed at build time" in reason


@needs_kernels
def test_an_unknown_variant_is_refused_at_import(tmp_path):
    result = python_with_variant("sse9", "import deepnet", tmp_path)
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr and "DEEPNET_CPU_VARIANT" in result.stderr
    assert "sse9" in result.stderr


@needs_kernels
def test_a_variant_the_cpu_or_build_lacks_is_refused_and_one_it_has_is_taken(tmp_path):
    for variant in VARIANTS:
        result = python_with_variant(
            variant, "from deepnet import _config; print(*_config.cpu_variant(), sep='|')", tmp_path
        )
        if result.returncode == 0:
            name, reason = result.stdout.strip().split("|")
            assert name == variant
            assert ("forced by DEEPNET_CPU_VARIANT" if _config.cpu_dispatch() else "fixed at build time") in reason
        else:  # a plain build has one variant; a dispatch build refuses what the CPU lacks
            assert "RuntimeError" in result.stderr
            assert ("which this CPU lacks" in result.stderr) or ("this build has only" in result.stderr)


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_kernel_tests_pass_on_each_variant_this_machine_has(variant, tmp_path):
    if _config.cpu_variant()[0] == variant:
        pytest.skip(f"{variant} is this run's own variant: the kernel tests run on it directly")
    probe = python_with_variant(variant, "import deepnet", tmp_path)
    if probe.returncode != 0:
        pytest.skip(probe.stderr.strip().splitlines()[-1])
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        *(str(ROOT / t) for t in KERNEL_TESTS),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=variant_env(variant), capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


SELECTION_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
static int cpu_level;
#define DN_ISA_TEST_CPU_LEVEL cpu_level
#include "deepnet_isa.h"
int main(int argc, char **argv) {
    cpu_level = atoi(argv[1]);
    int status = dn_isa_select();
    printf("%d|%s|%d|%d|%s\n", status, dn_isa_variant_name, dn_isa_vector_bytes * 8, dn_isa_f16c, dn_isa_reason);
    return 0;
}
"""


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    compiler = shutil.which("gcc")
    if compiler is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the dispatch build needs GCC on x86-64")
    tmp = tmp_path_factory.mktemp("dispatch")
    (tmp / "select.c").write_text(SELECTION_PROGRAM)
    command = [
        compiler,
        "-O1",
        "-DDEEPNET_DISPATCH",
        f"-I{ROOT / 'src'}",
        str(tmp / "select.c"),
        "-o",
        str(tmp / "select"),
    ]
    subprocess.run(command, check=True)

    def run(cpu_level, forced):
        env = {k: v for k, v in os.environ.items() if k != "DEEPNET_CPU_VARIANT"}
        if forced is not None:
            env["DEEPNET_CPU_VARIANT"] = forced
        out = subprocess.run([str(tmp / "select"), str(cpu_level)], env=env, capture_output=True, text=True, check=True)
        status, name, bits, f16c, reason = out.stdout.strip().split("|")
        return int(status), name, int(bits), int(f16c), reason

    return run


@pytest.mark.parametrize("cpu_level", [0, 1, 2])
def test_the_best_variant_of_the_cpu_is_chosen_by_default(selection, cpu_level):
    status, name, bits, f16c, reason = selection(cpu_level, None)
    assert status == 0
    assert name == VARIANTS[cpu_level]
    assert bits == VECTOR_BITS[name]
    assert f16c == (cpu_level > 0)
    assert "CPUID" in reason


@pytest.mark.parametrize("cpu_level", [0, 1, 2])
@pytest.mark.parametrize("forced", VARIANTS)
def test_a_forced_variant_is_taken_if_the_cpu_has_it_else_refused(selection, cpu_level, forced):
    status, name, bits, _, reason = selection(cpu_level, forced)
    if VARIANTS.index(forced) <= cpu_level:
        assert (status, name, bits) == (0, forced, VECTOR_BITS[forced])
        assert "forced by DEEPNET_CPU_VARIANT" in reason
    else:
        assert status == -1
        assert f"DEEPNET_CPU_VARIANT={forced} needs" in reason and "which this CPU lacks" in reason
        assert f"its best variant is '{VARIANTS[cpu_level]}'" in reason


def test_an_unknown_forced_variant_is_refused_by_name(selection):
    status, _, _, _, reason = selection(2, "avx1024")
    assert status == -1
    assert "'baseline', 'avx2' or 'avx512'" in reason and "avx1024" in reason


def test_the_variant_bodies_read_only_their_own_f16c_flag():
    """DEEPNET_HAVE_F16C is defined after the bodies are included (src/deepnet_isa.h), so a
    body that tests it sees 0 and silently takes its scalar float16 path; DN_F16C is the
    flag deepnet_half.h sets for the variant being compiled."""
    bodies = (ROOT / "src" / "deepnet_isa_bodies.h").read_text()
    for name in re.findall(r'#include "([^"]+)"', bodies):
        text = (ROOT / "src" / name).read_text()
        assert "DEEPNET_HAVE_F16C" not in text, f"src/{name} tests DEEPNET_HAVE_F16C; use DN_F16C"
