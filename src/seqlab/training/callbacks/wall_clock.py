"""Val loss against seconds of training: what a wall-clock budget (`trainer.max_time`) is judged by."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class WallClockCurve(L.Callback):
    """At every validation: `{"s", "train_s", "step", "val_loss"}` into `self.curve` (the run puts it in
    metrics.json) and `val/loss_vs_s` into TensorBoard with the whole seconds as its step (so the Scalars tab's
    "step" axis reads seconds). `s` counts wall-clock seconds since training began, validations included, as
    `trainer.max_time` does; `train_s` only the training steps. A resumed run continues the clock."""

    def __init__(self) -> None:
        self.curve: list[dict[str, Any]] = []
        self._offset_s, self._started = 0.0, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def seconds(self) -> float:
        return self._offset_s + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's on_validation_epoch_end has logged val/loss (callbacks' epoch-end hooks run before it)
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or self._started is None:
            return
        s = self.seconds()
        point = {"s": round(s, 2), "train_s": round(getattr(pl_module, "train_time_s", 0.0), 2)}
        point.update(step=trainer.global_step, val_loss=float(loss))
        self.curve.append(point)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"val/loss_vs_s": float(loss)}, step=int(s))

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "offset_s": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve, self._offset_s = list(state_dict["curve"]), float(state_dict["offset_s"])
