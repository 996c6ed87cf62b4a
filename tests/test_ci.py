""".ci/run selects the kernel tests of its dispatch and AddressSanitizer jobs by marker
(`-m kernels`, `-m asan`), never by a list of files: a module joins those jobs with its
`pytestmark`, and a renamed or new test file cannot fall out of them unnoticed."""

import ast
import re

import pytest

from support import REPO

TESTS = REPO / "tests"
CI_RUN = REPO / ".ci" / "run"
JOB_MARKERS = {"dispatch": "kernels", "ASan": "asan"}
JOB_HEADINGS = {"dispatch": "# Dispatch job:", "ASan": "# AddressSanitizer:"}


def pytest_commands(job):
    """The pytest command lines (continuation lines joined) of one job of .ci/run: from the
    job's opening comment to the next job's."""
    text = CI_RUN.read_text().replace("\\\n", " ")
    blocks = re.split(r"\n(?=# [A-Za-z0-9]+ job:|# AddressSanitizer:)", text)
    block = next(b for b in blocks if b.startswith(JOB_HEADINGS[job]))
    return [line for line in block.splitlines() if "pytest" in line and not line.lstrip().startswith("#")]


def module_markers(path):
    """The names of the pytest.mark.NAME in a module's top-level `pytestmark`."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "mark":
                    names.add(sub.attr)
    return names


def marked_modules(marker):
    return sorted(p.name for p in TESTS.glob("test_*.py") if marker in module_markers(p))


@pytest.mark.parametrize("job", sorted(JOB_MARKERS))
def test_the_kernel_jobs_select_by_marker_and_name_no_test_files(job):
    commands = pytest_commands(job)
    assert len(commands) == 1, commands
    command = commands[0]
    assert not re.search(r"tests/\S+\.py", command), f"{job} job names test files: {command}"
    assert re.search(rf"-m {JOB_MARKERS[job]} tests(\s|\)|$)", command), command


def test_the_markers_are_registered_and_carried_by_existing_modules(pytestconfig):
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert set(JOB_MARKERS.values()) <= registered
    kernels, asan = marked_modules("kernels"), marked_modules("asan")
    # The core of each job; the marker must not silently drop off these modules.
    assert {"test_kernels.py", "test_winograd.py", "test_fusion.py", "test_properties.py"} <= set(asan)
    assert set(asan) <= set(kernels), "the ASan job runs a subset of the dispatch job's tests"
    for name in kernels:
        assert (TESTS / name).is_file()


def test_a_module_marks_the_kernel_jobs_only_through_its_pytestmark():
    """A kernels/asan mark on a single test or class would be selected too, but is easy to
    miss beside the module's own: the jobs are chosen per module."""
    for path in TESTS.glob("test_*.py"):
        text = path.read_text()
        for marker in JOB_MARKERS.values():
            assert not re.search(rf"^\s*@pytest\.mark\.{marker}\b", text, re.M), f"{path.name}: @pytest.mark.{marker}"
