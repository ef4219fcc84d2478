"""Tune a model's hyperparameters with Optuna: python -m seqlab.tune STUDY_DIR [options] [train overrides]

    python -m seqlab.tune outputs/tune/rnn --trials 20 --workers 2 \\
        --param optim.lr=1e-4:3e-2:log --param optim.weight_decay=0:0.1 --param model.hidden_size=128,256 \\
        model=rnn trainer.max_steps=500 trainer.val_check_interval=100

Every trial is an ordinary seqlab run in STUDY_DIR/<trial>_<params>/ (metrics.json, TensorBoard, checkpoints),
so `python -m seqlab.compare STUDY_DIR` reads a study like a sweep. The study lives in STUDY_DIR/journal.log,
Optuna's journal file storage (a lock file, not a database: safe on the shared filesystem of a cluster), which
any number of workers share: `--workers N` runs N local processes, `--slurm` N SLURM jobs (submitit). A trial
whose val/loss is worse than the median of earlier trials at the same step is stopped there (status
`pruned`). Run the same command again to continue a killed study: a trial that was running when its worker
died is run again in its own dir, from its last.ckpt. Needs `pip install -e ".[tune]"`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from seqlab.errors import ConfigError
from seqlab.launch.slurm import job_key, quiet_sacct
from seqlab.paths import CONF

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# --- the search space ------------------------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, dict[str, Any]]:
    """`optim.lr=1e-4:3e-2:log` (a float range, log scale), `optim.weight_decay=0:0.1`, `model.hidden_size=64,128`
    (a choice), `model.hidden_size=32:256:int` (an int range)."""
    key, sep, spec = text.partition("=")
    if not sep or not key or not spec:
        raise argparse.ArgumentTypeError(f"--param {text}: expected KEY=LOW:HIGH[:log][:int] or KEY=A,B,...")
    if ":" not in spec:
        return key, {"choices": [_number(v) for v in spec.split(",")]}
    low, high, *flags = spec.split(":")
    if set(flags) - {"log", "int"}:
        raise argparse.ArgumentTypeError(f"--param {text}: unknown flag in {flags} (log, int)")
    try:
        low_value, high_value = float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {text}: LOW and HIGH must be numbers") from None
    if not low_value < high_value or ("log" in flags and low_value <= 0):
        raise argparse.ArgumentTypeError(f"--param {text}: need LOW < HIGH (and LOW > 0 on a log scale)")
    return key, {"low": low_value, "high": high_value, "log": "log" in flags, "int": "int" in flags}


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    if spec["int"]:
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=spec["log"])
    return trial.suggest_float(key, spec["low"], spec["high"], log=spec["log"])


# --- one trial = one seqlab run ---------------------------------------------------------------------------


def median_pruner(startup_trials: int, warmup_steps: int) -> optuna.pruners.BasePruner:
    """Stop a trial whose val/loss is above the median of the earlier trials' at the same step."""
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)


def open_storage(journal: Path) -> JournalStorage:
    # an O_EXCL lock file: works where flock does not (NFS), which is what Optuna recommends for clusters
    return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))


def trial_dirname(number: int, params: dict[str, Any]) -> str:
    values = ",".join(f"{k.rsplit('.', 1)[-1]}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in params.items())
    return f"{number:03d}_{values}".replace("/", "_")[:200]


def trial_overrides(args: argparse.Namespace, params: dict[str, Any]) -> list[str]:
    overrides = [*args.overrides, *(f"{k}={v}" for k, v in params.items())]
    if not any(o.startswith("threads=") for o in args.overrides):
        overrides.append(
            f"threads={max((os.cpu_count() or 1) // args.workers, 1)}" if not args.slurm else "threads=null"
        )
    return overrides


def trial_config(args: argparse.Namespace, overrides: list[str], run_dir: Path) -> Any:
    """The config `train.py <overrides>` would run, as one job of the study, writing into run_dir."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(args.config_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir = str(run_dir)
        cfg.hydra.mode = RunMode.MULTIRUN  # a job among others: train() reports a failure instead of exiting
    HydraConfig().set_config(cfg)
    return cfg


def check_study(args: argparse.Namespace) -> None:
    """The trials' config, checked before the study (its dir, its journal) exists: a misspelled key in --param
    or in an override, or a value out of range at either end of a --param, is one line now rather than a
    traceback per worker once the first trial starts. Data (a file's contents) is still checked by each run."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from seqlab.config import check_config

    def end(spec: dict[str, Any], i: int) -> Any:
        if "choices" in spec:
            return spec["choices"][i]
        value = spec["low"] if i == 0 else spec["high"]
        return int(value) if spec["int"] else value

    for i in (0, -1):  # the trial of every --param's low end (first choice), then its high end (last choice)
        overrides = trial_overrides(args, {key: end(spec, i) for key, spec in args.space.items()})
        try:
            check_config(trial_config(args, overrides, args.study_dir / "check"))  # composes; writes nothing
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(composition_problem(str(err))) from None


def composition_problem(text: str) -> str:
    """Hydra's message for an override it cannot apply, in one line."""
    key = re.match(r"Could not override '([^']+)'", text)
    if key:
        return f"{key[1]}: no such setting in the config (misspelled? a new key is written +{key[1]}=...)"
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines() if line.strip()]
    if len(lines) > 2 and lines[1].startswith("Available options"):
        return f"{lines[0]}; {lines[1].rstrip(':')}: {', '.join(lines[2:])}"
    return lines[0] if lines else text


def run_trial(trial: optuna.Trial, args: argparse.Namespace) -> float:
    from omegaconf import open_dict

    from seqlab.training.run import train

    params = {key: suggest(trial, key, spec) for key, spec in args.space.items()}
    # a trial run again after its worker died keeps the dir (and the checkpoint) of the first try
    run_dir = Path(trial.user_attrs.get("run_dir") or args.study_dir / trial_dirname(trial.number, params))
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", worker_id())
    overrides = trial_overrides(args, params)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        overrides.append(f"ckpt_path='{last}'")  # quoted: trial dirs hold '=' and ','
    cfg = trial_config(args, overrides, run_dir)
    with open_dict(cfg):
        cfg.callbacks.prune = {
            "_target_": "seqlab.training.callbacks.prune.PruneOnValLoss",
            "journal": str(args.journal),
            "study_name": args.study_name,
            "trial_number": trial.number,
            "startup_trials": args.startup_trials,
            "warmup_steps": args.warmup_steps,
        }
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    log.info("trial %d: %s -> %s", trial.number, " ".join(overrides), run_dir)
    metrics = train(cfg)

    if metrics["status"] == "interrupted":  # a signal stopped this worker: the trial stays `running`, for a retry
        raise SystemExit(130)
    if metrics["status"] == "bad_config":  # every trial would fail the same way
        raise SystemExit(2)  # train() printed the one line already
    if metrics["status"] == "diverged":
        return math.inf  # a real (bad) result for the sampler, not a failure
    if metrics["status"] != "ok":
        raise RuntimeError(f"trial {trial.number}: {metrics['status']}: {metrics.get('reason')}")
    if metrics["steps"] < cfg.trainer.max_steps:  # PruneOnValLoss stopped it
        metrics.update(status="pruned", reason=f"pruned at step {metrics['steps']}: val/loss above the median")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        raise optuna.TrialPruned(metrics["reason"])
    return metrics["best_val_loss"]


# --- workers ----------------------------------------------------------------------------------------------


def worker_id() -> str:
    return job_key() or f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str) -> bool:
    """Whether the worker that holds a running trial still runs (a SLURM job in the queue, or a live local pid)."""
    if worker.startswith("slurm-"):
        job = worker.removeprefix("slurm-")
        if job == (job_key() or "").removeprefix("slurm-"):
            return False  # that is this job, requeued: its earlier start is gone
        answer = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
        return answer.returncode == 0 and answer.stdout.strip() not in ("", "COMPLETED", "FAILED", "CANCELLED")
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell from here: leave it
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        pass
    return True


def retry_orphans(study: optuna.Study) -> None:
    """A trial left `running` by a dead worker: mark it failed and queue its parameters again, with its run
    dir, so the retry continues from its last.ckpt and the study ends with each trial's dir recorded once."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or worker_alive(worker):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        attrs = {"run_dir": trial.user_attrs["run_dir"], "retry_of": trial.number}
        study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
        log.warning(
            "trial %d: its worker %s is gone; queued again (continues in %s)", trial.number, worker, attrs["run_dir"]
        )


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def load_study(args: argparse.Namespace, worker: int = 0) -> optuna.Study:
    study = optuna.create_study(
        study_name=args.study_name,
        storage=open_storage(args.journal),
        direction="minimize",  # best val loss
        pruner=median_pruner(args.startup_trials, args.warmup_steps),
        load_if_exists=True,
    )
    # each worker, and each continuation of a study, draws its own random stream: one seed for all of them
    # would hand workers started together (or a restarted study) the same "random" startup trials
    seed = None if args.seed is None else args.seed + 1000 * worker + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.startup_trials)
    return study


def work(args: argparse.Namespace, worker: int = 0) -> None:
    """One worker: take trials until the study has `--trials` finished ones."""
    study = load_study(args, worker)
    if job_key():  # a requeued SLURM worker finds its own earlier trial
        retry_orphans(study)
    while finished(study) < args.trials:
        study.optimize(lambda trial: run_trial(trial, args), n_trials=1, catch=(RuntimeError,))


def run_workers(args: argparse.Namespace, argv: Sequence[str]) -> None:
    if args.slurm:
        import submitit

        quiet_sacct()
        executor = submitit.AutoExecutor(folder=args.study_dir / ".submitit" / "%j", cluster="slurm")
        executor.update_parameters(
            slurm_partition=args.slurm_partition,
            cpus_per_task=args.slurm_cpus,
            mem_gb=args.slurm_mem_gb,
            timeout_min=args.slurm_time_min,
            slurm_additional_parameters={"requeue": True},
        )
        jobs = [executor.submit(work, args, i) for i in range(args.workers)]
        log.info("%d SLURM workers: %s", len(jobs), " ".join(j.job_id for j in jobs))
        for job in jobs:
            job.result()
        return
    if args.workers == 1:
        work(args)
        return
    cmd = [sys.executable, "-m", "seqlab.launch.tune", *argv, "--worker"]
    procs = [subprocess.Popen([*cmd, str(i)]) for i in range(args.workers)]
    try:
        for proc in procs:
            proc.wait()
    finally:  # Ctrl-C or SIGTERM here stops the workers too; their trials are retried on the next start
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait()


def report(study: optuna.Study, top: int = 5) -> str:
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    lines = [f"study {study.study_name}: {len(done)} complete, {pruned} pruned; best by val loss:"]
    for t in done[:top]:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(
            f"  trial {t.number:3d}  val ppl {math.exp(min(t.value, 700)):8.3f}  {params}  {t.user_attrs['run_dir']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m seqlab.tune", description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="the study's dir: journal.log and one run dir per trial")
    parser.add_argument("overrides", nargs="*", help="train.py overrides every trial shares, e.g. model=rnn")
    parser.add_argument("--param", action="append", type=parse_param, default=[], metavar="KEY=SPEC")
    parser.add_argument("--trials", type=int, default=20, help="finished (complete or pruned) trials to reach")
    parser.add_argument("--workers", type=int, default=1, help="trials at once (processes, or SLURM jobs)")
    parser.add_argument("--startup-trials", type=int, default=4, help="random trials before TPE and pruning")
    parser.add_argument("--warmup-steps", type=int, default=0, help="no pruning before this training step")
    parser.add_argument("--seed", type=int, default=None, help="the sampler's seed")
    parser.add_argument("--study-name", default=None, help="default: the study dir's name")
    parser.add_argument("--config-dir", type=Path, default=CONF)
    parser.add_argument("--slurm", action="store_true", help="run the workers as SLURM jobs (submitit)")
    parser.add_argument("--slurm-partition", default=None)
    parser.add_argument("--slurm-cpus", type=int, default=1)
    parser.add_argument("--slurm-mem-gb", type=int, default=4)
    parser.add_argument("--slurm-time-min", type=int, default=60)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # --workers' process i
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides
    args.space = dict(args.param) or {"optim.lr": parse_param("optim.lr=1e-4:3e-2:log")[1]}
    args.study_dir = args.study_dir.resolve()
    args.journal = args.study_dir / "journal.log"
    args.study_name = args.study_name or args.study_dir.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    if args.worker is not None:  # --workers' process i: its parent checked the config
        work(args, args.worker)
        return 0
    try:
        if args.study_dir.exists() and not args.study_dir.is_dir():
            raise ConfigError(f"{args.study_dir}: is a file, not a study dir")
        check_study(args)
        args.study_dir.mkdir(parents=True, exist_ok=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a parent that is a file, a read-only dir
        print(f"error: cannot make {args.study_dir}: {err.strerror}", file=sys.stderr)
        return 2
    study = load_study(args)
    retry_orphans(study)
    if finished(study) < args.trials:
        run_workers(args, argv)
    print(report(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
