"""Vocabulary, splits and batching, checked against the raw text."""

from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR

from seqlab.data import IGNORE, TextDataModule, Vocab, tokenize
from seqlab.data.batches import EvalBatches, TrainBatches
from seqlab.data.vocab import EOS, UNK


def test_eval_batches_score_every_token_once():
    ids = torch.arange(1000)
    seen = []
    for x, y in EvalBatches(ids, context_length=64, batch_size=5):
        assert x.shape == y.shape and x.shape[1] == 64
        valid = y != IGNORE
        torch.testing.assert_close(y[valid], x[valid] + 1)  # targets are the inputs shifted by one
        seen.append(y[valid])
    assert torch.equal(torch.cat(seen), ids[1:])  # in order, each token after the first exactly once


def test_train_batches_shift_and_reshuffle():
    ids = torch.arange(5000)
    batches = TrainBatches(ids, context_length=32, batch_size=8, seed=0)
    first = list(batches)
    assert len(first) == len(batches)
    for x, y in first:
        assert x.shape == (8, 32)
        torch.testing.assert_close(y, x + 1)  # a contiguous chunk of the text
    second = list(batches)
    assert not torch.equal(first[0][0], second[0][0])  # a new order (and phase) every epoch
    again = list(TrainBatches(ids, context_length=32, batch_size=8, seed=0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))  # same seed, same batches


def test_char_vocab_from_train_only(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabcabc" * 20 + "xyz" * 10)  # 'xyz' lands in val/test only
    dm = TextDataModule(corpus="text_file", path=str(path), context_length=4, batch_size=2, splits=(0.8, 0.1, 0.1))
    dm.setup()
    assert set(dm.vocab.tokens) == {"a", "b", "c", UNK}
    assert (dm.ids["test"] == dm.vocab.unk_id).all()
    assert dm.vocab.decode(dm.ids["train"][:6].tolist()) == "abcabc"


def test_word_level_adds_eos_per_line():
    assert tokenize(" the cat \n sat\n", "word") == ["the", "cat", EOS, "sat", EOS]
    vocab = Vocab.from_tokens(["a", "b", "a", EOS], "word")
    assert vocab.tokens[0] == "a" and UNK in vocab.tokens  # by frequency; <unk> catches the unseen
    assert vocab.encode(["a", "zzz"]).tolist() == [0, vocab.unk_id]


def test_ptb_matches_its_published_counts():
    if not (DATA_DIR / "ptb" / "ptb.train.txt").is_file():
        pytest.skip("PTB not available")
    dm = TextDataModule(corpus="ptb", data_dir=str(DATA_DIR), context_length=35, batch_size=20)
    dm.setup()
    assert dm.vocab_size == 10_000  # 9,999 words (with <unk>) + <eos>
    assert len(dm.ids["train"]) == 929_589  # words + one <eos> per line (SOURCES.md)
    assert len(dm.ids["val"]) == 73_760
    assert (dm.ids["test"] != dm.vocab.unk_id).any()


def test_shakespeare_splits_are_contiguous_fractions(shakespeare_text: str):
    dm = TextDataModule(corpus="shakespeare", data_dir=str(DATA_DIR))
    dm.setup()
    n = len(shakespeare_text)
    assert dm.vocab_size == 66  # 65 distinct chars + <unk>
    assert [len(dm.ids[s]) for s in ("train", "val", "test")] == [int(n * 0.9), int(n * 0.05), int(n * 0.05)]
    assert dm.vocab.decode(dm.ids["val"][:50].tolist()) == shakespeare_text[int(n * 0.9) : int(n * 0.9) + 50]
