"""OpenMP's wait policy for a shared machine. Import and call before anything imports torch: libgomp (torch's
OpenMP, also used by its MKL and oneDNN) reads the environment once, when it starts.

By default libgomp's idle threads spin (~300k turns) waiting for their partners. With 2 threads on 2 cores and
another process holding one core, the partner is descheduled and the spinning thread burns the slice it waits
for: a tanh-RNN loop trained 20-50x slower than with sleeping waiters (README "Speed", benchmarks/threads.py).
"""

from __future__ import annotations

import os

KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def sleep_when_idle() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user chose a policy (e.g. OMP_WAIT_POLICY=ACTIVE on a quiet machine)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def settings() -> dict[str, str | None]:
    """What this process runs with, for metrics.json."""
    return {key: os.environ.get(key) for key in KEYS}
