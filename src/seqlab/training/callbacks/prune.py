"""The Optuna trial's pruning callback; seqlab.launch.tune adds it to each trial's config."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import optuna

from seqlab.launch.tune import median_pruner, open_storage


class PruneOnValLoss(L.Callback):
    """Reports val/loss to the trial at every validation (step = training step) and stops training when the
    pruner says so. Optuna-integration's PyTorchLightningPruningCallback reports per epoch; seqlab validates
    every N steps, several times an epoch. Built from the storage, so the trainer's config can name it."""

    def __init__(
        self, journal: str, study_name: str, trial_number: int, startup_trials: int, warmup_steps: int
    ) -> None:
        storage, pruner = open_storage(Path(journal)), median_pruner(startup_trials, warmup_steps)
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        # a trial's id from its number through the storage's own methods (Trial has no public id)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), trial_number
        )
        self.trial = optuna.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or trainer.state.fn != "fit" or loss is None:
            return
        self.trial.report(float(loss), step=trainer.global_step)
        if self.trial.should_prune():
            trainer.should_stop = True
