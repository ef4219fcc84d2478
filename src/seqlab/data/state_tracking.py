"""State-tracking tasks: the running answer of a regular language at every position, generated from a seed.

Which models can track state over any length is predicted by theory (Delétang et al. 2023, "Neural networks and
the Chomsky hierarchy"; Grazzi et al. 2025, "Unlocking state-tracking in linear RNNs through negative
eigenvalues"; Khavari et al. 2025); these tasks are the test, trained on short sequences and scored far past them.

    parity       bits 0/1                  running parity (the sum mod 2)
    mod<k>       digits 0..k−1             running sum mod k (mod3 and mod5 in the study)
    dyck<D>      brackets ( )              depth of a Dyck-1 word whose depth stays within 0..D (dyck4)
    s3, s5       permutations of 3 (5)     running composition: the word problem of S3 (solvable) / S5 (not)

A sequence is START s_1 … s_n (inputs) against a_0 a_1 … a_n (targets): a_t is the answer after s_1..s_t, and
a_0 the empty word's (parity 0, depth 0, the identity). seqlab's models map tokens to next-token logits over one
vocabulary, so the answers are symbols of their own there: ids 0 = START, 1..m the task's m input symbols,
m+1..m+K its K answers (`Task.vocab`).

`sample` draws the symbols (uniform, except Dyck's bounded walk) and `Task.run` computes the answers with
numpy; tests/test_state_tracking.py checks them against plain-Python references.

`data=state_tracking` (`StateTrackingDataModule`) trains on lengths uniform in [3, 40] and contributes
`LengthGeneralisation`, which scores the best checkpoint at test time on longer sequences (buckets of lengths
40–64, 64–128, 128–256, one pass each) and, for models that carry a state, on streams of 1,024 symbols read
`context_length` tokens at a time through the carried state. A bucket's accuracy counts the positions past the
longest training length only (t > 40: what was never trained), over every sequence of the bucket; `3-40` is
the in-distribution test split, every position.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from seqlab.data.base import SPLITS, TokenDataModule
from seqlab.data.batches import IGNORE
from seqlab.data.labelled import LabelledBatches
from seqlab.data.vocab import UNK, Vocab
from seqlab.errors import ConfigError

TASKS = ("parity", "mod_count", "dyck_depth", "s3", "s5")
START = "<s>"


@dataclass(frozen=True)
class Task:
    """One task: `name`, with `modulus` (mod_count) and `max_depth` (dyck_depth), each ignored by the others."""

    name: str
    modulus: int = 3
    max_depth: int = 4

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; choose one of {', '.join(TASKS)}")
        if self.modulus < 2 or self.max_depth < 2:
            raise ValueError(f"modulus={self.modulus}, max_depth={self.max_depth}: need at least 2")

    @classmethod
    def parse(cls, label: str) -> Task:
        """ "parity", "mod3", "dyck4", "s3", "s5" -> the task (the inverse of `label`)."""
        match = re.fullmatch(r"(parity|s3|s5)|mod(\d+)|dyck(\d+)", label)
        if match is None or int(match[2] or match[3] or 2) < 2:
            raise ValueError(f"task {label!r}: one of parity, mod<k> (k ≥ 2), dyck<D> (D ≥ 2), s3, s5")
        if match[2]:
            return cls("mod_count", modulus=int(match[2]))
        return cls("dyck_depth", max_depth=int(match[3])) if match[3] else cls(label)

    @property
    def label(self) -> str:
        """The task as configs and tables name it: parity, mod3, dyck4, s3, s5."""
        return {"mod_count": f"mod{self.modulus}", "dyck_depth": f"dyck{self.max_depth}"}.get(self.name, self.name)

    @cached_property
    def group(self) -> list[tuple[int, ...]]:
        """s3 / s5: the permutations in lexicographic order; element i is symbol i and answer i."""
        return list(itertools.permutations(range(3 if self.name == "s3" else 5)))

    @cached_property
    def table(self) -> np.ndarray:
        """table[p, x] = the index of x ∘ p (apply p, then x): the group's multiplication, for the word problem."""
        index = {perm: i for i, perm in enumerate(self.group)}
        return np.array([[index[tuple(x[j] for j in p)] for x in self.group] for p in self.group])

    @property
    def num_symbols(self) -> int:
        return {"parity": 2, "mod_count": self.modulus, "dyck_depth": 2}.get(self.name) or len(self.group)

    @property
    def num_answers(self) -> int:
        return {"parity": 2, "mod_count": self.modulus, "dyck_depth": self.max_depth + 1}.get(self.name) or len(
            self.group
        )

    @property
    def chance(self) -> float:
        """The accuracy of the best constant guess once the answer is stationary. The running answer of parity,
        mod_count and the word problems is uniform (uniform inputs from a group); Dyck's depth is a reflecting
        walk on 0..D whose stationary law is 1/(2D) at 0 and D and 1/D inside."""
        return 1 / self.max_depth if self.name == "dyck_depth" else 1 / self.num_answers

    @property
    def vocab(self) -> list[str]:
        """Token names by id: START, inputs x0.., answers y0.."""
        m, n = self.num_symbols, self.num_answers
        return [START, *(f"x{i}" for i in range(m)), *(f"y{i}" for i in range(n))]

    def run(self, symbols: np.ndarray) -> np.ndarray:
        """symbols (N, L) in 0..m−1 -> answers (N, L + 1), a_0 first (every row is read to its end)."""
        N, L = symbols.shape
        if self.name in ("parity", "mod_count"):
            out = np.cumsum(symbols, axis=1) % self.num_answers
        elif self.name == "dyck_depth":
            out = np.cumsum(np.where(symbols == 0, 1, -1), axis=1)  # x0 = "(", x1 = ")"
        else:
            out, p = np.empty((N, L), dtype=np.int64), np.zeros(N, dtype=np.int64)  # 0 = the identity
            for t in range(L):
                p = self.table[p, symbols[:, t]]
                out[:, t] = p
        return np.concatenate([np.zeros((N, 1), dtype=np.int64), out], axis=1)

    def sample(self, n: int, lengths: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n sequences with lengths uniform in [lengths[0], lengths[1]] (symbols after START), drawn from `seed`.
        -> symbols (n, L_max) (past a row's length: anything), answers (n, L_max + 1), lengths (n,)."""
        rng = np.random.default_rng(seed)
        lo, hi = lengths
        sizes = rng.integers(lo, hi + 1, n)
        if self.name != "dyck_depth":
            symbols = rng.integers(0, self.num_symbols, (n, hi))
        else:  # a fair ±1 walk on 0..D: forced to open at 0 and to close at D
            symbols, depth = np.empty((n, hi), dtype=np.int64), np.zeros(n, dtype=np.int64)
            coins = rng.integers(0, 2, (n, hi))
            for t in range(hi):
                symbols[:, t] = np.where(depth == 0, 0, np.where(depth == self.max_depth, 1, coins[:, t]))
                depth += np.where(symbols[:, t] == 0, 1, -1)
        return symbols, self.run(symbols), sizes


def encode(
    task: Task, symbols: np.ndarray, answers: np.ndarray, sizes: np.ndarray, ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    """-> inputs (N, L + 1) = START s_1..s_L, targets (N, L + 1) = a_0..a_L as vocabulary ids, `ignore` past each
    row's length (inputs there are START: a causal model never reads them for a scored position)."""
    N, L = symbols.shape
    x = np.concatenate([np.zeros((N, 1), dtype=np.int64), 1 + symbols], axis=1)
    y = 1 + task.num_symbols + answers
    past = np.arange(L + 1)[None, :] > sizes[:, None]
    return np.where(past, 0, x), np.where(past, ignore, y)


class StateTrackingDataModule(TokenDataModule):
    """`data=state_tracking`: one task (module docstring), train/val/test drawn from `source_seed` with lengths in
    `train_lengths`, rows batched by length (no padding in training). `context_length` (null: derived) is the
    longest row read in one pass, START included: the last bucket's end + 1, what a Transformer's learned
    positions must cover."""

    episodic = True  # one sequence a row, each from a zero state

    def __init__(
        self,
        task: str = "parity",
        train_lengths: tuple[int, int] = (3, 40),
        buckets: tuple[tuple[int, int], ...] = ((40, 64), (64, 128), (128, 256)),
        stream_length: int = 1024,
        sequences: tuple[int, int, int] = (20_000, 1_000, 1_000),
        bucket_sequences: int = 256,
        stream_sequences: int = 32,
        source_seed: int = 0,
        batch_size: int = 64,
        seed: int = 0,
        context_length: int | None = None,
        corpus: Literal["state_tracking"] = "state_tracking",
    ) -> None:
        lo, hi = (int(n) for n in train_lengths)
        if not 1 <= lo <= hi:
            raise ConfigError(f"data.train_lengths={[lo, hi]}: need 1 ≤ shortest ≤ longest")
        self.buckets = [(int(a), int(b)) for a, b in buckets]
        if any(not hi <= a <= b for a, b in self.buckets):
            raise ConfigError(f"data.buckets={self.buckets}: each [lo, hi] needs data.train_lengths' {hi} ≤ lo ≤ hi")
        needed = max([hi, *(b for _, b in self.buckets)]) + 1
        if context_length is not None and int(context_length) < needed:
            raise ConfigError(f"data.context_length={context_length}: the longest row here has {needed} tokens")
        try:
            self.task = Task.parse(task)
        except ValueError as err:
            raise ConfigError(f"data.task={task}: {str(err).split(': ', 1)[1]}") from None
        super().__init__(corpus, "word", int(context_length or needed), batch_size, seed)
        self.train_lengths, self.stream_length = (lo, hi), int(stream_length)
        self.n_sequences, self.bucket_sequences, self.stream_sequences = (
            list(sequences),
            bucket_sequences,
            stream_sequences,
        )
        self.source_seed = int(source_seed)
        self.rows: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # split -> groups of equal length
        self.long: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # bucket name -> (x, y), padded with IGNORE

    def describe(self) -> str:
        return f"{self.corpus}:{self.task.label}"

    def _draw(self, n: int, lengths: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = encode(self.task, *self.task.sample(n, lengths, seed), IGNORE)
        return torch.from_numpy(x), torch.from_numpy(y)

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        self.vocab = Vocab([*self.task.vocab, UNK], self.level)  # UNK: Vocab needs one; never drawn
        seed = self.source_seed * 1000
        for i, (split, n) in enumerate(zip(SPLITS, self.n_sequences, strict=True)):
            x, y = self._draw(int(n), self.train_lengths, seed + i)
            sizes = (y != IGNORE).sum(1)  # START + the symbols: tokens in the row
            self.rows[split] = [(x[sizes == k, :k], y[sizes == k, :k]) for k in sizes.unique().tolist()]
            self.ids[split] = x[y != IGNORE]  # every real input token, for the run's log line
        for j, (a, b) in enumerate(self.buckets):
            self.long[f"{a}-{b}"] = self._draw(self.bucket_sequences, (a, b), seed + 10 + j)
        stream = self._draw(self.stream_sequences, (self.stream_length, self.stream_length), seed + 9)
        self.long[f"stream-{self.stream_length}"] = stream

    def _batches(self, split: str) -> LabelledBatches:
        return LabelledBatches(self.rows[split], self.batch_size, shuffle=split == "train", seed=self.seed)

    def train_dataloader(self) -> LabelledBatches:
        return self._batches("train")

    def val_dataloader(self) -> LabelledBatches:
        return self._batches("val")

    def test_dataloader(self) -> LabelledBatches:
        return self._batches("test")

    def chunks(self, split: str) -> LabelledBatches:
        """The split's rows of the longest training length, in order: the gradient profile's probe batch (its
        loss at the last position is the final label's)."""
        return LabelledBatches(self.rows[split][-1:], self.batch_size, shuffle=False)

    def callbacks(self) -> list[L.Callback]:
        return [LengthGeneralisation(self)]

    def summary(self, test: dict[str, float], best_val_loss: float) -> dict[str, Any]:
        acc = {name.removeprefix("st/acc/"): value for name, value in test.items() if name.startswith("st/acc/")}
        return {
            "state_tracking": {
                "task": self.task.label,
                "chance": self.task.chance,
                "scored": f"positions past {self.train_lengths[1]} (3-40: the test split, every position)",
                "acc": acc,
            }
        }

    @torch.no_grad()
    def evaluate(self, model: Any, device: torch.device | str = "cpu") -> dict[str, float]:
        """{bucket: accuracy}: the test split (every position), each bucket in one pass, and the streams through
        the carried state for a model that has one (`model.recurrent`)."""
        correct, total = 0, 0
        for x, y in self.rows["test"]:
            pred = model(x.to(device)).argmax(-1).cpu()
            correct, total = correct + int((pred == y).sum()), total + y.numel()
        out, past = {f"{self.train_lengths[0]}-{self.train_lengths[1]}": correct / total}, self.train_lengths[1]
        for name, (x, y) in self.long.items():
            stream = name.startswith("stream")
            if stream and not model.recurrent:
                continue  # it would need the whole stream in one context: the table says so
            scored = (y != IGNORE) & (torch.arange(y.shape[1]) > past)
            pred = torch.cat([self._predict(model, x[i : i + 64].to(device), stream) for i in range(0, len(x), 64)])
            out[name] = float((pred == y)[scored].double().mean())
        return out

    def _predict(self, model: Any, x: torch.Tensor, stream: bool) -> torch.Tensor:
        if not stream:
            return model(x).argmax(-1).cpu()
        state, preds = None, []
        for chunk in x.split(self.context_length, dim=1):  # the state carried across chunks, as in streaming
            logits, state = model.forward_with_state(chunk, state)
            preds.append(logits.argmax(-1).cpu())
        return torch.cat(preds, dim=1)


class LengthGeneralisation(L.Callback):
    """Contributed by data=state_tracking: at the end of testing (the best checkpoint), the accuracy per length
    bucket as `st/acc/<bucket>` (test results, so metrics.json and TensorBoard) and the chance level."""

    def __init__(self, source: StateTrackingDataModule) -> None:
        super().__init__()
        self.source = source

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, acc in self.source.evaluate(pl_module.model, pl_module.device).items():
            pl_module.log(f"st/acc/{name}", acc)
        pl_module.log("st/chance", self.source.task.chance)
