"""Learning-rate schedules (conf/schedule/): torch.optim.lr_scheduler objects that the system hands to Lightning.

A schedule config holds `scheduler` (a Hydra target called with the optimizer; `warmup_cosine` also gets the
run's total steps) and Lightning's `interval` ("step" or "epoch"), `frequency` and, for plateau, `monitor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: float,
    warmup_steps: int = 100,
    floor: float = 0.1,
    budget_spent: Callable[[], float] | None = None,
) -> LambdaLR:
    """Linear warmup from 0 over `warmup_steps`, then half a cosine down to `floor` × lr at `total_steps`.
    Under a wall-clock budget (trainer.max_time, no step count) `budget_spent()`, the share of the budget used
    (0..1), stands in for the share of the steps: the cosine ends with the time, whatever this machine's speed
    (so the schedule, and the run, differ from machine to machine)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if budget_spent is not None:
            progress = min(budget_spent(), 1.0)
        else:
            progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def decay_after(optimizer: Optimizer, constant_epochs: int = 4, gamma: float = 0.5) -> LambdaLR:
    """lr for `constant_epochs` epochs, then × gamma every epoch (Zaremba et al. 2014: 4 epochs, then ×0.5)."""
    return LambdaLR(optimizer, lambda epoch: gamma ** max(0, epoch + 1 - constant_epochs))
