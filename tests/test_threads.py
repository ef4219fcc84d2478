"""Torch threads from the free cores (seqlab.launch.threads, FreeCoreThreads): the /proc arithmetic against
hand-counted readings, the user's settings winning, the callback following the load, and metrics.json."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import compose_config

from seqlab.launch.sweep import launcher_share
from seqlab.launch.threads import (
    CpuTimes,
    cpu_quota,
    free_cores,
    others_busy,
    parse_own_ticks,
    parse_proc_stat,
    plan_threads,
    read_cpu_times,
    wait_policy,
)
from seqlab.training.callbacks.threads import FreeCoreThreads
from seqlab.training.run import train

# user nice system idle iowait irq softirq steal guest guest_nice
PROC_STAT = """cpu  {a0} 0 {a1} {a2} 0 0 0 0 0 0
cpu0 {u0} 1 {s0} {i0} 2 0 1 {st0} 5 0
cpu1 {u1} 0 {s1} {i1} 0 1 0 0 0 0
cpu2 900 0 900 0 0 0 0 0 0 0
intr 1234 0 0
ctxt 99
"""
SELF_STAT = "4242 (python -m x) R 1 2 3 0 -1 4194304 128 0 0 0 {utime} {stime} 0 0 20 0 3 0 77 0 0"


def fake_proc(times: dict[str, int], utime: int, stime: int) -> dict[str, str]:
    cpu = PROC_STAT.format(a0=0, a1=0, a2=0, **times)
    return {"/proc/stat": cpu, "/proc/self/stat": SELF_STAT.format(utime=utime, stime=stime)}


def test_proc_stat_counts_busy_and_total_ticks_of_the_allowed_cpus_only() -> None:
    text = PROC_STAT.format(a0=0, a1=0, a2=0, u0=10, s0=20, i0=30, st0=4, u1=100, s1=200, i1=300)
    # cpu0: busy user 10 + nice 1 + system 20 + softirq 1 + steal 4 = 36; idle 30 and iowait 2 are not busy;
    # guest 5 is inside user already
    assert parse_proc_stat(text, [0]) == (36, 68)
    # cpu1: 100 + 200 + irq 1 = 301 busy of 601; cpu2 (not allowed here) and the `cpu` total line are left out
    assert parse_proc_stat(text, [0, 1]) == (36 + 301, 68 + 601)
    assert parse_proc_stat(text, [1, 2]) == (301 + 1800, 601 + 1800)


def test_own_ticks_are_user_plus_system_even_with_a_name_holding_spaces_and_parens() -> None:
    assert parse_own_ticks("1 (a) b) c) R " + " ".join(str(i) for i in range(4, 20))) == 14 + 15
    assert parse_own_ticks(SELF_STAT.format(utime=7, stime=5)) == 12


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="Linux /proc")
def test_own_ticks_follow_this_process_cpu_clock() -> None:
    """The real /proc/self/stat against another clock of the same thing (CLOCK_PROCESS_CPUTIME_ID)."""
    hz = os.sysconf("SC_CLK_TCK")
    before, cpu_before = read_cpu_times(), time.process_time()
    while time.process_time() - cpu_before < 0.5:
        pass
    after, cpu_after = read_cpu_times(), time.process_time()
    assert (after.own - before.own) / hz == pytest.approx(cpu_after - cpu_before, abs=3 / hz + 0.02)
    assert after.total > before.total and after.busy >= before.busy


def test_others_busy_is_the_machines_busy_time_less_this_process_per_tick_of_the_window() -> None:
    first = fake_proc({"u0": 0, "s0": 0, "i0": 0, "st0": 0, "u1": 0, "s1": 0, "i1": 0}, utime=0, stime=0)
    # 100 ticks pass on each of cpu0 and cpu1: 200 in all; the machine is busy 150 of them, 70 of those ours
    second = fake_proc({"u0": 60, "s0": 10, "i0": 30, "st0": 0, "u1": 70, "s1": 10, "i1": 20}, utime=60, stime=10)
    # (nice, iowait, softirq, irq are fixed in the template: 1 + 2 + 1 + 1 more ticks, the same in both)
    a = read_cpu_times([0, 1], read=first.__getitem__)
    b = read_cpu_times([0, 1], read=second.__getitem__)
    assert (b.busy - a.busy, b.total - a.total, b.own - a.own) == (150, 200, 70)
    assert others_busy(a, b, 2) == pytest.approx((150 - 70) / 100)
    # our own time never counts as another's: a window where only we ran leaves 0, and the count stays in range
    assert others_busy(CpuTimes(0, 0, 0, 0), CpuTimes(1, 200, 200, 200), 2) == 0.0
    assert others_busy(CpuTimes(0, 0, 0, 0), CpuTimes(1, 500, 200, 0), 2) == 2.0
    assert others_busy(CpuTimes(0, 5, 9, 0), CpuTimes(1, 5, 9, 0), 2) == 0.0  # no ticks passed: no evidence


@pytest.mark.parametrize(
    "others, n_cpus, free",
    [
        *[(0.0, 2, 2), (0.29, 2, 2), (0.31, 2, 1), (0.67, 2, 1), (1.0, 2, 1), (1.3, 2, 1), (1.31, 2, 0)],
        *[(2.0, 2, 0), (3.1, 16, 13), (0.05, 1, 1)],
    ],
)
def test_a_core_is_taken_once_others_use_more_than_30_percent_of_it(others: float, n_cpus: int, free: int) -> None:
    assert free_cores(others, n_cpus) == free


def test_cgroup_quota_in_cores() -> None:
    def reader(files: dict[str, str]):
        def read(path: str) -> str:
            if path not in files:
                raise FileNotFoundError(path)
            return files[path]

        return read

    assert cpu_quota(reader({"/sys/fs/cgroup/cpu.max": "150000 100000\n"})) == 1.5
    assert cpu_quota(reader({"/sys/fs/cgroup/cpu.max": "max 100000\n"})) is None
    v1 = {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}
    assert cpu_quota(reader(v1)) == 3.0
    assert cpu_quota(reader({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n"})) is None
    assert cpu_quota(reader({})) is None


def plan(config_threads=None, share=None, default=2, env=None, cpus=(0, 1), quota=None):
    return plan_threads(config_threads, share, default, env={} if env is None else env, cpus=list(cpus), quota=quota)


def test_the_users_threads_and_openmp_settings_win() -> None:
    assert plan(config_threads=3).fixed == 3 and plan(config_threads=3).why == "threads=3"
    from_env = plan(env={"OMP_NUM_THREADS": "1"})
    assert from_env.fixed == 1 and from_env.choose(0.0) == 1 and "OMP_NUM_THREADS=1" in from_env.why
    assert plan(env={"OMP_NUM_THREADS": "4,2"}).fixed == 4  # nested levels: torch takes the first
    assert plan(config_threads=2, env={"OMP_NUM_THREADS": "1"}).fixed == 2  # the config names this run
    assert plan(config_threads=2, share=1).fixed == 2  # even above a launcher's share
    # a wait policy is the user's too: recorded as theirs, never replaced; the count still follows the load
    assert plan().policy == "the default (idle threads spin, then sleep)"
    passive = plan(env={"OMP_WAIT_POLICY": "PASSIVE"})
    assert passive.policy == "OMP_WAIT_POLICY=PASSIVE (from the environment)" and passive.adaptive
    assert wait_policy({"GOMP_SPINCOUNT": "10000"}) == "GOMP_SPINCOUNT=10000 (from the environment)"


def test_free_core_choice_is_bounded_by_torch_the_quota_and_the_sweep_share() -> None:
    idle, busy = 0.02, 1.0
    assert plan().choose(idle) == 2 and plan().choose(busy) == 1 and plan().choose(2.0) == 1  # never 0
    assert plan(default=1).choose(idle) == 1  # torch's own count is the ceiling
    assert plan(quota=1.5).choose(idle) == 2 and plan(quota=0.5).choose(idle) == 1
    sweep = plan(share=1)
    assert sweep.choose(idle) == 1 and "share" in sweep.why
    big = plan(share=8, default=16, cpus=range(16))
    assert big.choose(0.1) == 8 and big.choose(10.0) == 6  # a share of 8 of 16 cores, 6 left free


def test_a_joblib_sweep_gives_each_job_its_share(tmp_path: Path) -> None:
    compose_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert launcher_share() == max(len(os.sched_getaffinity(0)) // 2, 1)
    compose_config([], tmp_path)
    assert launcher_share() is None  # one job at a time: no share


class FakeMachine:
    """/proc readings of a 2-core machine whose other processes use `others` cores, and a clock that we move."""

    def __init__(self) -> None:
        self.now, self.others, self.ticks = 0.0, 0.0, CpuTimes(0.0, 0, 0, 0)
        self.threads: list[int] = []

    def advance(self, seconds: float, others: float, own: float = 1.0) -> None:
        t = self.ticks
        per_cpu = round(100 * seconds)  # USER_HZ
        busy = round(per_cpu * (others + own))
        self.now += seconds
        self.ticks = CpuTimes(self.now, t.busy + busy, t.total + 2 * per_cpu, t.own + round(per_cpu * own))

    def read(self) -> CpuTimes:
        return self.ticks

    def callback(self, **plan_args) -> FreeCoreThreads:
        return FreeCoreThreads(
            plan(**plan_args),
            self.read(),
            every_s=3.0,
            read=self.read,
            set_threads=self.threads.append,
            clock=self.clock,
        )

    def clock(self) -> float:
        return self.now


def test_the_callback_takes_the_free_cores_and_follows_the_load(caplog: pytest.LogCaptureFixture) -> None:
    machine = FakeMachine()
    callback = machine.callback()
    trainer = SimpleNamespace(global_step=0)
    machine.advance(2.0, others=0.0)  # the run's setup: nobody else on the machine
    with caplog.at_level(logging.INFO, logger="seqlab.training.callbacks.threads"):
        callback.on_train_start(trainer, None)
    assert machine.threads == [2] and callback.others_at_start == 0.0
    (line,) = caplog.messages
    assert line.startswith("threads: 2 (other processes used 0.00 of 2 cores over 2.0 s")
    assert line.endswith("OpenMP wait policy: the default (idle threads spin, then sleep)")

    def batch(step: int, seconds: float, others: float) -> None:
        machine.advance(seconds, others)
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, None, None, step)

    batch(10, 1.0, others=1.0)  # not due yet: every 3 s
    assert machine.threads == [2]
    batch(20, 2.5, others=1.0)  # a busy process arrived: one thread at once
    assert machine.threads == [2, 1]
    assert callback.changes == [{"step": 20, "s": 3.5, "threads": 1, "others": 1.0}]
    batch(30, 3.0, others=0.0)  # it left: one reading is not enough to take the core back
    assert machine.threads == [2, 1]
    batch(40, 3.0, others=1.0)  # it came back: the vote starts over
    batch(50, 3.0, others=0.05)
    assert machine.threads == [2, 1]
    batch(60, 3.0, others=0.05)  # two quiet readings in a row: both cores again
    assert machine.threads == [2, 1, 2] and callback.changes[-1]["threads"] == 2
    summary = callback.summary()
    assert summary["threads_at_start"] == 2 and summary["n_changes"] == 2 and summary["adaptive"]


def test_a_fixed_count_is_logged_and_never_changed(caplog: pytest.LogCaptureFixture) -> None:
    machine = FakeMachine()
    callback = machine.callback(config_threads=2)
    machine.advance(2.0, others=1.5)
    with caplog.at_level(logging.INFO, logger="seqlab.training.callbacks.threads"):
        callback.on_train_start(SimpleNamespace(global_step=0), None)
    for step in range(1, 6):
        machine.advance(4.0, others=1.5)
        callback.on_train_batch_end(SimpleNamespace(global_step=step), None, None, None, step)
    assert machine.threads == [] and callback.changes == []
    policy = "OpenMP wait policy: the default (idle threads spin, then sleep)"
    assert caplog.messages == [f"threads: 2 (threads=2); {policy}"]


def test_a_busy_machine_at_the_start_gives_one_thread() -> None:
    machine = FakeMachine()
    callback = machine.callback()
    machine.advance(1.0, others=1.8)
    callback.on_train_start(SimpleNamespace(global_step=0), None)
    assert machine.threads == [1] and callback.summary()["others_at_start"] == 1.8


def test_metrics_json_records_the_threads_why_and_changes(tiny_text: Path, tmp_path: Path) -> None:
    overrides = ["data=text_file", f"data.path={tiny_text}", "model=unigram", "trainer.accelerator=cpu"]
    overrides += ["trainer.max_steps=3", "callbacks.progress=null", "callbacks.gradient_profile=null"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["status"] == "ok"
    openmp = metrics["openmp"]
    assert metrics["threads"] == openmp["threads_at_start"] and 1 <= metrics["threads"] <= os.cpu_count()
    assert openmp["adaptive"] and openmp["why"].startswith("other processes used ")
    assert openmp["policy"] and openmp["changes"] == [] and openmp["n_changes"] == 0  # 3 steps: no re-check yet
    assert 0.0 <= openmp["others_at_start"] <= os.cpu_count()
    fixed = train(compose_config([*overrides, "threads=1"], tmp_path / "fixed"))
    assert fixed["threads"] == 1 and fixed["openmp"]["why"] == "threads=1" and not fixed["openmp"]["adaptive"]
