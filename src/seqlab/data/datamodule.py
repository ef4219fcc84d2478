"""One LightningDataModule for every corpus: text -> tokens -> one id tensor per split -> chunked batches."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from seqlab.data import encoded
from seqlab.data.corpora import CORPORA, fetch
from seqlab.data.vocab import Vocab, tokenize
from seqlab.errors import ConfigError

IGNORE = -100  # target id that the loss and the metrics skip (padding of the last eval chunk)
SPLITS = ("train", "val", "test")


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


class TextDataModule(L.LightningDataModule):
    """Tiny Shakespeare, PTB, WikiText-2, names, or any UTF-8 file, at char or word level.

    `stateful`: train on `StreamBatches` (consecutive batches continue each stream; the system carries the
    state) instead of shuffled chunks. `stream_eval` (set by the run for recurrent models): validation and
    test also read each split as streams, as a second loader after the chunks, for the stateful metrics.
    """

    def __init__(
        self,
        corpus: str = "shakespeare",
        path: str | None = None,
        level: str | None = None,
        data_dir: str = "data",
        context_length: int = 64,
        batch_size: int = 64,
        splits: Sequence[float] = (0.9, 0.05, 0.05),
        seed: int = 0,
        stateful: bool = False,
    ) -> None:
        super().__init__()
        if corpus != "text_file" and corpus not in CORPORA:
            raise ConfigError(f"data.corpus={corpus}: unknown corpus; choose one of {[*CORPORA, 'text_file']}")
        if corpus == "text_file" and not path:
            raise ConfigError("data.path=None: data=text_file needs data.path=FILE")
        level = level or (CORPORA[corpus].level if corpus in CORPORA else "char")
        if level not in ("char", "word"):
            raise ConfigError(f"data.level={level}: must be 'char' or 'word'")
        if int(context_length) < 1:
            raise ConfigError(f"data.context_length={context_length}: must be at least 1")
        if int(batch_size) < 1:
            raise ConfigError(f"data.batch_size={batch_size}: must be at least 1")
        splits = tuple(float(f) for f in splits)
        if len(splits) != 3 or min(splits) <= 0 or sum(splits) > 1 + 1e-9:
            raise ConfigError(f"data.splits={list(splits)}: need three positive fractions summing to at most 1")
        self.corpus, self.path, self.level, self.data_dir = corpus, path, level, data_dir
        self.context_length, self.batch_size, self.splits, self.seed = (
            int(context_length),
            int(batch_size),
            splits,
            int(seed),
        )
        self.stateful, self.stream_eval = bool(stateful), bool(stateful)
        self.vocab: Vocab | None = None
        self.ids: dict[str, torch.Tensor] = {}
        self.use_cache = True  # the encoded corpus across runs (seqlab.data.encoded); tests turn it off to compare

    @property
    def vocab_size(self) -> int:
        assert self.vocab is not None, "call setup() first"
        return len(self.vocab)

    def prepare_data(self) -> None:
        if self.corpus in CORPORA:
            for file in CORPORA[self.corpus].files.values():
                fetch(file, self.data_dir)

    def _read(self, path: Path, key: str) -> str:
        if not path.exists():
            raise ConfigError(f"{key}={path}: no such file")
        if not path.is_file():
            raise ConfigError(f"{key}={path}: is a directory, not a file")
        raw = path.read_bytes()
        if not raw.strip():
            raise ConfigError(f"{key}={path}: the file is empty")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{key}={path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})"
            ) from None

    def _texts(self) -> dict[str, str]:
        """The raw text: {"all": text} for one file split by fractions, else {"train", "val", "test"}."""
        if self.corpus == "text_file":
            return {"all": self._read(Path(self.path).expanduser(), "data.path")}
        files = CORPORA[self.corpus].files
        return {name: self._read(fetch(file, self.data_dir), "data.corpus") for name, file in files.items()}

    def _split_tokens(self, texts: dict[str, str]) -> dict[str, list[str]]:
        if "all" not in texts:
            return {s: tokenize(texts[s], self.level) for s in SPLITS}
        tokens = tokenize(texts["all"], self.level)
        n_train, n_val = (int(len(tokens) * f) for f in self.splits[:2])
        n_test = int(len(tokens) * self.splits[2])
        return {
            "train": tokens[:n_train],
            "val": tokens[n_train : n_train + n_val],
            "test": tokens[n_train + n_val : n_train + n_val + n_test],
        }

    def _encode(self) -> tuple[Vocab, dict[str, torch.Tensor]]:
        """Vocabulary and ids per split, from the cache when this text was encoded before (seqlab.data.encoded)."""
        texts = self._texts()
        name = encoded.key([texts[k] for k in sorted(texts)], self.level, self.splits if "all" in texts else ())
        cached = encoded.load(name) if self.use_cache else None
        if cached is not None:
            return Vocab(cached["tokens"], self.level), {s: cached[s].long() for s in SPLITS}
        split_tokens = self._split_tokens(texts)
        vocab = Vocab.from_tokens(split_tokens["train"], self.level)
        ids = {s: vocab.encode(split_tokens[s]) for s in SPLITS}
        if self.use_cache:
            encoded.save(name, {"tokens": vocab.tokens, **{s: v.int() for s, v in ids.items()}})  # half the bytes
        return vocab, ids

    def setup(self, stage: str | None = None) -> None:
        if self.ids:
            return  # encoded once; fit, validate and test share it
        vocab, ids = self._encode()
        if ids["train"].unique().numel() < 2:  # every train token is in the vocabulary: ids <-> tokens 1:1
            raise ConfigError(f"data: the train split of {self.describe()} has fewer than two distinct tokens")
        for split in SPLITS:
            n = len(ids[split])
            if n < self.context_length + 1:
                raise ConfigError(
                    f"data.context_length={self.context_length}: the {split} split of {self.describe()} has "
                    f"{n} tokens, fewer than one chunk ({self.context_length + 1})"
                )
        self.vocab, self.ids = vocab, ids
        if self.stateful:  # the train split as batch_size streams, each at least one chunk long
            n_streams = len(self.ids["train"]) // (self.context_length + 1)
            if n_streams < self.batch_size:
                self.ids = {}
                raise ConfigError(
                    f"data.batch_size={self.batch_size}: data.stateful=true splits the train split of "
                    f"{self.describe()} into that many streams, but it holds only {n_streams} of "
                    "data.context_length + 1 tokens"
                )
            return
        # TrainBatches would quietly make one smaller batch, and the run would record the size it did not use
        n_chunks = TrainBatches(self.ids["train"], self.context_length, self.batch_size, self.seed).n_chunks
        if self.batch_size > n_chunks:
            self.ids = {}
            raise ConfigError(
                f"data.batch_size={self.batch_size}: the train split of {self.describe()} has {n_chunks} chunks of "
                f"{self.context_length + 1} tokens; use data.batch_size={n_chunks} or less"
            )

    def describe(self) -> str:
        return self.path if self.corpus == "text_file" else self.corpus

    def train_dataloader(self) -> TrainBatches | StreamBatches:
        if self.stateful:
            return self.streams("train")
        return TrainBatches(self.ids["train"], self.context_length, self.batch_size, self.seed)

    def chunks(self, split: str) -> EvalBatches:
        return EvalBatches(self.ids[split], self.context_length, self.batch_size)

    def streams(self, split: str) -> StreamBatches:
        return StreamBatches(self.ids[split], self.context_length, self.batch_size)

    def val_dataloader(self) -> EvalBatches | list[EvalBatches | StreamBatches]:
        # with stream_eval, a second loader (dataloader_idx 1): the split as streams, for the stateful metrics
        return [self.chunks("val"), self.streams("val")] if self.stream_eval else self.chunks("val")

    def test_dataloader(self) -> EvalBatches | list[EvalBatches | StreamBatches]:
        return [self.chunks("test"), self.streams("test")] if self.stream_eval else self.chunks("test")

    def save_vocab(self, path: Path) -> None:
        assert self.vocab is not None
        path.write_text(json.dumps(self.vocab.state_dict(), ensure_ascii=False))
