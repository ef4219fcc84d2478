"""On a live SLURM cluster (scripts/slurm_local.sh; skipped without sbatch): a sweep through
`hydra/launcher=slurm_local`, and jobs that `scontrol requeue` stops mid-run and that resume by themselves to
the same numbers as an unbroken run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import checkpoint_step, command, results, run_env

from seqlab.launch.slurm import job_key, requeued_run

ROOT = Path(__file__).resolve().parents[1]
SLOW = ["+callbacks.slow._target_=slow_steps.SlowSteps", "+callbacks.slow.seconds=0.15"]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="module")
def short_text(tmp_path_factory: pytest.TempPathFactory, sample_text: str) -> Path:
    path = tmp_path_factory.mktemp("data") / "short.txt"
    path.write_text(sample_text[:9000])  # as tests/test_resume.py: 10 batches of 16 x 32 per epoch
    return path


@pytest.fixture(scope="module")
def unbroken(short_text: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("unbroken")
    subprocess.run(command(short_text, run_dir), env=run_env(), check=True, capture_output=True)
    return results(run_dir)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 180) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def job_info(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def requeue(job: str, how: str = "scontrol") -> None:
    """`scontrol`: what pre-emption does, SIGTERM now and the job back in the queue. `USR2`: what SLURM sends a
    submitit job `signal_delay_s` before its time limit; submitit then requeues the job itself. Slurm holds a
    requeued job for a while (Reason=BeginTime); StartTime=now+5 lets it run again soon. (At once, the node can
    refuse the new start while it still revokes the old one's credential: "Job credential revoked".)"""
    if how == "scontrol":
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
    else:
        subprocess.run(["scancel", f"--signal={how}", job], check=True, capture_output=True)
    wait_until(lambda: job_info(job).get("JobState") == "PENDING", f"job {job} to be back in the queue")
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now+5"], check=True, capture_output=True)


# --- fast: where a run goes under SLURM, and when it resumes by itself ---------------------------------


def test_a_requeued_job_resumes_only_its_own_saved_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert job_key() is None and requeued_run(tmp_path) is None  # outside SLURM: never by itself

    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert job_key() == "slurm-42"
    with pytest.raises(ValueError, match="was not requeued: one run per job"):  # a first start never mixes runs
        requeued_run(tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_run(tmp_path) == tmp_path
    assert requeued_run(tmp_path / "elsewhere") is None  # requeued before its first save: starts afresh

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert job_key() == "slurm-40_2"


# --- slow: on the cluster --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sbatch_run_requeued_mid_run_resumes_itself(
    slurm_cluster: str, short_text: Path, unbroken: dict, tmp_path: Path
) -> None:
    # the command a user puts in a batch script: no hydra.run.dir, no resume=
    cmd = [arg for arg in command(short_text, tmp_path) if not arg.startswith("hydra.run.dir=")]
    script = tmp_path / "train.sbatch"
    script.write_text(f"#!/bin/bash\nexec {shlex.join([*cmd, *SLOW])}\n")
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--requeue",
            "--open-mode=append",
            "-c",
            "1",
            "--mem=2G",
            "-o",
            "slurm-%j.out",
            str(script),
        ],
        cwd=tmp_path,
        env=run_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    runs = tmp_path / "outputs" / "runs"
    run_dir = wait_until(lambda: next(runs.glob(f"slurm-{job}_*"), None), "the run dir")  # named by the job id
    wait_until(lambda: checkpoint_step(run_dir / "checkpoints" / "last.ckpt") >= 7, "a checkpoint at step 7")
    requeue(job)

    info = wait_until(lambda: (i := job_info(job)).get("JobState") in ENDED and i, "the job to end", timeout=240)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    assert "SIGTERM: saving" in log  # the first start saved on the signal ...
    assert "requeued this job (restart 1): resuming" in log  # ... and the second found it
    assert [p.name for p in runs.iterdir()] == [run_dir.name]  # no second run dir
    assert results(run_dir) == unbroken


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scontrol", "USR2"])
def test_slurm_sweep_reads_back_and_a_requeued_job_resumes_itself(
    how: str, slurm_cluster: str, short_text: Path, unbroken: dict, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep_dir = tmp_path / "sweep"
    overrides = [a for a in command(short_text, tmp_path)[2:] if not a.startswith("hydra.run.dir=")]
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm_local", f"hydra.launcher.partition={slurm_cluster}"]
    cmd += [*overrides, "seed=1337,7", *SLOW, f"hydra.sweep.dir={sweep_dir}"]  # 1337: the unbroken run's seed
    env = {**run_env(), "SLURM_CONF": os.environ.get("SLURM_CONF", "")}
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running(found: object) -> object:
        assert launcher.poll() is None, launcher.communicate()
        return found

    def seed_1337_dir() -> Path | None:  # found by its overrides, whatever the job dirs are named
        return next(
            (p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml") if "seed=1337" in p.read_text()), None
        )

    last = wait_until(lambda: running(seed_1337_dir()), "the job's dir") / "checkpoints" / "last.ckpt"
    wait_until(lambda: running(checkpoint_step(last) >= 7), "a checkpoint at step 7")
    submitit = sweep_dir / ".submitit"  # one folder per SLURM array task, named by its id, with its logs

    def job_log(job: str) -> str:
        return "".join(p.read_text() for p in sorted((submitit / job).glob("*_log.*")))

    job = next(job for job in sorted(os.listdir(submitit)) if "Seed set to 1337" in job_log(job))
    requeue(job, how)
    out, err = launcher.communicate(timeout=300)

    assert launcher.returncode == 0, err
    assert "sweep: all 2 jobs ok" in err
    assert "sacct" not in out + err and "accounting storage" not in out + err  # the local cluster reads cleanly
    assert f"{'SIGTERM' if how == 'scontrol' else 'SIGUSR2'}: saving" in job_log(job)  # saved on the signal
    assert "requeued this job (restart 1): resuming" in job_log(job)
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert metrics["status"] == "ok", metrics
        acc = EventAccumulator(str(job_dir))
        acc.Reload()
        val_losses = [e.value for e in acc.Scalars("val/loss")]  # float32 in the event file
        assert min(val_losses) == pytest.approx(metrics["best_val_loss"], rel=1e-6)
    assert results(last.parents[1]) == unbroken
