"""What a sweep needs beyond Hydra: safe job dir names, threads per job, and an exit code that says "failed".

Hydra instantiates `SweepReport` (see conf/hydra/default.yaml) in the launching process, and every launcher
ships it to the processes that run the jobs, so importing this module there also registers the resolvers
the job dir names use. It stays light on purpose: no torch, no lightning.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

MAX_DIRNAME = 200  # bytes; most filesystems stop at 255


def job_dirname(num: int, override_dirname: str) -> str:
    """`3_data.context_length=16,model=rnn`: the job number keeps names unique (and in launch order), the
    overrides make them readable in TensorBoard's run list. Path separators would nest dirs, so they go."""
    name = re.sub(r"[/\\\x00]", "_", f"{num}_{override_dirname}" if override_dirname else str(num))
    encoded = name.encode()
    return encoded[:MAX_DIRNAME].decode(errors="ignore") if len(encoded) > MAX_DIRNAME else name


OmegaConf.register_new_resolver("seqlab.job_dirname", job_dirname, replace=True)
# e.g. data.batch_size: ${seqlab.floordiv:4096,${data.context_length}} holds tokens per batch fixed
OmegaConf.register_new_resolver("seqlab.floordiv", lambda a, b: max(int(a) // int(b), 1), replace=True)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(launcher: DictConfig | None, cpus: int | None = None) -> int | None:
    """Torch threads for one job, so that the jobs a launcher runs at once share the cores instead of each
    taking all of them. None: leave torch's default (one job at a time, or a scheduler that pins cores)."""
    cpus = cpus or available_cpus()
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    if target.endswith("JoblibLauncher"):
        n_jobs = launcher.get("n_jobs") or -1
        parallel = n_jobs if n_jobs > 0 else max(cpus + 1 + n_jobs, 1)  # joblib: -1 = all CPUs, -2 = all but one
        return max(cpus // parallel, 1)
    if "submitit" in target:
        if launcher.get("cpus_per_task"):
            return int(launcher.cpus_per_task)
        if target.endswith("LocalLauncher"):
            return 1  # submitit's local executor starts every job at once
    return None


def in_multirun() -> bool:
    """Whether this process runs a job of a sweep (`-m`), as opposed to a single run or a script."""
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra context
        return False


def threads_from_config(cfg: DictConfig) -> int | None:
    """`threads` when set; otherwise what the current Hydra launcher implies (see threads_per_job)."""
    if cfg.get("threads") is not None:
        return int(cfg.threads)
    try:
        return threads_per_job(HydraConfig.get().launcher)
    except ValueError:  # no Hydra context: a script or a notebook
        return None


# --- reading a sweep back ------------------------------------------------------------------------------


@dataclass
class Job:
    dir: Path
    metrics: dict[str, Any]  # metrics.json, or a stand-in with status "missing"

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "missing"))

    @property
    def reason(self) -> str:
        return str(self.metrics.get("reason") or "")


def find_job_dirs(root: Path) -> list[Path]:
    """Every job dir under `root`: one with a metrics.json, or one Hydra set up (.hydra/) whose job never
    wrote it (killed, out of memory). Hidden dirs (.submitit, .hydra) are not jobs."""
    root = Path(root)
    found = {p.parent for p in root.rglob("metrics.json")} | {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    found = {d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts)}
    return sorted(found, key=lambda d: (len(d.parts), _natural_key(str(d))))


def _natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def read_job(job_dir: Path) -> Job:
    job_dir = Path(job_dir)
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"holds a JSON {type(metrics).__name__}, not an object")
        if not isinstance(metrics.get("hparams"), dict) or not metrics["hparams"]:  # stopped before its model
            metrics["hparams"] = _hparams_from_hydra_dir(job_dir / ".hydra")
        return Job(job_dir, metrics)
    except FileNotFoundError:
        reason = "no metrics.json: the job died before its end"
    except (OSError, ValueError) as err:  # not JSON, not text, not a file, not an object
        reason = f"unreadable metrics.json: {err}"
    hparams = _hparams_from_hydra_dir(job_dir / ".hydra")
    return Job(job_dir, {"status": "missing", "reason": reason, "model": hparams.get("model"), "hparams": hparams})


def _hparams_from_hydra_dir(hydra_dir: Path) -> dict[str, Any]:
    """The job's settings as Hydra saved them before it started, so a job that died still names itself."""
    try:
        cfg = OmegaConf.load(hydra_dir / "config.yaml")
        model = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices.model
    except (OSError, AttributeError, ValueError):
        return {}
    hparams = {"model": model, "context_length": OmegaConf.select(cfg, "data.context_length", default=None)}
    for key in ("hidden_size", "window", "recurrent_radius"):
        hparams[key] = OmegaConf.select(cfg, f"model.{key}", default=None)
    hparams["lr"] = OmegaConf.select(cfg, "optim.lr", default=None)
    hparams["gradient_clip_val"] = OmegaConf.select(cfg, "trainer.gradient_clip_val", default=None)
    return hparams


def summarize(jobs: list[Job], root: Path) -> str | None:
    """One line naming the jobs that did not end ok, or None if all did."""
    bad = [j for j in jobs if j.status != "ok"]
    if not bad:
        return None
    listed = "; ".join(f"{j.dir.relative_to(root)}: {j.status} ({j.reason})" for j in bad)
    return f"{len(bad)} of {len(jobs)} jobs did not finish ok: {listed}"


class SweepReport(Callback):
    """At the end of a multirun, read every job's metrics.json from the sweep dir (jobs may have run in
    other processes or on other machines) and exit non-zero if any job failed, diverged or is missing."""

    def __init__(self, exit_code: int = 1) -> None:
        self.exit_code = exit_code

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        jobs = [read_job(d) for d in find_job_dirs(root)] if root.exists() else []
        message = summarize(jobs, root)
        if message is None:
            print(f"sweep: all {len(jobs)} jobs ok -> {root}", file=sys.stderr)
            return
        print(f"sweep: {message}", file=sys.stderr)
        # SystemExit is not an Exception: Hydra's callback runner and error reporter let it through
        raise SystemExit(self.exit_code)
