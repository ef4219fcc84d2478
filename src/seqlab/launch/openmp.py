"""OpenMP's environment: what a run records, and sleeping waiters for code that cannot pick its thread count.

By default libgomp's idle threads spin (~300k turns) waiting for their partners. With 2 threads on 2 cores and
another process holding one core, the partner is descheduled and the spinning thread burns the slice it waits
for: a tanh-RNN loop trained 20-50x slower than with sleeping waiters. Sleeping waiters cost about half the
speed on an idle machine, though, so a training run keeps the default policy and takes only the free cores
instead (seqlab.launch.threads, docs/speed.md). `sleep_when_idle` is for the test suite, whose processes run
torch outside a training run on a machine shared with other jobs: call it before anything imports torch
(libgomp, torch's OpenMP, also used by its MKL and oneDNN, reads the environment once, when it starts).
"""

from __future__ import annotations

import os

KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def sleep_when_idle() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def settings() -> dict[str, str | None]:
    """What this process runs with, for metrics.json."""
    return {key: os.environ.get(key) for key in KEYS}
