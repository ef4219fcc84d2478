"""Surviving a kill: atomic checkpoint files, a `last.ckpt` every few steps and on SIGTERM, and resuming.

`python train.py <same overrides> resume=<run dir>` continues that run in its own dir from
`checkpoints/last.ckpt` (a job that SLURM requeued does so by itself: seqlab.slurm). The weights, the
optimizer, Lightning's loop counters, the best-checkpoint score, the train loader's position
(`TrainBatches.state_dict`) and the run's counters all travel in the checkpoint, so the resumed run ends
with the same numbers as one that was never stopped.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _load as load_checkpoint_file
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from seqlab.errors import ConfigError, Interrupted
from seqlab.slurm import requeued_run, submitit_requeue
from seqlab.sweep import in_multirun

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
    """Owns `last.ckpt`: saves it every `every_n_steps` steps, after every validation, and on SIGTERM or Ctrl-C.

    A save after a step that is about to validate waits for the validation's end, so a resumed run never
    skips a validation the unbroken run did. Subclassing `Checkpoint` makes Lightning run this after the
    best-on-val/loss `ModelCheckpoint`, so the saved state includes the best score of that validation.
    SIGTERM (what SLURM sends before pre-emption) or a first Ctrl-C only sets a flag: the step in flight
    finishes, the checkpoint is saved at the next save point, and the run stops with status `interrupted`.
    A second Ctrl-C stops at once. In a submitit job, submitit's requeue signal (USR2) does the same and then
    hands over to submitit, which requeues the job.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"callbacks.resume.every_n_steps={every_n_steps}: must be a positive integer")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.stop_requested, self.signum = False, None
        self.requeue: tuple[int, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
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
        epoch_loop = trainer.fit_loop.epoch_loop
        if not epoch_loop._should_check_val_epoch():
            return False
        # LanguageModel stops at max_steps in its own on_train_batch_end, which runs after this hook
        budget_spent = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        return budget_spent or epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        if self.stop_requested:
            if self.requeue is not None and self.signum == self.requeue[0]:
                self.requeue[1](self.signum, None)  # submitit: `scontrol requeue`, then exits
            raise Interrupted(f"stopped by a signal at step {trainer.global_step}; saved {self.path}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        due = self.stop_requested or trainer.global_step % self.every_n_steps == 0
        if due and not self._will_validate(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)


def resume_checkpoint(cfg: DictConfig, system: L.LightningModule) -> str | None:
    """The checkpoint this run continues from (`resume=<run dir>` or `ckpt_path=<file>`), checked against
    the run's model and data, so a mismatch is one line before any training rather than a state_dict dump."""
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume and ckpt_path:
        raise ConfigError(f"resume={resume} and ckpt_path={ckpt_path}: give one of them")
    requeued = None if resume or ckpt_path else requeued_run(Path(cfg.paths.output_dir))  # seqlab.slurm
    if not resume and not ckpt_path and not requeued:
        return None
    resume = resume or requeued
    if resume and in_multirun() and not requeued:  # every job would load the same checkpoint
        raise ConfigError(
            f"resume={resume}: resume one job at a time, without -m (its overrides plus resume=<its dir>)"
        )
    path = Path(ckpt_path) if ckpt_path else Path(resume) / "checkpoints" / "last.ckpt"
    key = "ckpt_path" if ckpt_path else "resume"
    if not path.is_file():
        raise ConfigError(f"{key}: no checkpoint at {path}")
    try:
        checkpoint = load_checkpoint_file(path, map_location="cpu")
        saved = checkpoint["hyper_parameters"]
    except Exception as err:
        raise ConfigError(
            f"{key}: {path} is not a seqlab checkpoint (loading it raised {type(err).__name__})"
        ) from None
    there, here = saved.get("model") or {}, system.hparams["model"]
    if there.get("_target_") != here["_target_"]:
        raise ConfigError(f"{key}: {path} holds a {there.get('_target_')}, this run builds a {here['_target_']}")
    for name in sorted({*there, *here} - {"_target_"}):
        if there.get(name) != here.get(name):
            raise ConfigError(f"{key}: {path} has model.{name}={there.get(name)}, this run {here.get(name)}")
    for name in ("vocab_size", "context_length"):
        if saved.get(name) != system.hparams[name]:
            raise ConfigError(f"{key}: {path} has {name}={saved.get(name)}, this run {system.hparams[name]}")
    vocab = (checkpoint.get("vocab") or {}).get("tokens")
    if vocab is not None and system.vocab is not None and vocab != system.vocab.tokens:
        raise ConfigError(f"{key}: {path} was trained on other text (its vocabulary differs from this run's)")
    return str(path)
