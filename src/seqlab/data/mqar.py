"""Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology: measuring and improving recall in efficient
language models", §3 and their `multiquery_ar`): K key–value pairs, then the keys asked again, each once, at
random places among random tokens; after each query the model must predict its value.

    k_1 v_1 k_2 v_2 … k_K v_K | r r k_3 r r r r k_1 r … r        targets: v_3 after k_3, v_1 after k_1, else IGNORE

Keys are drawn without replacement from the lower half of the vocabulary (id 0 excepted), values without
replacement from the upper half; the gap before each query (in slots of two tokens) is drawn without replacement
with P(gap = g) ∝ g^(a−1), a = 0.01 (Zoology's power law: most queries come soon after the pairs, a few late);
every other token after the pairs is uniform over the whole vocabulary. Attention recalls every pair at any
width (its KV cache grows with the sequence); a fixed-size state can hold only so many pairs (Arora et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torchmetrics import MeanMetric

from seqlab.data.base import SPLITS, TokenDataModule
from seqlab.data.batches import IGNORE
from seqlab.data.labelled import LabelledBatches
from seqlab.data.vocab import UNK, Vocab
from seqlab.errors import ConfigError


def mqar(
    n: int, length: int, pairs: int, vocab_size: int, seed: int, power_a: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences -> inputs (n, length) and targets (n, length): IGNORE except a value after each query."""
    if length % 2 or 4 * pairs > length:
        raise ValueError(f"length={length}, pairs={pairs}: need an even length ≥ 4 × pairs (pairs, then queries)")
    if vocab_size <= length or vocab_size // 2 - 1 < pairs:
        raise ValueError(f"vocab_size={vocab_size}: must exceed the length {length} and hold {pairs} keys")
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    # K distinct keys from 1 .. half−1 and K distinct values from half .. V−1: argsort of noise draws without replacement
    keys = 1 + np.argsort(rng.random((n, half - 1)), axis=1)[:, :pairs]  # (n, K)
    values = half + np.argsort(rng.random((n, vocab_size - half)), axis=1)[:, :pairs]  # (n, K)
    context = 2 * pairs
    space = (length - context) // 2  # two-token slots after the pairs; a query starts a slot
    # weighted sampling without replacement: the top K of log p + Gumbel noise (Gumbel-top-k, Kool et al. 2019)
    log_p = (power_a - 1) * np.log(np.arange(1, space + 1))
    gaps = np.argsort(-(log_p + rng.gumbel(size=(n, space))), axis=1)[:, :pairs]  # (n, K): key i's slot
    inputs = rng.integers(0, vocab_size, (n, length))  # the random tokens, then the pairs and queries over them
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    rows = np.arange(n)[:, None]
    query_at = context + 2 * gaps  # (n, K)
    inputs[rows, query_at] = keys
    targets = np.full((n, length), IGNORE, dtype=np.int64)
    targets[rows, query_at] = values  # the next token after a query is its value
    return inputs, targets


def chance(vocab_size: int, pairs: int) -> dict[str, float]:
    """Accuracy without recall: guessing blind (one of the vocab_size − vocab_size // 2 values), and knowing
    which K values the sequence holds but not which key each belongs to (1/K)."""
    return {"blind": 1.0 / (vocab_size - vocab_size // 2), "values_unbound": 1.0 / pairs}


class RecallByPairs(L.Callback):
    """recall_acc over every answer, and per K (`{split}/recall_acc/K=04`), from the system's own logits; after the
    test, each K's state bytes: the model's own `state_bytes(1, length)` at that K's sequence length (a fixed
    state for a recurrent model, the KV cache of that many tokens for the Transformer)."""

    def __init__(self, pairs: Sequence[int], lengths: Sequence[int]) -> None:
        super().__init__()
        self.length_of = dict(zip(pairs, lengths, strict=True))
        self.correct = {k: MeanMetric() for k in ["all", *pairs]}  # mean of 0/1 over answers, summed over ranks
        self.results: list[dict[str, Any]] = []  # after the test: one row per K

    def _count(self, outputs: Any, batch: Any) -> None:
        _, y = batch  # (B, T), IGNORE except the answers
        scored = y != IGNORE
        hit = (outputs["logits"].argmax(-1) == y)[scored].float()  # (answers,)
        pairs = int(scored[0].sum())  # every row of a batch comes from one K, and asks each key once
        for key in ("all", pairs):
            self.correct[key].to(hit.device).update(hit)

    def _log(self, pl_module: L.LightningModule, split: str) -> dict[Any, float]:
        values = {}
        for key, metric in self.correct.items():
            if metric.update_called:
                values[key] = float(metric.compute())
                metric.reset()
        if "all" in values:
            pl_module.log(f"{split}/recall_acc", values["all"])
            for k in self.length_of:
                if k in values:
                    pl_module.log(f"{split}/recall_acc/K={k:02d}", values[k])
        return values

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = self._log(pl_module, "test")
        model = pl_module.model
        self.results = [
            {"pairs": k, "length": n, "recall_acc": values.get(k), "state_bytes": model.state_bytes(1, n)}
            for k, n in self.length_of.items()
        ]


def k50(rows: Sequence[dict[str, Any]], threshold: float = 0.5) -> int | None:
    """Zoology's reading of capacity: the largest K recalled at ≥ threshold (None: not even the smallest)."""
    held = [row["pairs"] for row in rows if row.get("recall_acc") is not None and row["recall_acc"] >= threshold]
    return max(held) if held else None


class MQARDataModule(TokenDataModule):
    """`data=mqar`: MQAR at several numbers of pairs K, each at its own sequence length, trained as one mixture
    (each batch from one K, as Zoology mixes its configurations) and scored per K. Tokens: `_` (id 0), keys
    k1 .. k{V/2−1}, values v0 .. v{V/2−1}, so a sample reads as a sequence of pairs and queries.

    context_length is the longest sequence (the Transformer's learned positions); `num_tokens` is Zoology's
    vocab_size (the model's vocabulary is one more: <unk>, never used). `random_fillers: false` fills the
    gaps between queries with `_` (Zoology's Figure 2 setting) instead of random tokens (its default)."""

    episodic = True  # one sequence a row, each from scratch

    def __init__(
        self,
        pairs: Sequence[int] = (4, 8, 16, 32, 64),
        lengths: Sequence[int] = (64, 128, 256, 256, 256),
        num_tokens: int = 1024,
        examples: Sequence[int] = (10_000, 250, 500),
        random_fillers: bool = True,
        power_a: float = 0.01,
        source_seed: int = 0,
        batch_size: int = 64,
        seed: int = 0,
        context_length: int | None = None,
        corpus: Literal["mqar"] = "mqar",  # the yaml names it for the run's summary
    ) -> None:
        pairs, lengths = [int(k) for k in pairs], [int(n) for n in lengths]
        if not pairs or len(set(pairs)) != len(pairs):
            raise ConfigError(f"data.pairs={pairs}: need one or more distinct numbers of key-value pairs")
        if len(pairs) != len(lengths):
            raise ConfigError(f"data.lengths={lengths}: need one sequence length per entry of data.pairs={pairs}")
        for k, n in zip(pairs, lengths, strict=True):
            if n % 2 or 4 * k > n:
                raise ConfigError(f"data.lengths={lengths}: each must be even and ≥ 4 × its pairs ({k} pairs: {n})")
        if int(num_tokens) <= max(lengths) or int(num_tokens) // 2 - 1 < max(pairs):
            raise ConfigError(f"data.num_tokens={num_tokens}: must exceed every length and hold {max(pairs)} keys")
        if len(examples) != 3 or min(int(n) for n in examples) < 1:
            raise ConfigError(f"data.examples={list(examples)}: need three positive counts (train, val, test per K)")
        if context_length is not None and int(context_length) != max(lengths):
            raise ConfigError(f"data.context_length={context_length}: the longest sequence is {max(lengths)} (or null)")
        super().__init__(corpus, "word", max(lengths), batch_size, seed)
        self.pairs, self.lengths, self.num_tokens = pairs, lengths, int(num_tokens)
        self.examples, self.random_fillers, self.power_a = [int(n) for n in examples], bool(random_fillers), power_a
        self.source_seed = int(source_seed)
        self.groups: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # split -> one (x, y) per K
        self.recall = RecallByPairs(pairs, lengths)

    def _encode(self) -> tuple[Vocab, dict[str, torch.Tensor]]:
        half = self.num_tokens // 2
        vocab = Vocab(
            ["_", *(f"k{i}" for i in range(1, half)), *(f"v{i}" for i in range(self.num_tokens - half)), UNK], "word"
        )
        for s, (split, n) in enumerate(zip(SPLITS, self.examples, strict=True)):
            self.groups[split] = []
            for k, length in zip(self.pairs, self.lengths, strict=True):
                seed = self.source_seed * 1_000_003 + 1000 * s + k  # each split and K from its own stream
                x, y = mqar(n, length, k, self.num_tokens, seed, self.power_a)
                if not self.random_fillers:
                    x = np.where(np.arange(length) < 2 * k, x, np.where(y != IGNORE, x, 0))  # pairs, queries, else _
                self.groups[split].append((torch.from_numpy(x).to(torch.int16), torch.from_numpy(y).to(torch.int16)))
        return vocab, {split: torch.cat([x.view(-1) for x, _ in g]).long() for split, g in self.groups.items()}

    def known_optimum(self) -> dict[str, float]:
        return {"chance_recall_acc": chance(self.num_tokens, min(self.pairs))["blind"]}

    def optimal_loss(self, split: str) -> float:
        return 0.0  # only the answers are scored, and each was given earlier

    def chunks(self, split: str) -> LabelledBatches:
        """The rows of one length (the last K's), for probes that stack batches (the gradient profile)."""
        return LabelledBatches(self.groups[split][-1:], self.batch_size, shuffle=False)

    def train_dataloader(self) -> LabelledBatches:
        return LabelledBatches(self.groups["train"], self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> LabelledBatches:
        return LabelledBatches(self.groups["val"], self.batch_size, shuffle=False)

    def test_dataloader(self) -> LabelledBatches:
        return LabelledBatches(self.groups["test"], self.batch_size, shuffle=False)

    def callbacks(self) -> list[L.Callback]:
        return [*super().callbacks(), self.recall]

    def summary(self, test: dict[str, float], best_val_loss: float) -> dict[str, Any]:
        rows = self.recall.results
        return super().summary(test, best_val_loss) | ({"mqar": rows, "k50": k50(rows)} if rows else {})
