"""Learning-rate schedules (conf/schedule/): the lr a real Trainer uses at every step or epoch, against formulas."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, compose_config
from helpers import STATEFUL_V as V
from helpers import TINY
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from seqlab.config import check_config
from seqlab.errors import ConfigError
from seqlab.training.system import LanguageModel

LR = 0.5


class RecordLR(L.Callback):
    def __init__(self) -> None:
        self.by_step: list[float] = []
        self.by_epoch: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.by_epoch.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.by_step.append(trainer.optimizers[0].param_groups[0]["lr"])


def schedule(name: str, **scheduler: object) -> dict:
    cfg = OmegaConf.load(ROOT / "conf" / "schedule" / f"{name}.yaml")
    cfg = cfg.get("schedule", cfg)  # plateau.yaml is a _global_ package
    cfg.scheduler.update(scheduler)
    return OmegaConf.to_container(cfg)


def batches(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(V, (4, 6), generator=g), torch.randint(V, (4, 6), generator=g)) for _ in range(n)]
    return DataLoader(data, batch_size=None)  # (not a list: Lightning reads a list as several loaders)


def fit(schedule_cfg: dict, lr: float = LR, val: list | None = None, **trainer_kwargs: object) -> RecordLR:
    torch.manual_seed(0)
    system = LanguageModel(TINY, {"_target_": "torch.optim.SGD", "lr": lr}, V, context_length=6, schedule=schedule_cfg)
    record = RecordLR()
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(system, train_dataloaders=batches(3), val_dataloaders=val)
    return record


def test_step_decay_is_zarembas():
    """lr kept `constant_epochs` epochs, then halved at every epoch: the TF tutorial's 0.5 ** max(i + 1 - 4, 0)."""
    record = fit(schedule("step_decay"), max_epochs=8)
    assert record.by_epoch == pytest.approx([LR * 0.5 ** max(i + 1 - 4, 0) for i in range(8)], rel=1e-12)
    assert record.by_step[:12] == [LR] * 12 and record.by_step[12] == LR / 2  # changes at epoch ends only


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    record = fit(schedule("cosine", warmup_steps=4, floor=0.1), max_steps=20)
    expected = [LR * (s + 1) / 4 for s in range(4)]
    expected += [LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 16))) for s in range(4, 20)]
    assert record.by_step == pytest.approx(expected, rel=1e-12)
    assert record.by_step[4] == pytest.approx(LR) and min(record.by_step[4:]) > 0.1 * LR


def test_cosine_under_a_time_budget_follows_the_clock():
    """trainer.max_time with no step count: the cosine runs on the share of the budget spent and ends at the floor."""
    record = fit(schedule("cosine", warmup_steps=2, floor=0.1), max_steps=-1, max_time={"seconds": 1})
    lrs = record.by_step
    assert len(lrs) > 20 and lrs[:2] == pytest.approx([LR / 2, LR], rel=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))  # falls with the clock, never rises
    assert 0.1 * LR <= lrs[-1] < 0.2 * LR  # near the floor as the budget runs out (a loaded machine: a slow last step)


def test_plateau_divides_the_lr_when_val_loss_stops_improving():
    # an lr so small that val/loss moves by less than ReduceLROnPlateau's threshold: no epoch improves on the first
    record = fit(schedule("plateau", eps=0.0), lr=1e-9, val=batches(2), max_epochs=4)  # eps: its smallest lr change
    assert record.by_epoch == pytest.approx([1e-9, 1e-9, 1e-9 / 4, 1e-9 / 16], rel=1e-12)


def test_default_is_no_schedule_and_plateau_validates_at_epoch_ends(tmp_path: Path):
    assert compose_config([], tmp_path).schedule.scheduler is None  # `python train.py` keeps a constant lr
    cfg = compose_config(["schedule=plateau"], tmp_path)
    assert cfg.trainer.check_val_every_n_epoch == 1 and cfg.trainer.val_check_interval is None
    check_config(cfg)
    with pytest.raises(ConfigError, match=r"schedule=plateau steps at epoch ends on val/loss"):
        check_config(
            compose_config(
                ["schedule=plateau", "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=100"], tmp_path
            )
        )
    with pytest.raises(ConfigError, match=r"schedule.scheduler.floor=2: must be a number in \[0, 1\]"):
        check_config(compose_config(["schedule=cosine", "schedule.scheduler.floor=2"], tmp_path))
    with pytest.raises(ConfigError, match=r"schedule=cosine: its length comes from trainer.max_steps"):
        check_config(compose_config(["schedule=cosine", "trainer.max_steps=-1"], tmp_path))
