"""The batch iterables every token source uses: random train chunks, consecutive eval chunks, streams, episodes.

Each shards itself by rank (Lightning's DistributedSampler wraps only DataLoaders), and the train iterables keep
their position as a `state_dict`, which Lightning stores in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist

IGNORE = -100  # target id that the loss and the metrics skip (padding of the last eval chunk)


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


class TrainBatches:
    """Random chunks of `context_length + 1` tokens, gathered a whole batch at a time.

    Each epoch starts the chunk grid at a random phase and visits the chunks in a random order, both drawn
    from (seed, epoch), so two runs with the same seed see the same batches. The position (epoch, next batch)
    is a `state_dict` that Lightning keeps in every checkpoint, so a resumed run continues the same sequence.
    """

    def __init__(self, ids: torch.Tensor, context_length: int, batch_size: int, seed: int) -> None:
        self.ids, self.chunk, self.batch_size, self.seed = ids, context_length + 1, batch_size, seed
        full = len(ids) // self.chunk
        self.n_chunks = full - 1 if full >= 2 else full  # one chunk kept spare, so the phase can move
        self.epoch, self.batch = 0, 0  # where the next __iter__ starts
        self.offsets = torch.arange(self.chunk)

    def _batches(self) -> range:
        """This rank's batch numbers within an epoch."""
        rank, world = _rank_and_world()
        return range(rank, max(self.n_chunks // self.batch_size, 1), world)

    def __len__(self) -> int:
        return len(self._batches())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = state["epoch"], state["batch"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first = self.epoch, self.batch
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        spare = len(self.ids) - self.n_chunks * self.chunk
        phase = int(torch.randint(min(spare, self.chunk - 1) + 1, (1,), generator=g))
        starts = phase + torch.randperm(self.n_chunks, generator=g) * self.chunk
        mine = self._batches()
        for i in range(first, len(mine)):
            # advanced before the yield: a checkpoint taken after this batch resumes with the next one
            self.epoch, self.batch = (epoch, i + 1) if i + 1 < len(mine) else (epoch + 1, 0)
            b = mine[i]
            rows = self.ids[starts[b * self.batch_size : (b + 1) * self.batch_size, None] + self.offsets]
            yield rows[:, :-1], rows[:, 1:]  # (B, T) inputs, (B, T) targets


class EvalBatches:
    """Consecutive non-overlapping chunks covering a split, so every token after the first is scored once.

    The last chunk is padded; its padded targets are IGNORE.
    """

    def __init__(self, ids: torch.Tensor, context_length: int, batch_size: int) -> None:
        n_targets = len(ids) - 1
        n_chunks = -(-n_targets // context_length)
        pad = n_chunks * context_length - n_targets
        x = torch.cat([ids[:-1], torch.zeros(pad, dtype=torch.long)])
        y = torch.cat([ids[1:], torch.full((pad,), IGNORE, dtype=torch.long)])
        self.x, self.y = x.view(n_chunks, context_length), y.view(n_chunks, context_length)
        self.batch_size = batch_size

    def _batches(self) -> range:
        rank, world = _rank_and_world()
        return range(rank * self.batch_size, len(self.x), world * self.batch_size)

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in self._batches():
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]


class StreamBatches:
    """The split as `batch_size` contiguous streams, read `context_length` tokens at a time (word_language_model's
    batchify): row b of every batch continues row b of the one before, so a state carried from batch to batch
    has seen the whole stream. The last batch of a pass may be shorter; every token but a stream's first is a
    target exactly once. The position (pass, next batch) is a `state_dict`, as for `TrainBatches`.
    """

    def __init__(self, ids: torch.Tensor, context_length: int, batch_size: int) -> None:
        n_streams = min(batch_size, len(ids) // (context_length + 1))  # each stream at least one full chunk
        length = len(ids) // n_streams  # the last len(ids) % n_streams tokens are dropped, as batchify does
        rank, world = _rank_and_world()
        self.streams = ids[: n_streams * length].view(n_streams, length)[rank::world]  # (B, L): this rank's rows
        self.context_length = context_length
        self.epoch, self.batch = 0, 0  # where the next __iter__ starts

    def __len__(self) -> int:
        return -(-(self.streams.shape[1] - 1) // self.context_length)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = state["epoch"], state["batch"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first, n = self.epoch, self.batch, len(self)
        for i in range(first, n):
            # advanced before the yield: a checkpoint taken after this batch resumes with the next one
            self.epoch, self.batch = (epoch, i + 1) if i + 1 < n else (epoch + 1, 0)
            rows = self.streams[:, i * self.context_length : (i + 1) * self.context_length + 1]
            yield rows[:, :-1], rows[:, 1:]  # (B, T) inputs, (B, T) targets; T shorter in the last batch


class EpisodeBatches:
    """Whole episodes, one a row: x = episode[:-1], y = episode[1:]. Shuffled per epoch from (seed, epoch) when
    `shuffle`; `state_dict` keeps the position, as TrainBatches does, so a resumed run continues the sequence.
    Under DDP each rank takes every world-th batch, so a split is scored once across the ranks."""

    def __init__(self, episodes: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.episodes, self.batch_size, self.shuffle, self.seed = episodes, batch_size, shuffle, seed
        self.epoch, self.batch = 0, 0

    def _batches(self) -> range:
        """This rank's batch numbers within an epoch."""
        n = len(self.episodes)
        n_batches = max(n // self.batch_size, 1) if self.shuffle else -(-n // self.batch_size)
        rank, world = _rank_and_world()
        return range(rank, n_batches, world)

    def __len__(self) -> int:
        return len(self._batches())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = state["epoch"], state["batch"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first = (self.epoch, self.batch) if self.shuffle else (0, 0)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.episodes), generator=g) if self.shuffle else torch.arange(len(self.episodes))
        mine = self._batches()
        for i in range(first, len(mine)):
            if self.shuffle:
                self.epoch, self.batch = (epoch, i + 1) if i + 1 < len(mine) else (epoch + 1, 0)
            b = mine[i]
            rows = self.episodes[order[b * self.batch_size : (b + 1) * self.batch_size]]
            yield rows[:, :-1], rows[:, 1:]  # (B, T), (B, T)
