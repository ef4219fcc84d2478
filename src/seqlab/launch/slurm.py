"""Running under SLURM: a run dir that survives a requeue, resuming a requeued job, a quiet sacct.

A SLURM job keeps its id when it is requeued (after pre-emption, a time limit, `scontrol requeue`), and SLURM
sets SLURM_RESTART_COUNT (1, 2, ...) in the job's next start. So:
- a single run started by sbatch gets `outputs/runs/slurm-<job id>_...` (the `seqlab.slurm_or` resolver in
  conf/hydra/default.yaml), the same dir in every start of the job;
- a sweep job of `hydra/launcher=slurm` runs again from submitit's pickle, in the same job dir;
- a start with SLURM_RESTART_COUNT > 0 whose run dir holds `checkpoints/last.ckpt` resumes from it
  (`requeued_run`), with no `resume=` typed. Outside SLURM, or in a job's first start, nothing resumes by itself.
Light on purpose (no torch): conf/hydra/default.yaml imports it in the launching process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from seqlab.errors import ConfigError

log = logging.getLogger(__name__)


def job_key() -> str | None:
    """`slurm-123`, or `slurm-120_3` for task 3 of array job 120: the same in every start of a job. None
    outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"slurm-{array_job}_{task}"
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else None


def restarts() -> int:
    """How many times SLURM has requeued this job (0 in its first start and outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


# `${seqlab.slurm_or:<stamp>}`: the job's key under SLURM, else <stamp> (e.g. the time)
OmegaConf.register_new_resolver("seqlab.slurm_or", lambda default: job_key() or default, replace=True)


def requeued_run(out_dir: Path) -> Path | None:
    """`out_dir` when this is a requeued SLURM job whose earlier start saved `checkpoints/last.ckpt` there:
    the run to continue. A first start that finds a last.ckpt in its dir (a second run in one SLURM job, or
    a job id the cluster gave out before) refuses it rather than mixing two runs in one dir."""
    last = out_dir / "checkpoints" / "last.ckpt"
    if job_key() is None or not last.is_file():
        return None
    if restarts() == 0:
        raise ConfigError(
            f"{out_dir} already holds a run's checkpoints and this SLURM job ({job_key()}) was not requeued: "
            "one run per job (or array task), or give this run its own hydra.run.dir"
        )
    log.info("SLURM requeued this job (restart %d): resuming %s", restarts(), last)
    return out_dir


def submitit_requeue() -> tuple[int, Callable[..., Any]] | None:
    """In a job of `hydra/launcher=slurm`: the signal submitit requeues the job on (USR2, which SLURM sends
    `signal_delay_s` before the time limit) and submitit's handler for it; None elsewhere."""
    signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    handler = signal.getsignal(signum) if signum is not None else None
    if callable(handler) and str(getattr(handler, "__module__", "")).startswith("submitit"):
        return signum, handler
    return None


def accounting_disabled() -> bool:
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "accounting_storage/none" in config


def quiet_sacct() -> None:
    """submitit asks `sacct` for its jobs' states at every poll; on a cluster that keeps no accounting
    (scripts/slurm_local.sh) sacct fails, each time with an error line and a warning. submitit then goes by
    the jobs' result files, which is enough: say so once and leave sacct alone. A cluster with accounting
    keeps sacct (it also tells submitit about jobs that died without a result)."""
    if accounting_disabled():
        from submitit import SlurmJob

        # submitit has no setting that skips sacct: its watcher's command builder, made to ask nothing
        SlurmJob.watcher._make_command = lambda: None  # type: ignore[method-assign]  # private: see above
        log.info("this SLURM cluster keeps no accounting: job states come from their result files")


class QuietSacct(Callback):
    """quiet_sacct() for a sweep through `hydra/launcher=slurm` (a Hydra callback: conf/hydra/default.yaml)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith("SlurmLauncher"):
            quiet_sacct()
