"""A callback that sleeps after every training step, so a test can kill a run at a step of its choosing."""

import time

import lightning as L


class SlowSteps(L.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: object) -> None:
        time.sleep(self.seconds)
