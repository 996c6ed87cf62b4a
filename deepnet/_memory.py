"""Freed memory kept for reuse (glibc's malloc), set where training starts, not at import.

A DeepConvNet training step (batch 100) allocates and frees tens of MB of activations and
gradients, all larger than glibc's mmap threshold.  glibc's adaptive default raises that
threshold to the largest block freed so far (5 MB here) and returns the top of the heap
to the kernel whenever twice that is free, which the end of a step can be; the next step
then faults the same pages back in, zeroed, at about 3 us a page.  Fixed thresholds keep
the memory in the heap, at the cost of up to TRIM_THRESHOLD of freed memory staying in
the process.  On a 2-core Intel Xeon: before the pooling's backward pass was fused into
the convolution's (which stopped allocating its full-size gradients), 1,400 page faults a
step and 16% faster with the thresholds (3,328 -> 3,849 img/s, medians of 6 alternating
processes); after it, 217 faults a step against 24, and 2.8% faster (4,624 -> 4,753
img/s, 15 rounds).  PyTorch gains from the same setting (MALLOC_*_ environment
variables, or jemalloc, which its CPU tuning guides recommend); deepnet sets it itself,
as numpy sets hugepage advice for its arrays.  It changes the policy of the whole
process, so importing deepnet leaves it alone: Trainer.train (and so every training
command) sets it, once per process, and deepnet.keep_freed_memory() sets it for code of
one's own.  It is skipped when the user set any MALLOC_*_ variable, and
DEEPNET_KEEP_FREED_MEMORY=0 turns it off.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # glibc's own cap for the adaptive threshold on 64-bit
TRIM_THRESHOLD = 64 << 20  # free memory at the heap's top that is returned to the kernel

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

NOT_SET = "malloc's defaults (deepnet sets its thresholds when training starts)"
status = NOT_SET


def keep_freed_memory() -> str:
    """Keep freed memory for reuse: set glibc's malloc thresholds for the whole process
    (see the module docstring) unless the user chose otherwise.  Returns, and records for
    deepnet.config(), the outcome as a sentence; later calls change nothing."""
    global status
    if status == NOT_SET:
        status = _apply()
    return status


def _apply() -> str:
    if os.environ.get("DEEPNET_KEEP_FREED_MEMORY", "1") == "0":
        return "malloc's defaults (DEEPNET_KEEP_FREED_MEMORY=0)"
    chosen = [name for name in USER_SETTINGS if name in os.environ]
    if chosen:
        return f"malloc's settings from {', '.join(chosen)}"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has mallopt's thresholds
    except (AttributeError, OSError, TypeError):
        return "the C library's defaults (not glibc)"
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "malloc's defaults (glibc's mallopt refused the thresholds)"
    return f"up to {TRIM_THRESHOLD >> 20} MiB kept for reuse (glibc mallopt; DEEPNET_KEEP_FREED_MEMORY=0 turns it off)"
