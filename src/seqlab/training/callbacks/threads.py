"""Torch threads from the cores other processes leave free, chosen at the start of training and re-checked every
few seconds of it (seqlab.launch.threads says why: full speed on an idle machine, no collapse on a busy one)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from seqlab.launch.threads import MIN_WINDOW_S, CpuTimes, ThreadPlan, others_busy, read_cpu_times

log = logging.getLogger(__name__)
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, read before any run in this process changes it
MAX_CHANGES = 100  # recorded in metrics.json; a run that keeps changing says so by its count


class FreeCoreThreads(L.Callback):
    """At the start of training: `torch.set_num_threads` to the free cores (other processes' CPU time since
    `since`, this process's own left out) and one log line saying what and why. Then, every `every_s`
    seconds of wall clock, read the load again: fewer threads at once when it rose (a spinning thread beside
    a busy core loses 25-50x), more only when two readings in a row agree (a passing burst does not flip it).
    A fixed plan (the user's threads=N or OMP_NUM_THREADS) is only logged."""

    def __init__(
        self,
        plan: ThreadPlan,
        since: CpuTimes | None,
        every_s: float = 3.0,
        read: Callable[[], CpuTimes | None] = read_cpu_times,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan, self.every_s, self.read, self.set_threads, self.clock = plan, every_s, read, set_threads, clock
        self.last = since
        self.threads = self.threads_at_start = plan.fixed or plan.limit
        self.others_at_start: float | None = None
        self.why = plan.why
        self.changes: list[dict[str, Any]] = []
        self.n_changes, self._raise_votes, self._started = 0, 0, 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plan.adaptive and self.last is not None:
            wait = MIN_WINDOW_S - (self.clock() - self.last.t)
            if wait > 0:  # a few clock ticks say nothing: read over half a second at least
                time.sleep(wait)
            now = self.read()
            if now is not None:
                others = others_busy(self.last, now, self.plan.n_cpus)
                window = now.t - self.last.t
                self.others_at_start, self.last = round(others, 2), now
                self.threads = self.plan.choose(others)
                self.why = f"other processes used {others:.2f} of {self.plan.n_cpus} cores over {window:.1f} s; "
                self.why += self.plan.why
        self._started = self._checked = self.clock()
        if self.plan.adaptive:
            self.set_threads(self.threads)
        self.threads_at_start = self.threads
        again = f"; re-checked every {self.every_s:g} s" if self.plan.adaptive and self.last is not None else ""
        log.info("threads: %d (%s%s); OpenMP wait policy: %s", self.threads, self.why, again, self.plan.policy)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.plan.adaptive or self.last is None or self.clock() - self._checked < self.every_s:
            return
        self._checked = self.clock()
        now = self.read()
        if now is None:
            return
        others = others_busy(self.last, now, self.plan.n_cpus)
        self.last = now
        want = self.plan.choose(others)
        self._raise_votes = self._raise_votes + 1 if want > self.threads else 0
        if want < self.threads or self._raise_votes >= 2:
            self._change(want, others, trainer.global_step)

    def _change(self, threads: int, others: float, step: int) -> None:
        self.set_threads(threads)
        log.info("threads: %d -> %d (other processes now use %.2f cores)", self.threads, threads, others)
        self.threads, self._raise_votes, self.n_changes = threads, 0, self.n_changes + 1
        if len(self.changes) < MAX_CHANGES:
            seconds = round(self.clock() - self._started, 1)
            self.changes.append({"step": step, "s": seconds, "threads": threads, "others": round(others, 2)})

    def summary(self) -> dict[str, Any]:
        """For metrics.json: the threads at the start, why, the wait policy and every change during the run."""
        return {
            "threads_at_start": self.threads_at_start,
            "why": self.why,
            "policy": self.plan.policy,
            "adaptive": self.plan.adaptive,
            "others_at_start": self.others_at_start,
            "changes": self.changes,
            "n_changes": self.n_changes,
        }
