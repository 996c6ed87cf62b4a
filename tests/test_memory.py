"""deepnet keeps freed memory for reuse on glibc (deepnet/_memory.py): a loop that allocates
and frees tens of MB stops faulting pages in, and the user's own settings win."""

import ctypes
import os
import subprocess
import sys

import pytest

try:
    ctypes.CDLL(None).gnu_get_libc_version
    GLIBC = True
except (AttributeError, OSError, TypeError):
    GLIBC = False

# Twelve 3 MB arrays (under numpy's 4 MB hugepage advice, so every fault is one 4 KiB page),
# written and freed together, five times: page faults per round after the first.
FAULTS_PER_ROUND = """
import resource, sys, numpy as np
import deepnet
if sys.argv[1] == "keep":
    deepnet.keep_freed_memory()
elif sys.argv[1] == "train":  # a tiny training run sets it as it starts
    from deepnet import layers as L
    from deepnet.nets import Sequential
    from deepnet.trainer import Trainer
    net = Sequential(L.Affine(np.ones((4, 3), np.float32), np.zeros(3, np.float32)))
    Trainer(net, np.ones((8, 4), np.float32), np.zeros(8, int), epochs=1, mini_batch_size=4, verbose=False).train()
def round_():
    arrays = [np.ones(3 << 18, dtype=np.float32) for _ in range(12)]
    del arrays
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
print(deepnet.config()["freed memory"])
"""


def run_child(how="keep", **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "DEEPNET_KEEP_FREED_MEMORY"}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ROUND, how], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return float(out[0]), out[1]


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_freed_memory_is_reused_without_page_faults():
    kept_faults, kept_status = run_child()
    default_faults, default_status = run_child(DEEPNET_KEEP_FREED_MEMORY="0")
    assert "kept for reuse" in kept_status
    assert "DEEPNET_KEEP_FREED_MEMORY=0" in default_status
    # 36 MB written per round is 9,216 pages: glibc's default trims the heap after each
    # round and faults most of them back in; kept, the heap's pages stay mapped.
    assert default_faults > 2000, default_faults
    assert kept_faults < 200, kept_faults


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_the_users_malloc_settings_are_left_alone():
    _, status = run_child(MALLOC_TRIM_THRESHOLD_="131072")
    assert status == "malloc's settings from MALLOC_TRIM_THRESHOLD_"


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_importing_deepnet_changes_no_process_wide_setting_and_training_does():
    imported_faults, imported_status = run_child("import")
    trained_faults, trained_status = run_child("train")
    assert "when training starts" in imported_status
    assert imported_faults > 2000, imported_faults  # malloc's defaults: the pages come back
    assert "kept for reuse" in trained_status
    assert trained_faults < 200, trained_faults


def test_config_reports_the_memory_policy():
    import deepnet
    from deepnet import _memory

    assert deepnet.config()["freed memory"] == _memory.status
    assert _memory.status == _memory.NOT_SET or "kept for reuse" in _memory.status or "malloc" in _memory.status
