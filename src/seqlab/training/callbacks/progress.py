"""The console: a progress bar that counts the step budget, and silence for Lightning's known noise."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class BudgetProgressBar(TQDMProgressBar):
    """Counts steps of the `trainer.max_steps` budget (`1250/2000`) across epochs, where Lightning's bar counts
    the batches of each epoch (`x/241`, epoch after epoch) and so says nothing of how far the run has got.
    Without a step budget (`max_steps=-1`) it is Lightning's bar."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.max_steps <= 0:
            return super().on_train_epoch_start(trainer, *args)
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:  # the first epoch of this fit (a resumed run starts part-way)
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step
        bar.set_description("steps")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.max_steps <= 0:
            return super().on_train_batch_end(trainer, pl_module, *args)
        bar, step = self.train_progress_bar, trainer.global_step
        if not bar.disable and (step % self.refresh_rate == 0 or step >= trainer.max_steps):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # also redraws the bar


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_lightning() -> None:
    """Drop the lines Lightning prints on every run that say nothing about this one; all else stays."""
    noise = _DropMessages("💡 Tip: For seamless cloud", "GPU available: False", "TPU available: False")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(noise)
    # a hint for SLURM users, printed on any machine where `srun` exists
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")
    # Lightning's own use of a torch API that torch deprecated; nothing a user can change
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
