"""How many torch threads a run takes: as many as the cores other processes leave free, re-checked as it trains.

torch's CPU wheel runs on GNU OpenMP (libgomp), whose idle threads spin (~300k turns) before they sleep. That
spinning is what makes 2 threads on 2 idle cores fast (an RNN step is hundreds of tiny parallel regions, and a
sleeping thread takes tens of µs to wake for each), and it is also what collapses a run 25-50x when another
process holds one of the cores: the spinning thread waits for a partner the kernel has descheduled.
`OMP_WAIT_POLICY=PASSIVE` avoids the collapse but halves the speed on an idle machine (docs/speed.md). So
seqlab keeps OpenMP's default policy and changes the other knob instead: the number of threads, set to the cores that are actually free (one thread on a free core beats every two-thread setting on
a busy machine), measured from /proc/stat minus this process's own CPU time, and re-checked during training
by `seqlab.training.callbacks.FreeCoreThreads` (`torch.set_num_threads` may be called again at any time).

A user's `threads=N`, `OMP_NUM_THREADS`, `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` always wins. No torch here:
the launch layer stays light (tests/test_layers.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Other processes keeping a core busy more than this share of the time take it: a spinning partner waits
# out every slice the other process holds, so a partly busy core is already a slow one.
TAKEN = 0.3
MIN_WINDOW_S = 0.5  # a shorter reading is a handful of clock ticks (USER_HZ is 100 on Linux)
POLICY_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _read(path: str) -> str:
    return Path(path).read_text()


@dataclass(frozen=True)
class CpuTimes:
    """One reading of the CPU clocks, in clock ticks since boot (all from the same tick counter)."""

    t: float  # time.monotonic() at the reading
    busy: int  # the allowed CPUs' ticks on anything but idle and iowait, this process's included
    total: int  # all ticks of the allowed CPUs
    own: int  # ticks this process (every thread of it) ran, user + system


def parse_proc_stat(text: str, cpus: Iterable[int]) -> tuple[int, int]:
    """(busy, total) ticks of the CPUs `cpus` from /proc/stat's `cpuN` lines. Columns: user nice system idle
    iowait irq softirq steal guest guest_nice; guest time is already inside user, and steal (another virtual
    machine ran on the core) is time this machine could not have."""
    wanted, busy, total = set(cpus), 0, 0
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in wanted:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in (fields + ["0"] * 8)[:8])
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    return busy, total


def parse_own_ticks(text: str) -> int:
    """utime + stime of /proc/<pid>/stat (fields 14 and 15; the name in parentheses may hold spaces)."""
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 (the state)
    return int(fields[11]) + int(fields[12])


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask: taskset, a batch scheduler's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def read_cpu_times(cpus: Iterable[int] | None = None, read: Callable[[str], str] = _read) -> CpuTimes | None:
    """A reading of /proc/stat and /proc/self/stat, or None where there are none (not Linux)."""
    try:
        busy, total = parse_proc_stat(read("/proc/stat"), allowed_cpus() if cpus is None else cpus)
        own = parse_own_ticks(read("/proc/self/stat"))
    except (OSError, ValueError, IndexError):
        return None
    return CpuTimes(time.monotonic(), busy, total, own)


def others_busy(before: CpuTimes, after: CpuTimes, n_cpus: int) -> float:
    """Cores that other processes kept busy between two readings (0.0 to n_cpus). The window's length comes
    from the same tick counter (total ticks / CPUs), so the clock rate and wall-clock jitter drop out."""
    ticks_per_cpu = (after.total - before.total) / n_cpus
    if ticks_per_cpu <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return min(max(others / ticks_per_cpu, 0.0), float(n_cpus))


def free_cores(others: float, n_cpus: int) -> int:
    """Cores left when other processes use `others` of them: a core counts as taken from TAKEN of its time."""
    return max(n_cpus - max(math.ceil(others - TAKEN), 0), 0)


def cpu_quota(read: Callable[[str], str] = _read) -> float | None:
    """The cgroup's CPU quota in cores (a container's `--cpus`), or None where there is none."""
    try:  # cgroup v2
        quota, period = read("/sys/fs/cgroup/cpu.max").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        return None if quota <= 0 else quota / int(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    except (OSError, ValueError):
        return None


def user_thread_count(env: dict[str, str] | os._Environ[str]) -> int | None:
    """OMP_NUM_THREADS as torch reads it (the first level of a nested list such as `4,2`), or None."""
    try:
        return max(int(env.get("OMP_NUM_THREADS", "").split(",")[0]), 1)
    except ValueError:
        return None


def wait_policy(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """OpenMP's wait policy in words, for the start line and metrics.json."""
    env = os.environ if env is None else env
    chosen = [f"{k}={env[k]}" for k in POLICY_KEYS if k in env]
    if chosen:
        return " ".join(chosen) + " (from the environment)"
    return "the default (idle threads spin, then sleep)"


@dataclass
class ThreadPlan:
    """What decides the thread count: a fixed count (the user's), or the free cores up to `limit`."""

    fixed: int | None  # threads=N or OMP_NUM_THREADS: never changed
    limit: int  # most threads a free-core choice takes: torch's default, the cores allowed, a launcher's share
    n_cpus: int  # the CPUs the free-core arithmetic counts (the affinity mask)
    why: str  # where `fixed` or `limit` comes from, in words
    policy: str  # OpenMP's wait policy, in words

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    def choose(self, others: float) -> int:
        """Threads for a machine where other processes keep `others` cores busy: the free ones, 1 to `limit`."""
        if self.fixed is not None:
            return self.fixed
        return min(max(free_cores(others, self.n_cpus), 1), self.limit)


def plan_threads(
    config_threads: int | None,
    share: int | None,
    default_threads: int,
    env: dict[str, str] | os._Environ[str] | None = None,
    cpus: list[int] | None = None,
    quota: float | None = None,
) -> ThreadPlan:
    """The plan for one run. `config_threads`: the config's `threads`; `share`: a parallel launcher's threads per
    job (seqlab.launch.sweep.threads_per_job), an upper bound; `default_threads`: torch's own count before any
    change (never exceeded: torch may count only physical cores)."""
    env = os.environ if env is None else env
    cpus = allowed_cpus() if cpus is None else cpus
    quota = cpu_quota() if quota is None else quota
    policy = wait_policy(env)
    if config_threads is not None:
        return ThreadPlan(int(config_threads), int(config_threads), len(cpus), f"threads={config_threads}", policy)
    from_env = user_thread_count(env)
    if from_env is not None:
        return ThreadPlan(from_env, from_env, len(cpus), f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}", policy)
    limit = min(default_threads, len(cpus))
    why = f"up to {limit}, torch's default"
    if quota is not None and math.ceil(quota) < limit:
        limit = max(math.ceil(quota), 1)
        why = f"up to {limit}, the cgroup's CPU quota"
    if share is not None and share < limit:
        limit, why = share, f"up to {share}, this job's share of a parallel sweep"
    return ThreadPlan(None, limit, len(cpus), why, policy)
