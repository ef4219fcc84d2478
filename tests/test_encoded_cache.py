"""The encoded corpus cache: a hit equals a fresh encoding, and a changed text or setting is never a stale hit."""

from pathlib import Path

import pytest
import torch

from seqlab.data import TextDataModule, datamodule


def encode(path: Path, *, cache: bool = True, level: str = "char", splits=(0.9, 0.05, 0.05)) -> TextDataModule:
    dm = TextDataModule(corpus="text_file", path=str(path), level=level, context_length=8, batch_size=2, splits=splits)
    dm.use_cache = cache
    dm.setup()
    return dm


def same(a: TextDataModule, b: TextDataModule) -> bool:
    return a.vocab.tokens == b.vocab.tokens and all(torch.equal(a.ids[s], b.ids[s]) for s in ("train", "val", "test"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEQLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "encoded"


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_hit_equals_a_fresh_encoding(tiny_text: Path, cache: Path, level: str, monkeypatch: pytest.MonkeyPatch):
    first = encode(tiny_text, level=level)
    assert len(list(cache.glob("*.pt"))) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized although cached")

    monkeypatch.setattr(datamodule, "tokenize", no_tokenizing)
    hit = encode(tiny_text, level=level)
    monkeypatch.undo()
    fresh = encode(tiny_text, level=level, cache=False)
    assert same(hit, fresh) and same(first, fresh)
    assert hit.ids["train"].dtype == torch.long


def test_a_changed_text_or_setting_is_a_new_entry(tiny_text: Path, cache: Path):
    before = encode(tiny_text)
    tiny_text.write_text(tiny_text.read_text().replace("e", "E"))
    after = encode(tiny_text)
    assert not same(before, after) and same(after, encode(tiny_text, cache=False))
    resplit = encode(tiny_text, splits=(0.8, 0.1, 0.1))
    assert same(resplit, encode(tiny_text, cache=False, splits=(0.8, 0.1, 0.1)))
    assert len(list(cache.glob("*.pt"))) == 3


def test_an_unreadable_or_unwritable_cache_is_skipped(tiny_text: Path, cache: Path):
    encode(tiny_text)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a tensor file")
    assert same(encode(tiny_text), encode(tiny_text, cache=False))  # encoded again, and rewritten
    assert torch.load(entry, weights_only=True)["tokens"]
    entry.unlink()
    cache.chmod(0o500)
    try:
        assert same(encode(tiny_text), encode(tiny_text, cache=False))
    finally:
        cache.chmod(0o700)
