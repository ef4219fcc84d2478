"""Surviving a kill: atomic checkpoint files, a `last.ckpt` every few steps and on SIGTERM, and resuming.

`python train.py <same overrides> resume=<run dir>` continues that run in its own dir from
`checkpoints/last.ckpt` (a job that SLURM requeued does so by itself: seqlab.launch.slurm). The weights, the
optimizer, Lightning's loop counters, the best-checkpoint score, the train loader's position
(`TrainBatches.state_dict`) and the run's counters all travel in the checkpoint, so the resumed run ends
with the same numbers as one that was never stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.cloud_io import _load as load_checkpoint_file
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from seqlab.data import Vocab
from seqlab.errors import ConfigError, Interrupted
from seqlab.launch.rundir import resume_problem
from seqlab.launch.slurm import requeued_run, submitit_requeue
from seqlab.launch.sweep import in_multirun, stop_file

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temp file beside the target, fsync, then rename: a kill mid-save leaves the old file whole.

    (Lightning's own save renames from the system temp dir, which is a copy, not a rename, when /tmp is
    another filesystem.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec path
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class ResumeCheckpoint(Checkpoint):
    """Owns `last.ckpt`: saves it once `every_n_seconds` of training or `every_n_steps` steps have passed since the
    last save (whichever comes first; null turns either off), after every validation, and on SIGTERM or Ctrl-C.

    Time rather than steps by default: what a SIGKILL may cost is wall clock, and seqlab's steps range from
    1 ms (the unigram) to 200 ms, so a fixed step count either saves a 16 MB PTB checkpoint many times a
    minute or leaves minutes unsaved. Every rank takes rank 0's decision (saving is collective in DDP).

    A save after a step that is about to validate waits for the validation's end, so a resumed run never
    skips a validation the unbroken run did. Subclassing `Checkpoint` makes Lightning run this after the
    best-on-val/loss `ModelCheckpoint`, so the saved state includes the best score of that validation.
    SIGTERM (what SLURM sends before pre-emption) or a first Ctrl-C only sets a flag: the step in flight
    finishes, the checkpoint is saved at the next save point, and the run stops with status `interrupted`.
    A second Ctrl-C stops at once. In a submitit job, submitit's requeue signal (USR2) does the same and then
    hands over to submitit, which requeues the job.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None, every_n_seconds: float | None = 60.0) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps, self.every_n_seconds = every_n_steps, every_n_seconds
        self.last_save = time.monotonic()
        self.stop_requested, self.signum = False, None
        self.requeue: tuple[int, Any] | None = None
        self.sweep_stop = stop_file()  # a sweep's launcher asks its jobs to stop through this file

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # runs before the callbacks load their state: ModelCheckpoint then finds its files in this run's dir
        for callback in trainer.checkpoint_callbacks:
            state = checkpoint.get("callbacks", {}).get(getattr(callback, "state_key", None))
            if isinstance(callback, ModelCheckpoint) and callback.dirpath and state:
                relocate(state, callback.dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last_save = time.monotonic()
        # replaces Lightning's handlers for the fit (its SIGTERM one would abort a validation half-way, its
        # Ctrl-C one saves nothing); Lightning puts the original handlers back when the fit ends
        if trainer.world_size == 1:
            signal.signal(signal.SIGTERM, self._request_stop)
            signal.signal(signal.SIGINT, self._request_stop)
            # a SLURM sweep job (submitit): its requeue signal saves first, then submitit requeues the job
            self.requeue = submitit_requeue()
            if self.requeue is not None:
                signal.signal(self.requeue[0], self._request_stop)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.requeue is not None:  # after the fit (e.g. while testing) submitit requeues as usual
            signal.signal(*self.requeue)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s: saving %s after this step, then stopping", signal.Signals(signum).name, self.path)
        self.stop_requested, self.signum = True, signum

    def _will_validate(self, trainer: L.Trainer) -> bool:
        every = trainer.check_val_every_n_epoch  # Lightning's test of the epoch, from public attributes
        if not trainer.enable_validation or (every is not None and (trainer.current_epoch + 1) % every):
            return False
        # LanguageModel stops at max_steps in its own on_train_batch_end, which runs after this hook
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return True
        # Lightning has no public "does this batch end in a validation?" (val_check_interval, the last batch,
        # early stopping): ask its loop's own test, the one the loop acts on next
        data_fetcher = trainer.fit_loop._data_fetcher  # private: the argument of that test
        return trainer.fit_loop.epoch_loop._should_check_val_fx(data_fetcher)  # private: no public equivalent

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state; also keeps Lightning quiet
        self.last_save = time.monotonic()
        if self.stop_requested:
            if self.requeue is not None and self.signum == self.requeue[0]:
                self.requeue[1](self.signum, None)  # submitit: `scontrol requeue`, then exits
            raise Interrupted(f"stopped by a signal at step {trainer.global_step}; saved {self.path}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.sweep_stop is not None and not self.stop_requested and self.sweep_stop.exists():
            log.warning("the sweep is stopping: saving %s after this step, then stopping", self.path)
            self.stop_requested = True
        due = self.stop_requested or self._interval_passed(trainer.global_step)
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)
        if due and not self._will_validate(trainer):
            self._save(trainer)

    def _interval_passed(self, step: int) -> bool:
        if self.every_n_steps is not None and step % self.every_n_steps == 0:
            return True
        return self.every_n_seconds is not None and time.monotonic() - self.last_save >= self.every_n_seconds

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)


def resume_checkpoint(
    cfg: DictConfig, model: dict[str, Any], vocab: Vocab, context_length: int
) -> tuple[str, int] | None:
    """The checkpoint this run continues from (`resume=<run dir>` or `ckpt_path=<file>`) and its step, checked
    against the run's model and data before anything is built or written, so a mismatch is one line (and a
    refused resume leaves its run dir as it was) rather than a state_dict dump."""
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")  # not both: seqlab.config.check_config
    requeued = None if resume is not None or ckpt_path is not None else requeued_run(Path(cfg.paths.output_dir))
    if resume is None and ckpt_path is None and requeued is None:
        return None
    resume = str(requeued) if requeued is not None else resume  # seqlab.launch.slurm: a requeued job continues itself
    if resume is not None and in_multirun() and requeued is None:  # every job would load the same checkpoint
        raise ConfigError(
            f"resume={resume}: resume one job at a time, without -m (its overrides plus resume=<its dir>)"
        )
    if resume is not None and resume_problem(resume):
        raise ConfigError(resume_problem(resume))
    if ckpt_path is not None and not (isinstance(ckpt_path, str) and ckpt_path.strip()):
        raise ConfigError(
            f"ckpt_path={ckpt_path}: give a checkpoint file, e.g. ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    path = Path(ckpt_path) if ckpt_path is not None else Path(resume) / "checkpoints" / "last.ckpt"
    key = "ckpt_path" if ckpt_path is not None else "resume"
    # when last.ckpt is gone or broken, the run's best checkpoint (written by another save) may still be whole
    best = sorted(path.parent.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime) if key == "resume" else []
    fallback = f"; {best[-1]} is there: continue from it in a new run with ckpt_path={best[-1]}" if best else ""
    if not path.is_file():
        raise ConfigError(f"{key}: no checkpoint at {path}{fallback}")
    try:
        checkpoint = load_checkpoint_file(path, map_location="cpu")
        saved, step = checkpoint["hyper_parameters"], int(checkpoint["global_step"])
    except Exception as err:
        raise ConfigError(
            f"{key}: {path} is not a seqlab checkpoint (loading it raised {type(err).__name__}){fallback}"
        ) from None
    there = saved.get("model") or {}
    if there.get("_target_") != model["_target_"]:
        raise ConfigError(f"{key}: {path} holds a {there.get('_target_')}, this run builds a {model['_target_']}")
    for name in sorted({*there, *model} - {"_target_"}):
        if there.get(name) != model.get(name):
            raise ConfigError(f"{key}: {path} has model.{name}={there.get(name)}, this run {model.get(name)}")
    for name, here in (("vocab_size", len(vocab)), ("context_length", context_length)):
        if saved.get(name) != here:
            raise ConfigError(f"{key}: {path} has {name}={saved.get(name)}, this run {here}")
    tokens = (checkpoint.get("vocab") or {}).get("tokens")
    if tokens is not None and tokens != vocab.tokens:
        raise ConfigError(f"{key}: {path} was trained on other text (its vocabulary differs from this run's)")
    return str(path), step


def relocate(state: dict[str, Any], dirpath: str) -> None:
    """ModelCheckpoint's state names its files by absolute path. Find them in `dirpath` (this run's checkpoint
    dir) instead, so a run dir that was moved or copied resumes from its own files. If its best file is not
    there (a new run started with ckpt_path= from another run), leave the state to Lightning, which then
    tracks the best afresh, and drop the other run's best path, so a run only ever tests its own files."""

    def here(path: str | None) -> str:
        return str(Path(dirpath) / Path(path).name) if path else ""

    if not state.get("best_model_path") or not Path(here(state["best_model_path"])).is_file():
        state["best_model_path"] = ""
        return
    state["best_k_models"] = {here(p): score for p, score in state.get("best_k_models", {}).items()}
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        state[key] = here(state.get(key))
    state["dirpath"] = dirpath


def save_run_config(cfg: DictConfig, out_dir: Path) -> None:
    """What Hydra writes into .hydra/ at the start of a job; a resume writes it once its checkpoint is accepted
    (seqlab.launch.rundir.RunDir holds Hydra's copy back)."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # no Hydra context (a script or a notebook): nothing to save
        return
    hydra_dir = out_dir / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)}), hydra_dir / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, hydra_dir / "overrides.yaml")
