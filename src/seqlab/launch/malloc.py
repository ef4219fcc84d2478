"""Keep freed memory in the process instead of handing it back to the kernel every training step (glibc only).

glibc serves a large allocation (above a threshold that adapts up to 32 MiB) with a fresh mmap and unmaps it on
free, and trims the heap top back to the kernel. A training step allocates and frees the same big activations
every time (a (B, T, 10k) softmax, a window MLP's (B, H, T) hidden layer), so each step page-faults them in
again and the kernel zeroes every page: on this 2-core VM a window-3 MLP step (batch 256 × 32, hidden 1024) took
203 ms, 40 % of it system time, against 105 ms with the memory kept.
Raising both thresholds once keeps the pages mapped for reuse; the price is that the process holds on to its
peak heap, which a training loop reaches anyway. Nothing changes where the user set glibc's own variables or
SEQLAB_MALLOC=default, or on a C library without mallopt (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
USER_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
THRESHOLD = 1 << 30  # 1 GiB: above any single activation of seqlab's models on a CPU

_applied: int | None = None


def keep_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds to `threshold` bytes, unless the user chose otherwise. True if set."""
    global _applied
    if _applied == threshold:
        return True
    if (
        sys.platform != "linux"
        or os.environ.get("SEQLAB_MALLOC") == "default"
        or any(k in os.environ for k in USER_KEYS)
    ):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold))) and bool(
        mallopt(M_TRIM_THRESHOLD, ctypes.c_int(threshold))
    )
    _applied = threshold if ok else None
    return ok


def setting() -> dict[str, int | str | None]:
    """What this process runs with, for metrics.json."""
    return {"threshold": _applied, **{k: os.environ.get(k) for k in (*USER_KEYS, "SEQLAB_MALLOC") if k in os.environ}}
