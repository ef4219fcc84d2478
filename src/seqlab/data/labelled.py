"""Rows that carry their own targets: inputs (N, T) and targets (N, T), IGNORE wherever nothing is scored. The
recall tasks need them: an answer is scored, the random tokens around it are not (Mamba's induction heads,
Zoology's MQAR, whose answers are not even the next input). Groups of different lengths (MQAR's mixture of
sizes) are batched apart: every batch comes from one group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from seqlab.data.batches import _rank_and_world


class LabelledBatches:
    """Batches of (inputs, targets) rows from one or more groups of equal-length rows.

    With `shuffle` (train), each epoch shuffles the rows within each group and then the order of the batches
    across groups, from (seed, epoch), dropping each group's last partial batch; the position is a `state_dict`
    (as for TrainBatches), so a resumed run continues the sequence. Without (val, test), every row once, in
    order. Under DDP each rank takes every world-th batch. Rows may be stored narrow (int16): a batch is widened.
    """

    def __init__(
        self, groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        self.groups, self.batch_size, self.shuffle, self.seed = list(groups), batch_size, shuffle, seed
        self.epoch, self.batch = 0, 0

    def _plan(self, epoch: int) -> list[tuple[int, torch.Tensor]]:
        """Every batch of an epoch as (group, row indices)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        plan = []
        for i, (x, _) in enumerate(self.groups):
            n = len(x)
            rows = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            stop = n - n % self.batch_size if self.shuffle and n >= self.batch_size else n
            plan += [(i, rows[s : s + self.batch_size]) for s in range(0, stop, self.batch_size)]
        if self.shuffle:
            plan = [plan[j] for j in torch.randperm(len(plan), generator=g)]
        rank, world = _rank_and_world()
        return plan[rank::world]

    def __len__(self) -> int:
        return len(self._plan(0))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = state["epoch"], state["batch"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first = (self.epoch, self.batch) if self.shuffle else (0, 0)
        plan = self._plan(epoch)
        for b in range(first, len(plan)):
            if self.shuffle:  # advanced before the yield: a checkpoint taken after this batch resumes at the next
                self.epoch, self.batch = (epoch, b + 1) if b + 1 < len(plan) else (epoch + 1, 0)
            group, rows = plan[b]
            x, y = self.groups[group]
            yield x[rows].long(), y[rows].long()  # (B, T), (B, T)
