"""The bench scripts run (with the least work each), so that they cannot rot unnoticed.

Their numbers are not checked here, only that they finish and print their tables; the
memory-check script also compares the kernels with the reference.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepnet

BENCHES = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")


def run_script(name, *args):
    # The scripts import the deepnet this test imported (installed, or an in-place build).
    deepnet_home = str(Path(deepnet.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [deepnet_home, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(BENCHES / name), *args], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_memcheck_script_convolutions_equal_reference():
    assert "all equal to the reference" in run_script("memcheck.py")


def test_profile_layers_prints_the_per_layer_table():
    out = run_script("profile_layers.py", "--reps", "1")
    assert "| Convolution 16->16 3x3 pad 1 +ReLU" in out and "img/s" in out


def test_compare_prints_the_whole_network_table():
    out = run_script("compare.py", "--rows", "deepnet-float32", "--steps", "1", "--warmup", "0", "--repeat", "1")
    assert "| deepnet float32" in out
