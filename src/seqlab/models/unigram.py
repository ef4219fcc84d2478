import torch
from torch import nn

from seqlab.models.base import SequenceModel


class Unigram(SequenceModel):
    """P(x_t) with no context at all: the floor every other model must beat."""

    def __init__(self, vocab_size: int, context_length: int, hidden_size: int | None = None) -> None:
        super().__init__()  # hidden_size is accepted (and unused) so sweeps over it can include this baseline
        self.logits = nn.Parameter(torch.zeros(vocab_size))  # uniform at init: loss = ln V

    @property
    def max_context(self) -> int:
        return 0

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, 1, device=idx.device)  # (B, T, 1); nothing depends on it

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*e.shape[:2], -1)  # (B, T, V)
