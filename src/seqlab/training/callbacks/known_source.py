"""For data with a known optimum (seqlab.data.synthetic): how far the model is from the best possible loss.

Logs `{split}/optimal_loss`, `{split}/optimal_ppl`, `{split}/excess_loss` (= loss − optimal_loss, nats/token)
after every validation and test; `{split}/source_loss` and `{split}/excess_over_source` where the data can score
its own split (markov: the true chain's loss on the same tokens, which takes the split's sampling noise out of
the excess); and `{split}/recall_acc` where the data names the positions whose token is determined by the past
(`answer_positions`). The run adds the same to metrics.json (see `summary`).
It writes to the loggers in `on_{split}_end`: callbacks' epoch-end hooks run before the system's, which is
where `{split}/loss` is computed.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch


def has_known_optimum(datamodule: Any) -> bool:
    return callable(getattr(datamodule, "optimal_loss", None))


class KnownSource(L.Callback):
    """Added by the run for every datamodule with `optimal_loss(split)`; nothing to configure."""

    def __init__(self) -> None:
        super().__init__()
        self.correct, self.total = 0, 0
        self.latest: dict[str, float] = {}  # the last values logged, e.g. {"test/recall_acc": 0.93}

    def _answers(self, trainer: L.Trainer) -> torch.Tensor | None:
        return getattr(trainer.datamodule, "answer_positions", None)

    def _count(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        positions = self._answers(trainer)
        if positions is None:
            return
        x, y = batch
        # a second forward pass over the batch (the system keeps no logits): val costs 2× on recall data only
        predicted = pl_module.model(x)[:, positions].argmax(-1)  # (B, n_answers)
        self.correct += int((predicted == y[:, positions]).sum())
        self.total += y[:, positions].numel()

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        loss = trainer.callback_metrics.get(f"{split}/loss")
        if loss is None:
            return
        optimal = trainer.datamodule.optimal_loss(split)
        values = {
            f"{split}/optimal_loss": optimal,
            f"{split}/optimal_ppl": math.exp(optimal),
            f"{split}/excess_loss": float(loss) - optimal,
        }
        if callable(getattr(trainer.datamodule, "source_loss", None)):  # markov: the source on the same tokens
            source = trainer.datamodule.source_loss(split)
            values |= {f"{split}/source_loss": source, f"{split}/excess_over_source": float(loss) - source}
        if self.total:
            values[f"{split}/recall_acc"] = self.correct / self.total
        self.correct, self.total = 0, 0
        self.latest.update(values)
        if trainer.is_global_zero and not trainer.sanity_checking:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(trainer, pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(trainer, pl_module, batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


def summary(datamodule: Any, test_loss: float, best_val_loss: float, callback: KnownSource) -> dict[str, Any]:
    """metrics.json entries: the optimum, the test loss's excess over it, and what else the source knows."""
    optimal = datamodule.optimal_loss("test")
    out = {
        "optimal_loss": optimal,
        "optimal_ppl": math.exp(optimal),
        "excess_loss": test_loss - optimal,
        "best_val_excess_loss": best_val_loss - datamodule.optimal_loss("val"),
    }
    if callable(getattr(datamodule, "source_loss", None)):
        source = datamodule.source_loss("test")
        out |= {"source_loss": source, "source_ppl": math.exp(source), "excess_over_source": test_loss - source}
    if "test/recall_acc" in callback.latest:
        out["recall_acc"] = callback.latest["test/recall_acc"]
    out.update(datamodule.known_optimum())
    return out
