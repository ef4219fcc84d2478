"""What a sweep needs beyond Hydra: safe job dir names, threads per job, stopping and resuming, one HParams
view of the whole sweep, and an exit code that says "failed".

Hydra instantiates `SweepReport` (see conf/hydra/default.yaml) in the launching process, and every launcher
ships it to the processes that run the jobs, so importing this module there also registers the resolvers
the job dir names use. It stays light on purpose: no torch, no lightning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from seqlab.launch.slurm import job_key

log = logging.getLogger(__name__)

MAX_DIRNAME = 200  # bytes; most filesystems stop at 255
# the keys a sweep varies, comma-separated: set by SweepReport in the launching process, inherited by the jobs
SWEPT_KEYS_ENV = "SEQLAB_SWEPT_KEYS"
STOP_FILE = ".stop"  # in the sweep dir: the sweep was asked to stop; jobs still to come record `not_started`


def swept_keys(overrides: list[str], sweeper_params: dict[str, Any] | None = None) -> list[str]:
    """The keys with more than one value: `model=rnn,gru` and a preset's `hydra.sweeper.params` entries do,
    `trainer.max_steps=20` does not. The command line wins over the preset for the same key, as in Hydra."""
    parse = OverridesParser.create().parse_overrides
    keys: dict[str, bool] = {}
    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    for override in [*parse(params), *parse(list(overrides))]:
        keys[override.get_key_element().lstrip("+~")] = override.is_sweep_override()
    return sorted(k for k, swept in keys.items() if swept)


def job_dirname(num: int, override_dirname: str) -> str:
    """`3_model.hidden_size=64,model=rnn`: the job number keeps names unique (and in launch order), the
    overrides make them readable in TensorBoard's run list. Only the swept keys appear (when the launching
    process named them), so `trainer.max_steps=20`, the same in every job, does not push the part that
    differs out of sight. Path separators would nest dirs, so they go."""
    swept = os.environ.get(SWEPT_KEYS_ENV)
    if swept is not None and override_dirname:
        keep = set(swept.split(","))
        items: list[str] = []
        for piece in override_dirname.split(","):  # a value may hold a comma: glue it back to its item
            if "=" in piece or not items:
                items.append(piece)
            else:
                items[-1] += "," + piece
        override_dirname = ",".join(i for i in items if i.split("=", 1)[0].lstrip("+~") in keep)
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


def launcher_share() -> int | None:
    """This job's share of the cores under the current Hydra launcher (see threads_per_job): an upper bound
    for seqlab.launch.threads, which takes the cores free at the start and re-checks them."""
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
    """One line naming the jobs that did not end ok, or None if all did. Jobs a stopped sweep never started
    are counted, not listed."""
    bad = [j for j in jobs if j.status != "ok"]
    if not bad:
        return None
    listed = "; ".join(f"{j.dir.relative_to(root)}: {j.status} ({j.reason})" for j in bad if j.status != "not_started")
    waiting = sum(j.status == "not_started" for j in bad)
    counts = f", {waiting} not started" if waiting else ""
    return f"{len(bad)} of {len(jobs)} jobs did not finish ok{counts}" + (f": {listed}" if listed else "")


# --- stopping and resuming a sweep ---------------------------------------------------------------------


def stop_file() -> Path | None:
    """`<sweep dir>/.stop` in a job of a sweep (its existence means: stop), None outside a sweep."""
    return Path(str(HydraConfig.get().sweep.dir)) / STOP_FILE if in_multirun() else None


def job_plan(out_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """What a sweep job does in `out_dir`, from what an earlier launch of the same sweep left there:
    "skip" (it ended ok), "stopped" (the sweep is stopping: start nothing), "resume" (it was interrupted:
    continue from its last.ckpt) or "run". Returns the plan and the earlier metrics.json, if any."""
    try:
        previous = json.loads((Path(out_dir) / "metrics.json").read_text())
        previous = previous if isinstance(previous, dict) else None
    except (OSError, ValueError):
        previous = None
    status = (previous or {}).get("status")
    if status == "ok":
        return "skip", previous
    path = stop_file()
    if path is not None and path.exists():
        return "stopped", previous
    if status == "interrupted" and (Path(out_dir) / "checkpoints" / "last.ckpt").is_file():
        return "resume", previous
    return "run", previous


def resume_command(root: Path, argv: list[str] | None = None) -> str:
    """The launching command again, pointed at the same sweep dir: ok jobs are kept, the others go on."""
    argv = [a for a in (sys.argv if argv is None else argv) if not a.startswith("hydra.sweep.dir=")]
    return shlex.join(["python", *argv, f"hydra.sweep.dir={root}"])


# --- one HParams view of the sweep ---------------------------------------------------------------------


def write_hparams_experiment(root: Path, jobs: list[Job]) -> Path | None:
    """TensorBoard's HParams tab takes one `_hparams_/experiment` summary for the whole logdir, and one at the
    logdir's root wins over the runs' own (each run's marks no key as differing, so the tab shows the first
    few keys by name and hides the rest). This one marks the keys whose values differ across the jobs, which
    the tab shows first and by default, and names only the `hp/*` metrics."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    values: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in (job.metrics.get("hparams") or {}).items():
            values.setdefault(key, set()).add(json.dumps(value))
    if not values:
        return None
    infos = [api_pb2.HParamInfo(name=k, differs=len(v) > 1) for k, v in sorted(values.items())]
    tags = ["hp/best_val_ppl", "hp/test_ppl"]
    if any(job.metrics.get("test_ppl_stateful") is not None for job in jobs):  # recurrent jobs, scored statefully
        tags.append("hp/test_ppl_stateful")
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in tags]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment))
    summary = Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=content)])
    for old in root.glob("events.out.tfevents.*.sweep"):  # a resumed sweep rewrites it: one per logdir
        old.unlink()
    writer = EventFileWriter(str(root), filename_suffix=".sweep")
    writer.add_event(Event(summary=summary, wall_time=time.time(), step=0))
    writer.close()
    return Path(writer.get_logdir())


class SweepReport(Callback):
    """Hydra callback for a whole sweep (conf/hydra/default.yaml).

    In the launching process: names the swept keys for the job dir names, turns SIGTERM or Ctrl-C into a
    clean stop (the running jobs save their last.ckpt and record `interrupted`, the jobs still to come
    record `not_started`; a second Ctrl-C stops at once), and at the end reads every job's metrics.json from
    the sweep dir (jobs may have run in other processes or on other machines), writes the sweep's HParams
    experiment, prints one line and exits non-zero if any job did not end ok.
    In each job's process: a job stopped by a signal stops the sweep (the basic launcher runs the jobs in
    the launching process, and SLURM or Ctrl-C signal every process)."""

    def __init__(self, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        self.stopping = False
        self.root: Path | None = None
        self.launcher_pid: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.launcher_pid = os.getpid()
        self.root = Path(str(config.hydra.sweep.dir))
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / STOP_FILE).unlink(missing_ok=True)  # resuming a stopped sweep
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if isinstance(params, DictConfig) else {}
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(list(config.hydra.overrides.task), params))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        if self.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stopping = True
        assert self.root is not None
        (self.root / STOP_FILE).touch()
        print(
            f"sweep: {signal.Signals(signum).name}: stopping; running jobs save their last.ckpt and stop, "
            "the rest are recorded as not_started (Ctrl-C again: stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # a SLURM job is stopped alone (pre-emption, a time limit) and requeued: that is no stop of the sweep
        if config.hydra.mode != RunMode.MULTIRUN or os.getpid() == self.launcher_pid or job_key() is not None:
            return
        # a job's own process (joblib, submitit): a signal before or after its fit, or while it waits for
        # the next job, stops the sweep rather than killing the worker (ResumeCheckpoint handles the fit)
        stop = Path(str(config.hydra.sweep.dir)) / STOP_FILE
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.touch())
        except ValueError:  # not the main thread: leave the signals alone
            pass

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_key() is not None:  # see on_job_start
            return
        try:
            status = json.loads((Path(config.hydra.runtime.output_dir) / "metrics.json").read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return
        if status == "interrupted":
            (Path(str(config.hydra.sweep.dir)) / STOP_FILE).touch()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        root = Path(str(config.hydra.sweep.dir))
        jobs = [read_job(d) for d in find_job_dirs(root)] if root.exists() else []
        stopped = (root / STOP_FILE).exists()
        if jobs:
            write_hparams_experiment(root, jobs)
        message = summarize(jobs, root)
        if message is None:
            print(f"sweep: all {len(jobs)} jobs ok -> {root}", file=sys.stderr)
            return
        print(f"sweep: {'stopped: ' if stopped else ''}{message}", file=sys.stderr)
        if stopped or any(j.status in ("interrupted", "not_started", "missing") for j in jobs):
            print(f"sweep: resume (ok jobs are kept): {resume_command(root)}", file=sys.stderr)
        # SystemExit is not an Exception: Hydra's callback runner and error reporter let it through
        raise SystemExit(130 if stopped else self.exit_code)
