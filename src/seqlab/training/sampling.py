"""Generate text from any seqlab model: one token at a time, each drawn from softmax(logits / temperature).

Incremental models (those with `step`: the recurrent family) stream: the prompt is read once, then each new
token costs one `step` on the carried state, whatever its position, so a sample may be far longer than the
training context. Feedforward models re-read a window cropped to the training context for every token.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.data import Vocab
from seqlab.data.vocab import EOS
from seqlab.models.base import SequenceModel


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
    model: SequenceModel,
    prompt_ids: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    context_length: int | None = None,
) -> torch.Tensor:
    """prompt_ids (B, P) -> (B, P + length). An incremental model carries its state and never crops; for the
    others the context is cropped to its last `context_length` tokens, as in nanoGPT: mlp_padded cannot see
    past T_max, and every model was trained on chunks that long."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be positive")
    if model.incremental:
        return _generate_streaming(model, prompt_ids, length, temperature, generator)
    idx = prompt_ids
    for _ in range(length):
        context = idx if context_length is None else idx[:, -context_length:]
        logits = model(context)[:, -1]  # (B, V)
        idx = torch.cat([idx, _draw(logits, temperature, generator)], dim=1)
    return idx


def _generate_streaming(
    model: SequenceModel, prompt_ids: torch.Tensor, length: int, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One pass over the prompt (the fast path of a recurrent model), then one `step` per token."""
    if model.recurrent:
        logits, state = model.forward_with_state(prompt_ids)
        logits = logits[:, -1]  # (B, V)
    else:  # e.g. a KV-cached Transformer: the prompt token by token
        state = model.initial_state(prompt_ids.shape[0], prompt_ids.device)
        for t in range(prompt_ids.shape[1]):
            logits, state = model.step(prompt_ids[:, t], state)
    new = []
    for i in range(length):
        next_id = _draw(logits, temperature, generator)  # (B, 1)
        new.append(next_id)
        if i < length - 1:  # the last token needs no logits
            logits, state = model.step(next_id[:, 0], state)
    return torch.cat([prompt_ids, *new], dim=1)


def _draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) -> one id per row (B, 1), drawn from softmax(logits / temperature)."""
    return torch.multinomial(torch.softmax(logits.float() / temperature, dim=-1), 1, generator=generator)


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
