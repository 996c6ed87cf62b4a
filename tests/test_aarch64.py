"""The aarch64 job (.ci/aarch64) and its instruction count (benches/analysis/arm_count.py):
the count's bookkeeping on made-up plugin output, the plugin's C, the job's test selection;
and, where DEEPNET_AARCH64_DIR names a directory .ci/aarch64 prepared, one real count under
qemu."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

ANALYSIS = REPO / "benches" / "analysis"
CI_AARCH64 = REPO / ".ci" / "aarch64"


def load_arm_count():
    spec = importlib.util.spec_from_file_location("arm_count", ANALYSIS / "arm_count.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


arm_count = load_arm_count()


@pytest.mark.parametrize(
    "disas, expected",
    [
        ("fmla v29.4s, v3.4s, v9.4s", ("fmla", "")),
        ("fmla v0.4s, v1.4s, v2.s[1]", ("fmla", "")),
        ("stp q8, q9, [sp, #0x180]", ("stp", "vector")),
        ("ldr q29, [sp, #0x330]", ("ldr", "vector")),
        ("str s0, [sp]", ("str", "vector")),
        ("st1 {v0.4s, v1.4s}, [sp]", ("st1", "vector")),
        ("ldr x5, [sp, #0xa0]", ("ldr", "general")),
        ("stp x29, x30, [sp, #-0x10]!", ("stp", "general")),
        ("ldp q8, q9, [x0]", ("ldp", "")),
        ("add x1, sp, #0x1f8", ("add", "")),
    ],
)
def test_classify_tells_vector_spills_from_general_stack_traffic(disas, expected):
    assert arm_count.classify(disas) == expected


def write_run(tmp_path, tag, base, lines):
    """A made-up plugin output and memory map: the kernels mapped at `base`."""
    maps = tmp_path / f"{tag}.maps"
    so = "/x/deepnet/_kernels/conv.cpython-311-aarch64-linux-gnu.so"
    maps.write_text(
        f"{base:x}-{base + 0x1000:x} r--p 00000000 00:00 1 {so}\n"
        f"{base + 0x1000:x}-{base + 0x9000:x} r-xp 00001000 00:00 1 {so}\n"
        "400000-500000 r-xp 00000000 00:00 2 /usr/bin/python3.11\n"
    )
    counts = tmp_path / f"{tag}.txt"
    counts.write_text("".join(f"{base + off:x} {n} {d}\n" for off, n, d in lines) + "400010 7 nop\n")
    return arm_count.read_counts(counts, maps)


def test_counts_compare_by_file_and_offset_wherever_the_file_was_mapped(tmp_path):
    loop = [(0x1000, 10, "ldp q0, q1, [x0]"), (0x1004, 10, "fmla v2.4s, v0.4s, v1.4s"), (0x1008, 10, "b.ne #0")]
    one = write_run(tmp_path, "one", 0x7000000, [(0x2000, 1, "ret")] + loop)
    three = write_run(tmp_path, "three", 0x5500000, [(0x2000, 1, "ret")] + [(o, 3 * n, d) for o, n, d in loop])
    diff = arm_count.delta(one, three)
    so = next(name for name, _ in diff)
    assert diff == {
        (so, 0x1000): (20, "ldp q0, q1, [x0]"),
        (so, 0x1004): (20, "fmla v2.4s, v0.4s, v1.4s"),
        (so, 0x1008): (20, "b.ne #0"),
    }
    name, hot = arm_count.hottest_loop(diff)
    assert name == so and [offset for offset, _, _ in hot] == [0x1000, 0x1004, 0x1008]


def test_the_hottest_loop_stops_where_the_counts_drop(tmp_path):
    so = "/x/deepnet/_kernels/conv.so"
    counts = {(so, 0x100 + 4 * i): (n, "nop") for i, n in enumerate([5, 100, 90, 100, 49, 100])}
    counts[("/usr/bin/python3.11", 0x200)] = (10**6, "nop")  # not a kernel: never the loop
    name, hot = arm_count.hottest_loop(counts)
    assert name == so and [offset for offset, _, _ in hot] == [0x104, 0x108, 0x10C]


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
def test_the_qemu_plugin_compiles_without_warnings(tmp_path):
    result = subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(tmp_path / "p.so"),
            str(ANALYSIS / "qemu_insn_count.c"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_aarch64_job_selects_the_kernel_tests_by_marker():
    text = CI_AARCH64.read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if "-m pytest" in line and not line.lstrip().startswith("#")]
    assert len(commands) == 1, commands
    assert not re.search(r"tests/\S+\.py", commands[0])
    assert re.search(r'-m "\$marker" tests(\s|\)|$)', commands[0]), commands[0]
    # the marker is `kernels`, or `asan` (a subset of it) with --quick
    assert "marker=kernels" in text and "--quick) marker=asan ;;" in text
    assert os.access(CI_AARCH64, os.X_OK)
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(CI_AARCH64)], check=True)


def prepared_env():
    """DEEPNET_AARCH64_DIR where it is set and .ci/aarch64 has built there (a count takes a
    minute or two: not run from the default directory unasked)."""
    if not os.environ.get("DEEPNET_AARCH64_DIR"):
        return None
    env = Path(os.environ["DEEPNET_AARCH64_DIR"])
    built = list((env / "build" / "deepnet" / "_kernels").glob("conv*aarch64*.so"))
    return env if built and shutil.which("qemu-aarch64") and shutil.which("cc") else None


@pytest.mark.skipif(prepared_env() is None, reason="DEEPNET_AARCH64_DIR unset or not prepared by .ci/aarch64")
def test_a_small_convolution_counts_under_qemu():
    result = subprocess.run(
        [
            sys.executable,
            str(ANALYSIS / "arm_count.py"),
            "--env",
            str(prepared_env()),
            "--paths",
            "direct",
            "--batch",
            "1",
            "--size",
            "4",
            "--channels",
            "16",
            "--loop",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("direct "))
    kernels, process, fmla = (float(v) for v in row.split()[1:4])
    assert 0 < kernels <= process and 0 < fmla
    assert "the hottest loop" in result.stdout
