"""TextDataModule: Tiny Shakespeare, PTB, WikiText-2, names or any UTF-8 file -> tokens -> one id tensor per split.

Everything but reading and tokenising the text is the shared token-source base (seqlab.data.base).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from seqlab.data import encoded
from seqlab.data.base import SPLITS, TokenDataModule
from seqlab.data.corpora import CORPORA, fetch
from seqlab.data.vocab import Vocab, tokenize
from seqlab.errors import ConfigError

Corpus = Literal["shakespeare", "names", "ptb", "wikitext2", "text_file"]  # CORPORA's names, or any file: data.path


class TextDataModule(TokenDataModule):
    """Tiny Shakespeare, PTB, WikiText-2, names, or any UTF-8 file, at char or word level; corpora are fetched
    once into `data_dir`, and the encoded text is cached across runs (seqlab.data.encoded)."""

    def __init__(
        self,
        corpus: Corpus = "shakespeare",
        path: str | None = None,
        level: Literal["char", "word"] | None = None,
        data_dir: str = "data",
        context_length: int = 64,
        batch_size: int = 64,
        splits: tuple[float, float, float] = (0.9, 0.05, 0.05),
        seed: int = 0,
        stateful: bool = False,
    ) -> None:
        # types, choices and each value's range are seqlab.config's; here, what needs two values together
        if corpus == "text_file" and not path:
            raise ConfigError("data.path=None: data=text_file needs data.path=FILE")
        level = level or (CORPORA[corpus].level if corpus in CORPORA else "char")
        splits = tuple(float(f) for f in splits)
        if sum(splits) > 1 + 1e-9:
            raise ConfigError(f"data.splits={list(splits)}: the three fractions sum to more than 1")
        super().__init__(corpus, level, context_length, batch_size, seed, stateful)
        self.path, self.data_dir, self.splits = path, data_dir, splits
        self.use_cache = True  # the encoded corpus across runs (seqlab.data.encoded); tests turn it off to compare

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

    def _tokenize(self, texts: dict[str, str]) -> dict[str, list[str]]:
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
        split_tokens = self._tokenize(texts)
        vocab = Vocab.from_tokens(split_tokens["train"], self.level)
        ids = {s: vocab.encode(split_tokens[s]) for s in SPLITS}
        if self.use_cache:
            encoded.save(name, {"tokens": vocab.tokens, **{s: v.int() for s, v in ids.items()}})  # half the bytes
        return vocab, ids

    def describe(self) -> str:
        return self.path if self.corpus == "text_file" else self.corpus
