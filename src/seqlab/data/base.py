"""TokenDataModule: what every token source shares. A source only says where its tokens come from.

Text corpora and files (seqlab.data.datamodule.TextDataModule) and generated sources (seqlab.data.synthetic)
are siblings under this base: each fills `_split_tokens` (or `_encode`); the vocabulary, the per-split ids,
the checks on their sizes, the loaders, `describe` and `save_vocab` are here.

What a source can do beyond giving tokens is declared here, with the defaults of a source that knows nothing
more (real text), and overridden by the sources that do. Tools read these; none probes with hasattr:
- `episodic`: rows are separate episodes, not windows of one stream: no stream evaluation, and the probe's
  context-use windows (which would straddle episodes) are skipped.
- `answer_positions`: the target positions, within a row, that the source scores apart (recall: the answers);
  every consumer (recall_acc, the probe) reads these same positions.
- `known_optimum()`: None where the best possible loss is unknown; else reference figures for metrics.json,
  and then `optimal_loss(split)` (and `best_loss_given(n)`, `source_loss(split)` where known) give the numbers.
- `callbacks()`: the evaluation callbacks this source contributes to a run (excess_loss, recall_acc, …).
- `summary(test, best_val_loss)`: the source's entries in metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from seqlab.data.batches import EvalBatches, StreamBatches, TrainBatches
from seqlab.data.known_source import KnownSource
from seqlab.data.known_source import summary as known_source_summary
from seqlab.data.vocab import Vocab
from seqlab.errors import ConfigError

SPLITS = ("train", "val", "test")


class TokenDataModule(L.LightningDataModule):
    """One id tensor per split, read as random train chunks (or `stateful` streams) and consecutive eval chunks.

    `stateful`: train on `StreamBatches` (consecutive batches continue each stream; the system carries the
    state) instead of shuffled chunks. `stream_eval` (set by the run for recurrent models): validation and
    test also read each split as streams, as a second loader after the chunks, for the stateful metrics.
    """

    episodic: ClassVar[bool] = False

    def __init__(
        self, corpus: str, level: str, context_length: int, batch_size: int, seed: int = 0, stateful: bool = False
    ) -> None:
        super().__init__()
        self.corpus, self.level = corpus, level
        self.context_length, self.batch_size, self.seed = int(context_length), int(batch_size), int(seed)
        self.stateful, self.stream_eval = bool(stateful), bool(stateful)
        self.vocab: Vocab | None = None
        self.ids: dict[str, torch.Tensor] = {}

    @property
    def vocab_size(self) -> int:
        assert self.vocab is not None, "call setup() first"
        return len(self.vocab)

    def describe(self) -> str:
        return self.corpus

    # --- where the tokens come from (the one thing a source must say) ------------------------------------
    def _split_tokens(self) -> dict[str, list[str]]:
        """{"train", "val", "test"} -> that split's tokens."""
        raise NotImplementedError(f"{type(self).__name__} says where its tokens come from in _split_tokens")

    def _encode(self) -> tuple[Vocab, dict[str, torch.Tensor]]:
        """The vocabulary (from the train split) and each split's ids."""
        tokens = self._split_tokens()
        vocab = Vocab.from_tokens(tokens["train"], self.level)
        return vocab, {split: vocab.encode(tokens[split]) for split in SPLITS}

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

    # --- loaders --------------------------------------------------------------------------------------
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

    # --- what this source can do (module docstring); the defaults: nothing beyond its tokens --------------
    @property
    def answer_positions(self) -> torch.Tensor | None:
        """Target indices within a row whose token the past determines, scored apart (recall_acc); None: none."""
        return None

    def known_optimum(self) -> dict[str, float] | None:
        """None: the best possible loss is unknown. Else reference figures for metrics.json (may be empty)."""
        return None

    def optimal_loss(self, split: str) -> float | None:
        """The best possible loss on `split` as val and test score it (consecutive chunks or episodes)."""
        return None

    def best_loss_given(self, n: int) -> float | None:
        """The best loss of a model that sees only the last n tokens (n = 0: none)."""
        return None

    def source_loss(self, split: str) -> float | None:
        """The source's own loss on this split's tokens: the optimum without the split's sampling noise."""
        return None

    def callbacks(self) -> list[L.Callback]:
        """Evaluation callbacks this source contributes to a run: where the optimum is known, KnownSource."""
        return [KnownSource(self)] if self.known_optimum() is not None else []

    def summary(self, test: dict[str, float], best_val_loss: float) -> dict[str, Any]:
        """This source's entries in metrics.json, from the test metrics (`trainer.test`'s) and the best val loss."""
        return known_source_summary(self, test, best_val_loss) if self.known_optimum() is not None else {}
