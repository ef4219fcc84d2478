"""Generate text from any seqlab model: one token at a time, each drawn from softmax(logits / temperature)."""

from __future__ import annotations

import torch
from torch import nn

from seqlab.data import Vocab
from seqlab.data.vocab import EOS


def encode_prompt(vocab: Vocab, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Prompt -> ids (1, P), and the tokens the vocabulary lacks (mapped to <unk>).

    An empty prompt starts at the beginning of a line ("\\n", or <eos> for words), so there is always context.
    """
    tokens = list(prompt) if vocab.level == "char" else prompt.split()
    if not tokens:
        tokens = ["\n" if vocab.level == "char" else EOS]
    unknown = [t for t in tokens if t not in vocab.index]
    return vocab.encode(tokens)[None], unknown


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    context_length: int | None = None,
) -> torch.Tensor:
    """prompt_ids (B, P) -> (B, P + length). The context is cropped to its last `context_length` tokens,
    as in nanoGPT: mlp_padded cannot see past T_max, and every model was trained on chunks that long."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be positive")
    idx = prompt_ids
    for _ in range(length):
        context = idx if context_length is None else idx[:, -context_length:]
        logits = model(context)[:, -1] / temperature  # (B, V)
        next_id = torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    return idx


def sample_text(system: nn.Module, prompt: str, length: int, temperature: float, seed: int) -> tuple[str, list[str]]:
    """Continue `prompt` with a trained LanguageModel (its vocabulary, its context length): the text, and the
    prompt tokens its vocabulary lacks (read as <unk>). The same seed gives the same text."""
    prompt_ids, unknown = encode_prompt(system.vocab, prompt)
    generator = torch.Generator(device=system.device).manual_seed(seed)
    ids = generate(
        system.model,
        prompt_ids.to(system.device),
        length,
        temperature,
        generator,
        context_length=system.hparams.context_length,
    )
    return system.vocab.decode(ids[0].tolist()), unknown
