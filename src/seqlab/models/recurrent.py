"""What rnn, lstm and gru share: embedding -> a stack of fused single-layer modules -> head, and the same
stack as an explicit one-step loop over the same weights.

A subclass names its fused module (`fused`: nn.RNN, nn.LSTM or nn.GRU), its state (`state_names`) and writes
`cell(layer, x, state)`: one step of one layer, in plain tensor operations on that layer's own parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.errors import ConfigError

State = tuple[torch.Tensor, ...]  # one tensor per name in state_names, each (num_layers, B, H)


class Recurrent(nn.Module):
    """Stacked recurrent layers. Dropout acts on every non-recurrent connection (the embedding, between
    layers, before the head), never on the recurrence, as in Zaremba et al. 2014 and pytorch/examples'
    word_language_model. With `residual`, layers 2..L add their input to their output (x + layer(x)); the
    first layer's input is the embedding, of another width. `tie_weights` shares the embedding and output
    matrices (Press & Wolf 2017). `init_range` draws every parameter from U(±init_range) (Zaremba et al.).
    """

    fused: type[nn.RNNBase]
    state_names: tuple[str, ...] = ("h",)

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        hidden_size: int = 256,
        emb_dim: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        residual: bool = False,
        tie_weights: bool = False,
        init_range: float | None = None,
        **fused_kwargs,
    ) -> None:
        super().__init__()  # context_length is accepted and unused: nothing here depends on the length
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout={dropout}: must be in [0, 1)")
        if tie_weights and emb_dim != hidden_size:
            raise ConfigError(
                f"model.tie_weights=true needs model.emb_dim ({emb_dim}) == model.hidden_size ({hidden_size})"
            )
        self.hidden_size, self.num_layers, self.residual = hidden_size, num_layers, residual
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        sizes = [emb_dim] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(self.fused(n, hidden_size, batch_first=True, **fused_kwargs) for n in sizes)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if init_range is not None:
            for p in self.parameters():
                nn.init.uniform_(p, -init_range, init_range)
        if tie_weights:
            if init_range is None:  # N(0, 1) embeddings as output weights would start far from uniform
                nn.init.uniform_(self.tok_emb.weight, -0.1, 0.1)
            self.head.weight = self.tok_emb.weight

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(idx)  # (B, T, E)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        like = self.head.weight
        shape = (self.num_layers, batch_size, self.hidden_size)
        return tuple(like.new_zeros(shape, device=device) for _ in self.state_names)

    # --- the fast path: one fused kernel per layer ----------------------------------------------------
    def forward_embedded_with_state(self, e: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """e (B, T, E) -> the top layer's output (B, T, H), after dropout, and the final state."""
        state = self.initial_state(e.shape[0], e.device) if state is None else state
        x, finals = e, []
        for i, layer in enumerate(self.layers):
            hx = tuple(s[i : i + 1] for s in state)  # (1, B, H) each: a single-layer module's state
            out, hx = layer(self.drop(x), hx if len(hx) > 1 else hx[0])  # out (B, T, H)
            finals.append(hx if isinstance(hx, tuple) else (hx,))
            x = x + out if self.residual and i > 0 else out
        return self.drop(x), tuple(torch.cat(s) for s in zip(*finals, strict=True))

    def forward_with_state(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        out, state = self.forward_embedded_with_state(self.embed(idx), state)
        return self.head(out), state  # (B, T, V)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_embedded_with_state(e)[0])  # (B, T, V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed(idx))

    # --- the reference path: one explicit step over the same weights ----------------------------------
    def cell(self, layer: nn.RNNBase, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step of one layer: x (B, in), state (B, H) each -> output (B, H), new state."""
        raise NotImplementedError

    def step_embedded(self, e_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """e_t (B, E) -> what the head reads (B, H), and the next state; the same computation as the fused path."""
        x, new = e_t, []
        for i, layer in enumerate(self.layers):
            out, s = self.cell(layer, self.drop(x), tuple(s[i] for s in state))
            new.append(s)
            x = x + out if self.residual and i > 0 else out
        return self.drop(x), tuple(torch.stack(s) for s in zip(*new, strict=True))

    def step(self, idx_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        out, state = self.step_embedded(self.embed(idx_t), state)  # idx_t (B,) -> out (B, H)
        return self.head(out), state  # (B, V)
