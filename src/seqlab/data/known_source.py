"""For sources whose best possible loss is known (seqlab.data.synthetic): how far the model is from it.

Logs `{split}/optimal_loss`, `{split}/optimal_ppl`, `{split}/excess_loss` (= loss − optimal_loss, nats/token)
after every validation and test; `{split}/source_loss` and `{split}/excess_over_source` where the source can
score its own split (markov: the true chain's loss on the same tokens, which takes the split's sampling noise out
of the excess); and `{split}/recall_acc` where the source declares `answer_positions` (the tokens the past
determines). The run adds the same to metrics.json (`summary`).

recall_acc is counted from the system's own logits, which its validation_step and test_step return as the batch's
`outputs` (no second forward pass), in a torchmetrics metric: `compute()` sums the counts over DDP ranks, so
`trainer=ddp` reports the whole split's accuracy. It is logged with `pl_module.log` at the epoch's end, so it is
also in `trainer.test`'s results. The rest derive from `{split}/loss`, which the system computes in its own
epoch-end hook, after the callbacks' (Lightning's order): they go to the loggers in `on_{split}_end`. That loss
is synced over ranks already, and the optimum is a constant of the source.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import lightning as L
from torchmetrics import MeanMetric

if TYPE_CHECKING:
    from seqlab.data.base import TokenDataModule


class KnownSource(L.Callback):
    """Contributed to a run by every source with a known optimum (`TokenDataModule.callbacks`)."""

    def __init__(self, source: TokenDataModule) -> None:
        super().__init__()
        self.source = source
        self.recall_acc = MeanMetric()  # mean of 0/1 over every answer: correct / answers, summed over ranks

    def _count(self, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        positions = self.source.answer_positions
        if positions is None or dataloader_idx != 0:  # loader 1 (streams) has no episodes
            return
        _, y = batch
        predicted = outputs["logits"][:, positions].argmax(-1)  # (B, T, V) -> (B, n_answers)
        correct = (predicted == y[:, positions]).float()  # (B, n_answers)
        self.recall_acc.to(correct.device).update(correct)

    def _log_recall(self, pl_module: L.LightningModule, split: str) -> None:
        if self.recall_acc.update_called:
            pl_module.log(f"{split}/recall_acc", self.recall_acc.compute())  # already summed over ranks
            self.recall_acc.reset()

    def _log(self, trainer: L.Trainer, split: str) -> None:
        loss = trainer.callback_metrics.get(f"{split}/loss")
        if loss is None or trainer.sanity_checking:
            return
        optimal = self.source.optimal_loss(split)
        values = {
            f"{split}/optimal_loss": optimal,
            f"{split}/optimal_ppl": math.exp(optimal),
            f"{split}/excess_loss": float(loss) - optimal,
        }
        source = self.source.source_loss(split)
        if source is not None:
            values |= {f"{split}/source_loss": source, f"{split}/excess_over_source": float(loss) - source}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(outputs, batch, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(outputs, batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_recall(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_recall(pl_module, "test")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, "test")


def summary(source: TokenDataModule, test: dict[str, float], best_val_loss: float) -> dict[str, Any]:
    """metrics.json entries: the optimum, the test loss's excess over it, and what else the source knows."""
    test_loss, optimal = test["test/loss"], source.optimal_loss("test")
    out = {
        "optimal_loss": optimal,
        "optimal_ppl": math.exp(optimal),
        "excess_loss": test_loss - optimal,
        "best_val_excess_loss": best_val_loss - source.optimal_loss("val"),
    }
    own = source.source_loss("test")
    if own is not None:
        out |= {"source_loss": own, "source_ppl": math.exp(own), "excess_over_source": test_loss - own}
    if "test/recall_acc" in test:
        out["recall_acc"] = test["test/recall_acc"]
    out.update(source.known_optimum() or {})
    return out
