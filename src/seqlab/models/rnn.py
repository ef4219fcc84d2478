import torch
import torch.nn.functional as F
from torch import nn


class RNN(nn.Module):
    """The Elman RNN (Elman 1990): h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), h_0 = 0, the same weights at every step.

    Training uses torch's fused `nn.RNN`. `unroll` runs the same recurrence as an explicit Python loop over
    the same parameters: it is slower, but every h_t is its own autograd node, which the gradient probe needs
    (the fused kernel hides the recurrence from autograd).
    `recurrent_radius` initialises W_hh as an orthogonal matrix times that number, so its spectral radius
    is exactly it: the knob of the seed's "eigenvalue < 1 vanishes, > 1 explodes".
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 256,
        emb_dim: int = 64,
        recurrent_radius: float | None = None,
    ) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.rnn = nn.RNN(emb_dim, hidden_size, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)
        if recurrent_radius is not None:
            nn.init.orthogonal_(self.rnn.weight_hh_l0)
            with torch.no_grad():
                self.rnn.weight_hh_l0.mul_(recurrent_radius)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(idx)  # (B, T, E)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(e)  # (B, T, H)
        return self.head(h)  # (B, T, V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed(idx))

    def unroll(self, e: torch.Tensor) -> list[torch.Tensor]:
        """h_1..h_T, each (B, H), from an explicit loop over the fused module's own weights."""
        r = self.rnn
        x_proj = F.linear(e, r.weight_ih_l0, r.bias_ih_l0)  # (B, T, H): the input part needs no loop
        h = e.new_zeros(e.shape[0], r.hidden_size)
        hs = []
        for t in range(e.shape[1]):
            h = torch.tanh(x_proj[:, t] + F.linear(h, r.weight_hh_l0, r.bias_hh_l0))
            hs.append(h)
        return hs
