"""LanguageModel: the one LightningModule that trains every seqlab model (Lightning's "system vs model")."""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Timer
from torchmetrics import MeanMetric

from seqlab.data import IGNORE, Vocab
from seqlab.errors import ConfigError, DivergedError
from seqlab.training.callbacks.training_health import clips_by_norm

State = tuple[torch.Tensor, ...]

log = logging.getLogger(__name__)


def scored_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean cross-entropy over the targets that are not IGNORE, and their number. A batch with none to score
    (a stretch of filler in a recall source) has loss 0, not NaN, which would read as divergence."""
    n_tokens = (y != IGNORE).sum()
    total = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
    return total / n_tokens.clamp(min=1), n_tokens


class LanguageModel(L.LightningModule):
    """Next-token cross-entropy over every position; perplexity = exp(mean token loss over a whole split).

    `model`, `optim` and `schedule` are plain config dicts (with `_target_`), so hparams stay plain values and
    `LanguageModel.load_from_checkpoint(path)` rebuilds the model with nothing else to hand.

    Recurrent models (`model.recurrent`) also get a stateful evaluation: on the split read as
    streams (dataloader_idx 1), the state carried across the whole split, logged as `val/ppl_stateful`.
    `stateful=True` trains that way too: the state is carried from batch to batch and detached (truncated
    BPTT; Lightning 2 dropped `truncated_bptt_steps`), and starts from zeros at every epoch.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        vocab_size: int,
        context_length: int,
        level: str = "char",
        stateful: bool = False,
        schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run logs a summary with metrics (HParams tab)
        self.model = instantiate(model, vocab_size=vocab_size, context_length=context_length)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.recurrent = self.model.recurrent
        if stateful and not self.recurrent:
            raise ConfigError(
                f"data.stateful=true: {type(self.model).__name__} carries no state between batches; use a recurrent model"
            )
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()  # token-weighted: exact split means
        self.val_loss_stateful, self.test_loss_stateful = MeanMetric(), MeanMetric()
        self.train_state: State | None = None  # carried between train batches (stateful=True); in checkpoints
        self.eval_state: State | None = None  # carried across a split's stream batches
        self.best_val_loss = math.inf
        self.vocab: Vocab | None = None  # set by the run; travels inside checkpoints
        self.train_tokens, self.train_time_s = 0, 0.0
        # pre-clipping gradient norms of the last step: {parameter name: norm} and the global norm
        self.grad_norms: dict[str, torch.Tensor] = {}
        self.grad_norm: torch.Tensor | None = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mean token loss, the number of scored tokens, and the logits (B, T, V)."""
        x, y = batch  # (B, T), (B, T)
        logits = self.model(x)  # (B, T, V)
        return *scored_loss(logits, y), logits

    def _stream_loss(
        self, batch: tuple[torch.Tensor, torch.Tensor], state: State | None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """The mean loss of a stream batch from `state` (None: zeros), its number of scored tokens, and the state
        after it, detached."""
        x, y = batch  # (B, T), (B, T): row b continues row b of the previous batch
        if state is not None:
            state = tuple(s.to(x.device) for s in state)  # a no-op but after loading a checkpoint
        logits, state = self.model.forward_with_state(x, state)  # (B, T, V)
        return *scored_loss(logits, y), tuple(s.detach() for s in state)  # gradients stop here: truncated BPTT

    # --- training -------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.stateful:
            # batch_idx counts within the epoch and survives a resume, so 0 means a new pass over the streams
            loss, _, self.train_state = self._stream_loss(batch, None if batch_idx == 0 else self.train_state)
        else:
            loss, _, _ = self._loss(batch)
        # NaN, inf, or so large (> 88) that exp(loss), the perplexity, overflows: Adam at lr=1000 ends there
        if self._check_now() and not torch.isfinite(loss.detach().exp()):
            raise DivergedError(f"loss is {loss.item():.4g} at step {self.global_step}")
        self.train_tokens += batch[1].numel()  # train chunks have no padding; .numel() needs no device sync
        # self.log costs ~3 ms; log only on the steps the logger writes anyway
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.train_time_s += time.perf_counter() - self._step_started
        # stopping here makes Lightning validate once more, so even a short budget reports val metrics
        if self.trainer.max_steps > 0 and self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # runs before clipping: these are the raw norms. Computed once here; TrainingHealth logs them.
        if not self._norms_needed():
            self.grad_norms, self.grad_norm = {}, None
            return
        named = [(name, p.grad) for name, p in self.named_parameters() if p.grad is not None]
        # private: one fused pass for every tensor's norm; torch's public get_total_norm returns only the total
        norms = torch._foreach_norm([g for _, g in named])  # private: see above
        self.grad_norms = dict(zip([n for n, _ in named], norms, strict=True))
        norm = torch.linalg.vector_norm(torch.stack(list(self.grad_norms.values())))
        self.grad_norm = norm
        if self._check_now() and not torch.isfinite(norm):
            raise DivergedError(f"gradient norm is {norm.item()} at step {self.global_step}")

    def _norms_needed(self) -> bool:
        """Whether this step needs the gradient norms. They are a pass over every gradient (millions of entries for
        PTB's 10k-word embedding and head), so only where they are read: every step when clipping by
        norm (TrainingHealth counts the clipped steps), else on the logger's steps, and outside a Trainer."""
        trainer = self._trainer
        if trainer is None:
            return True
        return clips_by_norm(trainer) or (self.global_step + 1) % trainer.log_every_n_steps == 0

    def _check_now(self) -> bool:
        """Whether to test for divergence this step. Reading a value back from a GPU waits for its queue to
        drain (a sync that cost ~2 ms a step on an H100), so there only on the logger's steps and the last
        one; a NaN or inf in the loss or the gradients reaches the weights and stays, so it is caught there.
        On the CPU a check costs nothing: every step."""
        step = self.global_step + 1
        return (
            self.device.type == "cpu"
            or step % self.trainer.log_every_n_steps == 0
            or 0 < self.trainer.max_steps <= step
        )

    # --- evaluation -----------------------------------------------------------------------------------
    def _eval_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int, chunks: MeanMetric, streams: MeanMetric
    ) -> dict[str, torch.Tensor] | None:
        if dataloader_idx == 0:  # chunks, each from a zero state
            loss, n_tokens, logits = self._loss(batch)
            chunks.update(loss, n_tokens)
            # the batch's `outputs` for callbacks' on_*_batch_end (a source's recall_acc): no second forward pass
            return {"logits": logits}
        # the split as streams: the state carried from the split's first batch to its last
        loss, n_tokens, self.eval_state = self._stream_loss(batch, None if batch_idx == 0 else self.eval_state)
        streams.update(loss, n_tokens)
        return None

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor] | None:
        return self._eval_step(batch, batch_idx, dataloader_idx, self.val_loss, self.val_loss_stateful)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor] | None:
        return self._eval_step(batch, batch_idx, dataloader_idx, self.test_loss, self.test_loss_stateful)

    def _log_split(self, split: str, metric: MeanMetric, suffix: str = "") -> dict[str, float]:
        loss = metric.compute()
        metric.reset()
        values = {f"{split}/loss{suffix}": loss, f"{split}/ppl{suffix}": loss.exp()}
        self.log_dict(values, prog_bar=split == "val")
        if self.hparams.level == "char":
            values[f"{split}/bpc{suffix}"] = loss / math.log(2)
            self.log(f"{split}/bpc{suffix}", values[f"{split}/bpc{suffix}"])
        return {k: float(v) for k, v in values.items()}

    def _log_splits(self, split: str, chunks: MeanMetric, streams: MeanMetric) -> dict[str, float]:
        # streams: only when the datamodule gave the stream loader (recurrent models)
        stateful = self._log_split(split, streams, "_stateful") if streams.update_called else {}
        return {**self._log_split(split, chunks), **stateful}

    def on_validation_epoch_end(self) -> None:
        values = self._log_splits("val", self.val_loss, self.val_loss_stateful)
        loss = values["val/loss"]
        if not math.isfinite(values["val/ppl"]):
            raise DivergedError(f"validation loss is {loss:.4g} at step {self.global_step}")
        if not self.trainer.sanity_checking:
            self.best_val_loss = min(self.best_val_loss, loss)
            self.log("val/ppl_best", math.exp(self.best_val_loss))
            # the bar shows these in passing; the log (train.log) keeps every validation
            log.info(
                "step %d: val/loss %.4f, val/ppl %.3f (best %.3f)",
                self.global_step,
                loss,
                values["val/ppl"],
                math.exp(self.best_val_loss),
            )

    def on_test_epoch_end(self) -> None:
        values = self._log_splits("test", self.test_loss, self.test_loss_stateful)
        # the run calls trainer.test(verbose=False): this table, in the log too, replaces Lightning's printed one
        log.info("test:\n" + "\n".join(f"  {k:<16} {v:.4f}" for k, v in values.items()))

    # --- optimisation and checkpoints -----------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        # decay matrices only: decaying biases and the unigram's logits would pull them towards uniform
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        make_optimizer = instantiate(self.hparams.optim, _partial_=True)  # plain call: Hydra would wrap the groups
        optimizer = make_optimizer([g for g in groups if g["params"]])
        schedule = dict(self.hparams.schedule or {})
        if not schedule.get("scheduler"):
            return optimizer
        extra = {}
        if schedule["scheduler"]["_target_"].endswith("warmup_cosine"):
            extra["total_steps"] = self.trainer.estimated_stepping_batches  # max_steps, or epochs × batches
            timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
            if math.isinf(extra["total_steps"]) and timer is not None:  # only a wall-clock budget: run by the clock
                extra["budget_spent"] = partial(budget_spent, timer)
        scheduler = instantiate(schedule.pop("scheduler"), optimizer=optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **schedule}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocab"] = self.vocab.state_dict() if self.vocab else None
        checkpoint["seqlab"] = {
            "best_val_loss": self.best_val_loss,
            "train_tokens": self.train_tokens,
            "train_time_s": self.train_time_s,
            "train_state": self.train_state,  # a resumed stateful run continues its streams where they were
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("vocab")  # a mismatch with the run's data is caught earlier, by resume_checkpoint
        if saved is not None:
            self.vocab = Vocab.from_state_dict(saved)
        for key, value in checkpoint.get("seqlab", {}).items():
            setattr(self, key, value)


def budget_spent(timer: Timer) -> float:
    """Share of trainer.max_time spent in training (Lightning's Timer; restored with the run on resume)."""
    elapsed = timer.time_elapsed("train")
    return elapsed / max(elapsed + timer.time_remaining("train"), 1e-9)
