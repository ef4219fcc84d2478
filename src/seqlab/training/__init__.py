"""The training layer: the LightningModule, its callbacks, the lr schedules, sampling, checkpoints and `train(cfg)`."""
