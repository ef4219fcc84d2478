"""train(cfg): check the config -> data -> model -> fit -> test -> metrics.json, whatever happens."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from seqlab.data import TextDataModule
from seqlab.errors import ConfigError, DivergedError, Interrupted
from seqlab.resume import AtomicCheckpointIO, resume_checkpoint
from seqlab.schedule import check_schedule
from seqlab.sweep import in_multirun, threads_from_config
from seqlab.system import LanguageModel

log = logging.getLogger(__name__)


def instantiate(config: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate, except that a ConfigError raised by the target stays one (Hydra wraps it)."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def check_config(cfg: DictConfig) -> None:
    """Reject impossible values before anything is built; each message names the key and the value."""
    for key, value in cfg.model.items():
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ConfigError(f"model.{key}={value}: must be a positive integer")
    window, context_length = cfg.model.get("window"), cfg.data.context_length
    if window is not None and context_length is not None and window > context_length:
        raise ConfigError(f"model.window={window}: larger than data.context_length={context_length}")
    if cfg.optim.lr is None or cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr={cfg.optim.lr}: must be positive")
    if cfg.optim.get("weight_decay", 0) < 0:
        raise ConfigError(f"optim.weight_decay={cfg.optim.weight_decay}: must be non-negative")
    clip = cfg.trainer.get("gradient_clip_val")
    if clip is not None and clip <= 0:
        raise ConfigError(f"trainer.gradient_clip_val={clip}: must be positive, or null for no clipping")
    max_steps = cfg.trainer.get("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        raise ConfigError(f"trainer.max_steps={max_steps}: must be positive (or -1 to train by epochs)")
    check_schedule(cfg)


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
        "context_length": cfg.data.context_length,
        "batch_size": cfg.data.batch_size,
        "stateful": cfg.data.get("stateful", False),
        "schedule": _choice("schedule", "none"),
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.get("weight_decay"),
        "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "max_steps": cfg.trainer.get("max_steps"),
        "seed": cfg.seed,
        "params": n_params,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def fit_and_test(cfg: DictConfig, out_dir: Path, metrics: dict[str, Any]) -> None:
    """Everything a run does; fills `metrics` as it goes, so a failure still reports what was reached."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    datamodule: TextDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.save_vocab(out_dir / "vocab.json")
    try:
        system = LanguageModel(
            model=OmegaConf.to_container(cfg.model, resolve=True),
            optim=OmegaConf.to_container(cfg.optim, resolve=True),
            vocab_size=datamodule.vocab_size,
            context_length=cfg.data.context_length,
            level=datamodule.level,
            stateful=cfg.data.get("stateful", False),
            schedule=OmegaConf.to_container(cfg.schedule, resolve=True) if cfg.get("schedule") else None,
        )
    except InstantiationException as err:  # a model's own check (e.g. model.tie_weights) stays a ConfigError
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise
    system.vocab = datamodule.vocab
    datamodule.stream_eval = system.recurrent  # recurrent models are also scored with the state carried
    metrics.update(
        params=system.n_params, vocab_size=datamodule.vocab_size, hparams=summary_hparams(cfg, system.n_params)
    )
    log.info(
        "%s on %s: %s parameters, vocab %d, %d train tokens",
        metrics["model"],
        datamodule.describe(),
        f"{system.n_params:,}",
        datamodule.vocab_size,
        len(datamodule.ids["train"]),
    )

    ckpt_path = resume_checkpoint(cfg, system)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()])
    if logger:
        logger.log_metrics({"params": system.n_params}, step=0)
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:  # what was trained counts even if the run died
        metrics.update(
            steps=trainer.global_step,
            train_tokens=system.train_tokens,
            train_tokens_per_s=system.train_tokens / system.train_time_s if system.train_time_s else None,
        )
    if trainer.interrupted:
        raise KeyboardInterrupt
    # the best-on-val/loss one (seqlab.resume.ResumeCheckpoint is a Checkpoint too)
    checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_score if checkpoint is not None and checkpoint.best_model_score is not None else None
    best_val_loss = float(best) if best is not None else system.best_val_loss
    metrics.update(best_val_loss=best_val_loss, best_val_ppl=math.exp(best_val_loss))
    metrics["best_checkpoint"] = checkpoint.best_model_path if checkpoint is not None else None

    if system.recurrent:  # the stateful val metrics of the last validation
        metrics.update(
            {f"val_{k}_stateful": float(trainer.callback_metrics[f"val/{k}_stateful"]) for k in ("loss", "ppl")}
        )
    # one dict per test loader (chunks, streams); the epoch-end metrics are in each
    test = {
        key: value
        for results in trainer.test(system, datamodule=datamodule, ckpt_path=metrics["best_checkpoint"] or None)
        for key, value in results.items()
    }
    metrics.update(test_loss=test["test/loss"], test_ppl=test["test/ppl"])
    if system.recurrent:
        metrics.update(test_loss_stateful=test["test/loss_stateful"], test_ppl_stateful=test["test/ppl_stateful"])
    if logger:
        hp = {"hp/best_val_ppl": metrics["best_val_ppl"], "hp/test_ppl": metrics["test_ppl"]}
        if system.recurrent:
            hp["hp/test_ppl_stateful"] = metrics["test_ppl_stateful"]
        logger.log_hyperparams(metrics["hparams"], hp)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and write its metrics.json. A single run exits non-zero on failure; in a sweep the job
    records its status and returns, so the other jobs go on (the sweep's exit code is set at its end)."""
    started = time.perf_counter()
    if logging.getLogger().hasHandlers():  # Hydra's handlers print and file everything; Lightning's would repeat it
        logging.getLogger("lightning").handlers.clear()
    threads = threads_from_config(cfg)
    if threads is not None:  # before any torch work, so parallel jobs do not each take every core
        torch.set_num_threads(threads)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    try:
        fit_and_test(cfg, out_dir, metrics)
        metrics["status"] = "ok"
    except ConfigError as err:
        metrics.update(status="bad_config", reason=str(err))
        exit_code, message = 2, f"error: {err}"
    except DivergedError as err:
        clip = cfg.trainer.get("gradient_clip_val")
        fix = "trainer.gradient_clip_val=1.0" if clip is None else f"a smaller trainer.gradient_clip_val (now {clip})"
        reason = f"{err}: exploding gradients or too large a step; try a lower optim.lr (now {cfg.optim.lr}) or {fix}"
        metrics.update(status="diverged", reason=reason)
        exit_code, message = 3, f"diverged: {reason}"
    except (Interrupted, KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into sys.exit(1)
        why = str(err) if isinstance(err, Interrupted) else "stopped by Ctrl-C or a signal"
        reason = f"{why}; resume with the same command plus resume={out_dir}"
        metrics.update(status="interrupted", reason=reason)
        exit_code, message = 130, f"interrupted: {reason}"
    except Exception as err:
        log.exception("run failed")
        metrics.update(status="failed", reason=f"{type(err).__name__}: {err}")
        exit_code, message = 1, f"failed: {type(err).__name__}: {err}"
    metrics["threads"] = torch.get_num_threads()
    metrics["wall_s"] = round(time.perf_counter() - started, 3)
    write_json(out_dir / "metrics.json", metrics)
    if message:
        print(message, file=sys.stderr)
        if not in_multirun():
            sys.exit(exit_code)
    else:
        log.info("done: best val ppl %.3f, test ppl %.3f -> %s", metrics["best_val_ppl"], metrics["test_ppl"], out_dir)
    return metrics
