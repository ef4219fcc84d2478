"""Every model seqlab has, found from conf/model/*.yaml: the tables, the tests and the tools list models from
here, so a new model (its file and its yaml) is in all of them with no other edit."""

from __future__ import annotations

from functools import cache
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from seqlab.models.base import FAMILIES, SequenceModel
from seqlab.paths import MODEL_CONFIGS


def model_names() -> list[str]:
    """The `model=` choices, in display order: feedforward, recurrent, state-space, attention (as the properties
    table reads), then by name."""
    names = [p.stem for p in MODEL_CONFIGS.glob("*.yaml")]
    return sorted(names, key=display_order)


def model_config(name: str) -> DictConfig:
    return OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")


@cache
def model_class(name: str) -> type[SequenceModel]:
    return get_class(str(model_config(name)._target_))


def display_order(name: str) -> tuple[int, int, str]:
    """A sort key for tables: unigram, mlp_window, mlp_padded and rnn first, in that order, then each family, then the name.
    A name that is no model (e.g. "rnn (no cache)") sorts by its first word, unknown ones last."""
    base = name.split(" ")[0]
    seed = ("unigram", "mlp_window", "mlp_padded", "rnn")
    if base in seed:
        return (0, seed.index(base), name)
    if not (MODEL_CONFIGS / f"{base}.yaml").is_file():
        return (len(FAMILIES) + 1, 0, name)
    return (1 + FAMILIES.index(model_class(base).family), 0, name)


def build_model(name: str, vocab_size: int, context_length: int, **overrides: Any) -> SequenceModel:
    """conf/model/<name>.yaml with `overrides` (e.g. hidden_size=32), built for a vocabulary and a context."""
    cfg = model_config(name)
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate(cfg, vocab_size=vocab_size, context_length=context_length)
