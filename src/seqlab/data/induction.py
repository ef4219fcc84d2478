"""Induction heads (Olsson et al. 2022; the synthetic task of H3, Fu et al. 2023 §3.1, and Mamba, Gu & Dao 2023
§4.1.2): random symbols, a trigger token once followed by a target, and the trigger again as the last input. The
answer, the next token, is the target. Mamba trains at 256 tokens and tests up to a million: a model that keeps
the target in a fixed-size state answers at any length, attention with learned positions cannot run past the
window it was trained on.

    s s s s T a s s s s s s … s s T -> a        (T the trigger, a the target, s fillers: every symbol random)

Only the answer is scored (every other target is IGNORE, as in Mamba): the fillers are unpredictable noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from seqlab.data.base import SPLITS, TokenDataModule
from seqlab.data.batches import IGNORE
from seqlab.data.labelled import LabelledBatches
from seqlab.data.stream_recall import LENGTHS, StreamRecall
from seqlab.data.synthetic import SYMBOLS
from seqlab.data.vocab import UNK, Vocab
from seqlab.errors import ConfigError


class InductionSource:
    """Sequences of `length` inputs over `num_symbols` symbols (ids 0 .. S−1) plus the trigger (id S).

    The trigger's first place p is uniform over 0 .. length−3 (the target at p + 1, before the final trigger at
    length − 1), so the distance to recall is uniform too: half the stream on average. With `distance="log"` the
    distance between the two triggers, length − 1 − p, is log-uniform over 2 .. length − 1 instead: as many
    sequences recall over 2–16 tokens as over 32–256. That is our training curriculum (Mamba draws uniformly): an
    LSTM (hidden 64, lr 3e-3) trained on uniform places stayed at chance for 1,300 steps, on log-uniform ones it
    recalled every uniform test sequence after 600 (plain loop, 32 × 256 a step).
    """

    def __init__(self, num_symbols: int = 16) -> None:
        self.num_symbols = num_symbols
        self.trigger = num_symbols
        self.vocab_size = num_symbols + 1

    def sample(
        self, n: int, length: int, seed: int, distance: Literal["uniform", "log"] = "uniform"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n sequences -> inputs (n, length), answers (n,) (the target), and the trigger's first place (n,)."""
        if length < 3:
            raise ValueError(f"length={length}: an induction sequence needs at least 3 tokens (T a … T)")
        rng = np.random.default_rng(seed)
        dtype = np.int16 if self.vocab_size < 2**15 else np.int64  # a 2^16-token stream per row: keep it small
        inputs = rng.integers(0, self.num_symbols, (n, length), dtype=dtype)  # fillers everywhere
        if distance == "log":  # length − 1 − first, from 2 to length − 1, log-uniform
            first = length - 1 - np.exp(rng.uniform(np.log(2), np.log(length), n)).astype(np.int64).clip(2, length - 1)
        else:
            first = rng.integers(0, length - 2, n)  # 0 .. length−3
        rows = np.arange(n)
        answers = inputs[rows, first + 1].astype(np.int64)  # the filler drawn there is the target
        inputs[rows, first] = self.trigger
        inputs[:, -1] = self.trigger
        return inputs, answers, first

    def episodes(
        self, n: int, length: int, seed: int, distance: Literal["uniform", "log"] = "uniform"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows to train on: inputs (n, length) and next-token targets (n, length), IGNORE except the last."""
        inputs, answers, _ = self.sample(n, length, seed, distance)
        targets = np.full(inputs.shape, IGNORE, dtype=np.int64)
        targets[:, -1] = answers
        return inputs.astype(np.int64), targets


class InductionDataModule(TokenDataModule):
    """`data=induction`: induction-heads sequences of context_length tokens, one a row, scored on the answer only
    (recall_acc, chance 1/num_symbols). After the test, the streams: every model reads `stream_lengths` tokens
    the way it can (seqlab.data.stream_recall), into metrics.json ("streams") and TensorBoard (streams/).
    `train_distance`: "log" (the default, a curriculum; InductionSource says why) or "uniform" (Mamba's); val, test
    and the streams are always uniform."""

    episodic = True  # one sequence a row, each from scratch

    def __init__(
        self,
        num_symbols: int = 16,
        context_length: int = 256,
        episodes: Sequence[int] = (20_000, 500, 1_000),
        train_distance: Literal["uniform", "log"] = "log",
        source_seed: int = 0,
        batch_size: int = 32,
        seed: int = 0,
        stream_lengths: Sequence[int] = LENGTHS,
        stream_count: int = 128,
        stream_chunk: int = 1024,
        corpus: Literal["induction"] = "induction",  # the yaml names it for the run's summary
    ) -> None:
        if not 2 <= int(num_symbols) <= len(SYMBOLS):
            raise ConfigError(f"data.num_symbols={num_symbols}: must be between 2 and {len(SYMBOLS)}")
        if int(context_length) < 3:
            raise ConfigError(f"data.context_length={context_length}: a sequence needs at least 3 tokens (T a … T)")
        if len(episodes) != 3 or min(int(n) for n in episodes) < 2:
            raise ConfigError(f"data.episodes={list(episodes)}: need three episode counts (train, val, test), each ≥ 2")
        if any(int(n) < 3 for n in stream_lengths):
            raise ConfigError(f"data.stream_lengths={list(stream_lengths)}: each stream needs at least 3 tokens")
        super().__init__(corpus, "char", context_length, batch_size, seed)
        self.source = InductionSource(int(num_symbols))
        self.n_episodes, self.source_seed, self.train_distance = (
            [int(n) for n in episodes],
            int(source_seed),
            train_distance,
        )
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # split -> inputs (N, T), targets (N, T)
        self.stream_recall = StreamRecall(
            self.source,
            self.context_length,
            [int(n) for n in stream_lengths],
            int(stream_count),
            int(stream_chunk),
            seed=self.source_seed + 7,  # streams drawn apart from the three splits
        )

    def _encode(self) -> tuple[Vocab, dict[str, torch.Tensor]]:
        """The source's ids are the vocabulary's: symbols a.., then the trigger ^ (and <unk>, never used)."""
        vocab = Vocab([*SYMBOLS[: self.source.num_symbols], "^", UNK], "char")
        for i, (split, n) in enumerate(zip(SPLITS, self.n_episodes, strict=True)):
            distance = self.train_distance if split == "train" else "uniform"  # val and test: Mamba's
            x, y = self.source.episodes(n, self.context_length, self.source_seed * 1000 + 1 + i, distance)
            self.rows[split] = torch.from_numpy(x), torch.from_numpy(y)
        return vocab, {split: x.view(-1) for split, (x, _) in self.rows.items()}  # the base checks these

    @property
    def answer_positions(self) -> torch.Tensor:
        return torch.tensor([self.context_length - 1])  # the trigger's second coming is the last input

    def known_optimum(self) -> dict[str, float]:
        return {"chance_recall_acc": 1.0 / self.source.num_symbols}

    def optimal_loss(self, split: str) -> float:
        return 0.0  # only the answer is scored, and the sequence determines it

    def chunks(self, split: str) -> LabelledBatches:
        return LabelledBatches([self.rows[split]], self.batch_size, shuffle=False)  # the gradient profile's probe

    def train_dataloader(self) -> LabelledBatches:
        return LabelledBatches([self.rows["train"]], self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> LabelledBatches:
        return self.chunks("val")

    def test_dataloader(self) -> LabelledBatches:
        return self.chunks("test")

    def callbacks(self) -> list[L.Callback]:
        return [*super().callbacks(), self.stream_recall]

    def summary(self, test: dict[str, float], best_val_loss: float) -> dict[str, Any]:
        streams = {"streams": self.stream_recall.results} if self.stream_recall.results else {}
        return super().summary(test, best_val_loss) | streams
