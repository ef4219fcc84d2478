import torch
from torch import nn

from seqlab.models.base import SequenceModel


class WindowMLP(SequenceModel):
    """A neural n-gram (Bengio et al. 2003): embed the last `window` tokens, concatenate, MLP.

    The seed's attempt 1. Concatenating k embeddings and applying one linear layer is a 1-D convolution
    of width k over the embedded sequence, so all T positions come out of one `conv1d` without ever
    materialising the (B, T, k * E) windows. Positions before the chunk start see a learned padding vector.
    """

    def __init__(
        self, vocab_size: int, context_length: int, hidden_size: int = 256, emb_dim: int = 64, window: int | None = None
    ) -> None:
        super().__init__()
        self.window = window or context_length
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.pad = nn.Parameter(torch.randn(emb_dim))
        self.concat_to_hidden = nn.Conv1d(emb_dim, hidden_size, kernel_size=self.window)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        B, _, E = e.shape
        padded = torch.cat([self.pad.expand(B, self.window - 1, E), e], dim=1)  # (B, T + k - 1, E)
        h = torch.tanh(self.concat_to_hidden(padded.transpose(1, 2)))  # (B, H, T): position t sees e[t-k+1..t]
        return self.head(h.transpose(1, 2))  # (B, T, V)

    @property
    def max_context(self) -> int:
        return self.window
