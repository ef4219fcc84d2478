"""train(cfg): check the config -> data -> model -> fit -> test -> metrics.json, whatever happens."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.saving import save_hparams_to_yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from seqlab.config import check_config
from seqlab.data import TokenDataModule
from seqlab.data.corpora import DownloadError
from seqlab.errors import ConfigError, DivergedError, Interrupted
from seqlab.launch.malloc import keep_freed_memory
from seqlab.launch.malloc import setting as malloc_setting
from seqlab.launch.openmp import settings as openmp_settings
from seqlab.launch.provenance import code_version
from seqlab.launch.slurm import job_key, restarts
from seqlab.launch.sweep import in_multirun, job_plan, launcher_share
from seqlab.launch.threads import plan_threads, read_cpu_times
from seqlab.training.callbacks.progress import quiet_lightning
from seqlab.training.callbacks.threads import DEFAULT_THREADS, FreeCoreThreads
from seqlab.training.callbacks.wall_clock import WallClockCurve
from seqlab.training.dashboard import add_dashboard
from seqlab.training.resume import AtomicCheckpointIO, resume_checkpoint, save_run_config
from seqlab.training.system import LanguageModel

log = logging.getLogger(__name__)
CANNOT_WRITE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)  # a full disk, a read-only dir


def instantiate(config: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate, except that a target refusing its arguments is a bad value: one line, not a traceback."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        raise _as_config_error(err, config.get("_target_")) from None


def _as_config_error(err: InstantiationException, target: Any) -> Exception:
    """A ConfigError, ValueError or Lightning MisconfigurationException raised by a target's __init__ -> ConfigError."""
    cause = err.__cause__
    if isinstance(cause, ConfigError):
        return cause
    if isinstance(cause, ValueError | MisconfigurationException):
        return ConfigError(f"{target}: {cause}")
    return err


def out_of_memory(err: BaseException | None) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err)  # CPU: a RuntimeError


def too_big(model: DictConfig, err: BaseException) -> ConfigError:
    """A model whose parameters the allocator refused (e.g. model.hidden_size=1000000000): one line naming its
    width. Caught where the model is built rather than estimated beforehand: the allocator knows this machine."""
    sizes = {k: v for k, v in model.items() if isinstance(v, int) and not isinstance(v, bool)}
    key = "hidden_size" if "hidden_size" in sizes else max(sizes, key=sizes.get, default=None)
    asked = re.search(r"allocate (\d+) bytes", str(err))
    refused = f"{int(asked[1]) / 2**30:,.0f} GiB for one tensor" if asked else "its memory"
    named = f"model.{key}={sizes[key]}" if key else "model"
    return ConfigError(f"{named}: the model's parameters do not fit in memory (the allocator refused {refused})")


def _choice(group: str, default: str) -> str:
    try:
        return HydraConfig.get().runtime.choices.get(group, default)
    except ValueError:  # no Hydra context (a script or a notebook)
        return default


def summary_hparams(cfg: DictConfig, n_params: int | None = None) -> dict[str, Any]:
    """The few values that tell runs apart: for the HParams tab, metrics.json and the comparison table."""
    return {
        "model": _choice("model", cfg.model._target_.rsplit(".", 1)[-1]),
        "data": cfg.data.corpus if cfg.data.corpus != "text_file" else f"text_file:{Path(cfg.data.path).name}",
        "hidden_size": cfg.model.get("hidden_size"),
        "emb_dim": cfg.model.get("emb_dim"),
        "window": cfg.model.get("window") or (cfg.data.context_length if "window" in cfg.model else None),
        "recurrent_radius": cfg.model.get("recurrent_radius"),
        "context_length": cfg.data.context_length,  # null for data=recall: the run fills it in
        "batch_size": cfg.data.batch_size,
        "stateful": cfg.data.get("stateful", False),
        "schedule": _choice("schedule", "none"),
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.get("weight_decay"),
        "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "max_steps": cfg.trainer.get("max_steps"),
        "max_time": cfg.trainer.get("max_time"),
        "seed": cfg.seed,
        "params": n_params,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)


def fit_and_test(
    cfg: DictConfig, out_dir: Path, metrics: dict[str, Any], threads: FreeCoreThreads | None = None
) -> None:
    """Everything a run does; fills `metrics` as it goes, so a failure still reports what was reached."""
    datamodule: TokenDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    resumed = resume_checkpoint(cfg, model, datamodule.vocab, datamodule.context_length)
    ckpt_path = resumed[0] if resumed else None
    # nothing above writes into the run dir: a refused resume leaves the run it names as it was
    if cfg.get("resume") is not None:
        metrics["resumed_at_step"] = resumed[1]
        save_run_config(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)  # the data draws no random numbers: the model starts as ever
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    try:
        system = LanguageModel(
            model=model,
            optim=OmegaConf.to_container(cfg.optim, resolve=True),
            vocab_size=datamodule.vocab_size,
            context_length=datamodule.context_length,  # data=recall derives it from the episode
            level=datamodule.level,
            stateful=cfg.data.get("stateful", False),
            schedule=OmegaConf.to_container(cfg.schedule, resolve=True) if cfg.get("schedule") else None,
        )
    except InstantiationException as err:  # the model refused its sizes (e.g. heads not dividing the width)
        if out_of_memory(err.__cause__):
            raise too_big(cfg.model, err.__cause__) from None
        raise _as_config_error(err, cfg.model._target_) from None
    system.vocab = datamodule.vocab
    datamodule.save_vocab(out_dir / "vocab.json")  # after the model accepted its sizes: a refused one writes nothing
    # recurrent models are also scored with the state carried through each split read as streams
    datamodule.stream_eval = system.recurrent and not datamodule.episodic
    metrics.update(
        params=system.n_params, vocab_size=datamodule.vocab_size, hparams=summary_hparams(cfg, system.n_params)
    )
    metrics["hparams"]["context_length"] = datamodule.context_length
    log.info(
        "%s on %s: %s parameters, vocab %d, %d train tokens",
        metrics["model"],
        datamodule.describe(),
        f"{system.n_params:,}",
        datamodule.vocab_size,
        len(datamodule.ids["train"]),
    )

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    callbacks += [threads] if threads is not None else []  # torch threads from the free cores (FreeCoreThreads)
    callbacks += datamodule.callbacks()  # what the source scores beyond the loss: excess_loss, recall_acc, …
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()])
    if logger:
        logger.log_metrics({"params": system.n_params}, step=0)
        add_dashboard(logger)  # the Custom Scalars tab: val/ppl, losses, the gradient's reach
        # Lightning would write an empty hparams.yaml here (the HParams summary is logged at the end)
        save_hparams_to_yaml(Path(logger.log_dir) / "hparams.yaml", metrics["hparams"])
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:  # what was trained counts even if the run died
        metrics.update(
            steps=trainer.global_step,
            train_tokens=system.train_tokens,
            train_tokens_per_s=system.train_tokens / system.train_time_s if system.train_time_s else None,
            train_s=round(system.train_time_s, 2),
        )
        curve = next((c for c in trainer.callbacks if isinstance(c, WallClockCurve)), None)
        if curve is not None:
            metrics["curve"] = curve.curve  # val loss against seconds: how far a wall-clock budget got
    if trainer.interrupted:
        raise KeyboardInterrupt
    # the best-on-val/loss one (seqlab.training.resume.ResumeCheckpoint is a Checkpoint too)
    checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_score if checkpoint is not None and checkpoint.best_model_score is not None else None
    best_val_loss = float(best) if best is not None else system.best_val_loss
    metrics.update(best_val_loss=best_val_loss, best_val_ppl=math.exp(best_val_loss))
    metrics["best_checkpoint"] = checkpoint.best_model_path if checkpoint is not None else None

    if system.recurrent and "val/loss_stateful" in trainer.callback_metrics:  # the last validation's
        metrics.update(
            {f"val_{k}_stateful": float(trainer.callback_metrics[f"val/{k}_stateful"]) for k in ("loss", "ppl")}
        )
    # one dict per test loader (chunks, and streams for recurrent models); the epoch-end metrics are in each
    tested = trainer.test(system, datamodule=datamodule, ckpt_path=metrics["best_checkpoint"] or None, verbose=False)
    test = {key: value for results in tested for key, value in results.items()}
    metrics.update(test_loss=test["test/loss"], test_ppl=test["test/ppl"])
    if "test/loss_stateful" in test:
        metrics.update(test_loss_stateful=test["test/loss_stateful"], test_ppl_stateful=test["test/ppl_stateful"])
    metrics.update(datamodule.summary(test, best_val_loss))
    if logger:
        hp_metrics = {"hp/best_val_ppl": metrics["best_val_ppl"], "hp/test_ppl": metrics["test_ppl"]}
        if "test_ppl_stateful" in metrics:
            hp_metrics["hp/test_ppl_stateful"] = metrics["test_ppl_stateful"]
        if in_multirun():  # one HParams experiment for the whole sweep: seqlab.launch.sweep.write_hparams_experiment
            log_hparams_session(logger, metrics["hparams"], hp_metrics)
        else:
            logger.log_hyperparams(metrics["hparams"], hp_metrics)
        logger.finalize("success")  # flush and close: nothing writes into the run dir after it ends


def log_hparams_session(logger: Any, hparams: dict[str, Any], hp_metrics: dict[str, float]) -> None:
    """A run's row in the HParams tab without an experiment summary of its own: TensorBoard shows the first
    experiment summary it finds, and a job's would hide the sweep's (which marks the keys that differ)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    plain = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()}
    _, session_start, session_end = hparams_summaries(plain, hp_metrics)
    logger.log_metrics(hp_metrics, step=0)  # (re)opens the event file the fit's end closed
    for summary in (session_start, session_end):
        logger.experiment.file_writer.add_summary(summary)
    logger.experiment.flush()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and write its metrics.json. A single run exits non-zero on failure; in a sweep the job
    records its status and returns, so the other jobs go on (the sweep's exit code is set at its end)."""
    started, load_at_start = time.perf_counter(), round(os.getloadavg()[0], 2)
    code = code_version()  # read at the start: a commit made while the run trains is not the code it ran
    cpu_at_start = read_cpu_times()  # where the window the thread count is chosen from begins
    threads: FreeCoreThreads | None = None
    quiet_lightning()
    keep_freed_memory()  # no page faults for the same activations every step (seqlab/launch/malloc.py)
    if logging.getLogger().hasHandlers():  # Hydra's handlers print and file everything; Lightning's would repeat it
        logging.getLogger("lightning").handlers.clear()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = cfg.get("resume")
    resumes_here = resume is not None and Path(str(resume)).expanduser().resolve() == out_dir.resolve()
    metrics: dict[str, Any] = {
        "model": _choice("model", str(cfg.model.get("_target_", "?")).rsplit(".", 1)[-1]),
        "status": "running",
    }
    for key in (
        "params",
        "best_val_loss",
        "best_val_ppl",
        "test_loss",
        "test_ppl",
        "train_tokens",
        "train_tokens_per_s",
    ):
        metrics[key] = None
    exit_code, message = 0, None
    # a relaunched sweep keeps its ok jobs and continues its interrupted ones (a requeued SLURM job continues
    # itself: seqlab.launch.slurm.requeued_run)
    if in_multirun() and restarts() == 0:
        plan, previous = job_plan(out_dir)
        if plan == "skip" or (plan == "stopped" and previous):
            log.info("kept as it was (%s): %s", previous["status"], out_dir)
            return previous
        if plan == "stopped":
            metrics.update(status="not_started", reason="the sweep was stopped before this job started")
            write_json(out_dir / "metrics.json", metrics)
            return metrics
        if plan == "resume":
            with open_dict(cfg):
                cfg.ckpt_path = str(out_dir / "checkpoints" / "last.ckpt")
    try:
        check_config(cfg)  # every value, before anything is built
        threads = FreeCoreThreads(plan_threads(cfg.get("threads"), launcher_share(), DEFAULT_THREADS), cpu_at_start)
        torch.set_num_threads(threads.threads)  # before any torch work: parallel jobs do not each take every core
        fit_and_test(cfg, out_dir, metrics, threads)
        metrics["status"] = "ok"
    except ConfigError as err:
        metrics.update(status="bad_config", reason=str(err))
        exit_code, message = 2, f"error: {err}"
    except DivergedError as err:
        clip = cfg.trainer.get("gradient_clip_val")
        fix = "trainer.gradient_clip_val=1.0" if not clip else f"a smaller trainer.gradient_clip_val (now {clip})"
        reason = f"{err}: exploding gradients or too large a step; try a lower optim.lr (now {cfg.optim.lr}) or {fix}"
        metrics.update(status="diverged", reason=reason)
        exit_code, message = 3, f"diverged: {reason}"
    except (Interrupted, KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into sys.exit(1)
        why = str(err) if isinstance(err, Interrupted) else "stopped by Ctrl-C or a signal"
        reason = f"{why}; resume with the same command plus resume={out_dir}"
        if in_multirun():
            reason = f"{why}; resume by launching the sweep again (its last line says how)"
        metrics.update(status="interrupted", reason=reason)
        exit_code, message = 130, f"interrupted: {reason}"
    except DownloadError as err:
        metrics.update(status="failed", reason=str(err))
        exit_code, message = 1, f"failed: {err}"
    except Exception as err:
        if isinstance(err, OSError) and err.errno in CANNOT_WRITE:  # the path and the reason say it all
            trained = metrics.get("steps")
            reason = f"cannot write {err.filename or out_dir}: {err.strerror} " + (
                f"at step {trained}" if trained else "before training"
            )
            metrics.update(status="failed" if trained else "bad_config", reason=reason)
            exit_code, message = (1, f"failed: {reason}") if trained else (2, f"error: {reason}")
        else:
            if resumes_here and "resumed_at_step" not in metrics:
                traceback.print_exc()  # not into the train.log of the run this resume was refused
            else:
                log.exception("run failed")
            metrics.update(status="failed", reason=f"{type(err).__name__}: {err}")
            exit_code, message = 1, f"failed: {type(err).__name__}: {err}"
    metrics["threads"] = threads.threads_at_start if threads is not None else torch.get_num_threads()
    # what decides speed on a shared machine (seqlab.launch.threads, docs/speed.md)
    metrics["openmp"] = {**openmp_settings(), "load_avg_at_start": load_at_start}
    metrics["openmp"].update(threads.summary() if threads is not None else {})  # the choice, why, and its changes
    metrics["malloc"] = malloc_setting()
    metrics["code"] = code  # the commit this run ran, for its results page (seqlab.report)
    metrics["wall_s"] = round(time.perf_counter() - started, 3)
    try:
        if not resumes_here or "resumed_at_step" in metrics:  # a refused resume leaves the run it names as it was
            write_json(out_dir / "metrics.json", metrics)
    except OSError as err:  # the disk filled up: the console keeps what the run reached
        reached = {k: metrics.get(k) for k in ("status", "steps", "best_val_ppl", "test_ppl")}
        note = f"cannot write {out_dir / 'metrics.json'}: {err.strerror}; it would say {reached}"
        message, exit_code = (f"{message}; and {note}" if message else f"failed: {note}"), exit_code or 1
    if message:
        print(message, file=sys.stderr)
        # an interrupted SLURM job is being requeued or pre-empted: end the process, so that a sweep's
        # launcher (submitit) records no result for this start and waits for the next one
        if not in_multirun() or (metrics["status"] == "interrupted" and job_key()):
            sys.exit(exit_code)
    else:
        log.info("done: best val ppl %.3f, test ppl %.3f -> %s", metrics["best_val_ppl"], metrics["test_ppl"], out_dir)
    return metrics
