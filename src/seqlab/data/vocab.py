"""Tokenising text into chars or words, and the vocabulary built from the train split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch

UNK = "<unk>"
EOS = "<eos>"


def tokenize(text: str, level: str) -> list[str]:
    """Chars as they are; words split on whitespace with one `<eos>` closing every line."""
    if level == "char":
        return list(text)
    if level == "word":
        return [tok for line in text.splitlines() for tok in (*line.split(), EOS)]
    raise ValueError(f"level must be 'char' or 'word', got {level!r}")


class Vocab:
    """Token <-> id. Ids are in first-seen order of the train split; `<unk>` catches what train never had."""

    def __init__(self, tokens: Sequence[str], level: str) -> None:
        self.tokens = list(tokens)
        self.level = level
        self.index = {tok: i for i, tok in enumerate(self.tokens)}
        self.unk_id = self.index[UNK]

    @classmethod
    def from_tokens(cls, train_tokens: Iterable[str], level: str) -> Vocab:
        counts = Counter(train_tokens)
        # sorted for chars (readable ids), by frequency for words (the usual LM convention)
        tokens = sorted(counts) if level == "char" else [t for t, _ in counts.most_common()]
        if UNK not in counts:
            tokens.append(UNK)
        return cls(tokens, level)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        get, unk = self.index.get, self.unk_id
        return torch.tensor([get(tok, unk) for tok in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        sep = "" if self.level == "char" else " "
        text = sep.join(self.tokens[i] for i in ids)
        return text.replace(f" {EOS} ", "\n").replace(EOS, "\n") if self.level == "word" else text

    def state_dict(self) -> dict:
        return {"tokens": self.tokens, "level": self.level}

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocab:
        return cls(state["tokens"], state["level"])
