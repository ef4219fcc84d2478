import torch
from torch import nn

from seqlab.models.base import SequenceModel


class PaddedMLP(SequenceModel):
    """The prefix x_1..x_t padded to T_max and fed to one MLP: a weight per absolute position, none shared.

    The first layer has its own (E, H) matrix for every absolute position, so nothing is shared across
    time: the parameter count grows with T_max = context_length, and position T_max + 1 does not exist.
    Position t's pre-activation is sum_{s<=t} W_s e_s + sum_{s>t} W_s pad; both sums for all t come from
    cumulative sums, so the T prefixes cost one pass instead of T.
    """

    def __init__(self, vocab_size: int, context_length: int, hidden_size: int = 256, emb_dim: int = 64) -> None:
        super().__init__()
        self.max_len = context_length
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.pad = nn.Parameter(torch.randn(emb_dim))
        self.per_position = nn.Parameter(
            torch.randn(context_length, emb_dim, hidden_size) / (context_length * emb_dim) ** 0.5
        )
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.head = nn.Linear(hidden_size, vocab_size)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.max_len:
            raise ValueError(f"mlp_padded sees at most {self.max_len} tokens (its T_max), got {idx.shape[1]}")
        return self.tok_emb(idx)  # (B, T, E)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        T = e.shape[1]
        seen = torch.einsum("bte,teh->bth", e, self.per_position[:T]).cumsum(1)  # (B, T, H): sum over s <= t
        pad = torch.einsum("e,teh->th", self.pad, self.per_position)  # (T_max, H)
        unseen = pad.sum(0) - pad.cumsum(0)[:T]  # (T, H): sum over t < s < T_max
        return self.head(torch.tanh(seen + unseen + self.bias))  # (B, T, V)

    @property
    def max_context(self) -> int:
        return self.max_len
