"""The encoded corpus (vocabulary and id tensors per split), cached across runs.

Tokenising and encoding Tiny Shakespeare or PTB on every start costs more than reading a tensor back, and every
run of a sweep repeats it. The key is the sha256 of the texts with everything that shapes the result (level,
split fractions, this file's FORMAT), so a changed text or setting is a new entry, never a stale hit. The cache
lives in `$SEQLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/seqlab`, else `~/.cache/seqlab` (not beside the corpus,
which may be read-only). A cache that cannot be read or written is skipped: it only ever saves time.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

FORMAT = 1  # bump when tokenize/Vocab change what a text encodes to


def cache_dir() -> Path:
    if os.environ.get("SEQLAB_CACHE_DIR"):
        return Path(os.environ["SEQLAB_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seqlab"


def key(texts: Sequence[str], level: str, splits: Sequence[float]) -> str:
    digest = hashlib.sha256(f"{FORMAT}|{level}|{list(splits)}|{len(texts)}".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def load(name: str) -> dict | None:
    """{"tokens": vocab tokens, "train"/"val"/"test": id tensors}, or None when not cached (or unreadable)."""
    path = cache_dir() / "encoded" / f"{name}.pt"
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or foreign file: encode again (and overwrite it)
        return None


def save(name: str, encoded: dict) -> None:
    folder = cache_dir() / "encoded"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        os.close(fd)
        try:
            torch.save(encoded, tmp)
            os.replace(tmp, folder / f"{name}.pt")  # atomic: a concurrent reader sees all of it or nothing
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # read-only or full: the run goes on uncached
