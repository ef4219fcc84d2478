"""Where a single run writes: a dir of its own, or the dir of the run it resumes, checked before Hydra writes.

Hydra creates the run dir and writes `.hydra/` into it before the job starts, so this is a Hydra callback
(see conf/hydra/default.yaml) that runs first:
- a new run claims its dir by creating `<dir>/.hydra` exclusively, so two runs started in the same second
  (two shells, a loop, two users) never share one: the second default name gets `_2`, `_3`, ...; an
  explicit `hydra.run.dir` that already holds a run is refused; so is a SLURM job's dir (named by its job id)
  in the job's first start, while a requeued start finds it again (seqlab.launch.slurm resumes it);
- `resume=<run dir>` must name an existing dir. Hydra then writes nothing there (`.hydra/` waits until the
  run has accepted the checkpoint, see seqlab.training.run), so a refused resume leaves that run as it was.
Bad values get one line and exit code 2. Light on purpose: no torch, so these answers come at once.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from seqlab.launch import slurm


def claim(path: Path, unique: bool) -> Path | None:
    """Create `path/.hydra` (making `path` if needed) exclusively; if another run has it (or `path` holds a run
    without one), try `path_2`, ... when `unique`, else give up (None). mkdir is atomic, also between
    processes and users."""
    for n in range(1, 10_000 if unique else 2):
        candidate = path if n == 1 else path.with_name(f"{path.name}_{n}")
        candidate.mkdir(parents=True, exist_ok=True)
        if (candidate / "metrics.json").exists() or (candidate / "checkpoints").exists():
            continue  # a run that has no .hydra/ (one trained from a script)
        try:
            (candidate / ".hydra").mkdir()
            return candidate
        except FileExistsError:
            continue
    return None


def resume_problem(resume: Any) -> str | None:
    """Why `resume=<value>` cannot name a run dir, or None (the checkpoint itself is checked by the run)."""
    if not isinstance(resume, str) or not resume.strip():
        return f"resume={resume}: give the dir of the run to continue, e.g. resume=outputs/runs/<name>"
    path = Path(resume).expanduser()
    if path.is_file():
        hint = f"resume={path.parent.parent}" if path.parent.name == "checkpoints" else "resume=<its run dir>"
        return (
            f"resume={resume}: is a file; give the run dir ({hint}), or start a new run from it with ckpt_path={resume}"
        )
    if not path.is_dir():
        return f"resume={resume}: no such run dir"
    return None


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class RunDir(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resume = config.get("resume")
        with read_write(config.hydra):
            if resume is not None:
                problem = resume_problem(resume)
                if problem:
                    fail(problem)
                config.hydra.run.dir = str(Path(resume).expanduser())
                config.hydra.output_subdir = None  # the run writes .hydra/ once it has accepted the checkpoint
                return
            explicit = any(o.split("=", 1)[0].lstrip("+") == "hydra.run.dir" for o in config.hydra.overrides.hydra)
            wanted = Path(config.hydra.run.dir)
            if slurm.job_key() is not None and (wanted / ".hydra").is_dir() and slurm.restarts() > 0:
                return  # a requeued SLURM job: its own dir (named by the job id) again, resumed by seqlab.launch.slurm
            try:
                # a SLURM job's dir is named by its job id, the same in every start: never renamed to `_2`
                claimed = claim(wanted, unique=not explicit and slurm.job_key() is None)
            except OSError as err:
                fail(f"hydra.run.dir={wanted}: cannot create it ({err.strerror})")
            if claimed is None:
                under_slurm = " (under SLURM: one run per job or array task)" if slurm.job_key() else ""
                fail(
                    f"hydra.run.dir={wanted}: already holds a run; continue it with resume={wanted}, "
                    f"or choose another dir{under_slurm}"
                )
            config.hydra.run.dir = str(claimed)


class WritableOutputs(Callback):
    """Before Hydra makes the run's (or the sweep's) dir: one line and exit code 2 if it cannot be written
    (a read-only or full disk, a path through a file) instead of Hydra's traceback. Registered in
    conf/hydra/default.yaml; light on purpose (it runs in the launching process, before any import of torch)."""

    MIN_FREE = 1 << 20  # bytes; less than this cannot hold even a metrics.json and a log

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(Path(str(config.hydra.sweep.dir)))

    def check(self, out_dir: Path) -> None:
        existing = next(p for p in [out_dir.absolute(), *out_dir.absolute().parents] if p.exists())
        if not existing.is_dir():
            problem = f"{existing} is a file"
        elif not os.access(existing, os.W_OK | os.X_OK):  # also False on a read-only filesystem, even for root
            problem = f"{existing} is not writable"
        elif shutil.disk_usage(existing).free < self.MIN_FREE:
            problem = f"no space left on the disk of {existing}"
        else:
            return
        print(f"error: cannot write {out_dir}: {problem}", file=sys.stderr)
        raise SystemExit(2)  # not an Exception: Hydra lets it through without a traceback
