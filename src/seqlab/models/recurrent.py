"""What rnn, lstm, gru and indrnn share: embedding -> a stack of recurrent layers -> head.

A subclass writes `cell(layer, x, state)`: one step of one layer, in plain tensor operations on that layer's
own parameters, and says what holds those parameters: a fused PyTorch module (`fused`: nn.RNN, nn.LSTM or nn.GRU,
whose kernel is then the fast path, tested equal to the cell loop) or its own `make_layer(input_size)`. Without
a fused module the unrolled cell is the fast path too: a new cell is its `cell`, its `make_layer`, nothing else.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.base import RecurrentModel, State


class Recurrent(RecurrentModel):
    """Stacked recurrent layers. Dropout acts on every non-recurrent connection (the embedding, between
    layers, before the head), never on the recurrence, as in Zaremba et al. 2014 and pytorch/examples'
    word_language_model. With `residual`, layers 2..L add their input to their output (x + layer(x)); the
    first layer's input is the embedding, of another width. `tie_weights` shares the embedding and output
    matrices (Press & Wolf 2017). `init_range` draws every parameter from U(±init_range) (Zaremba et al.).
    """

    fused: type[nn.RNNBase] | None = None

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
        fused_kwargs: dict | None = None,  # extra arguments of the fused module (the rnn's nonlinearity)
    ) -> None:
        super().__init__()  # context_length is accepted and unused: nothing here depends on the length
        if tie_weights and emb_dim != hidden_size:
            raise ConfigError(
                f"model.tie_weights=true needs model.emb_dim ({emb_dim}) == model.hidden_size ({hidden_size})"
            )
        self.hidden_size, self.num_layers, self.residual = hidden_size, num_layers, residual
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        sizes = [emb_dim] + [hidden_size] * (num_layers - 1)
        self.fused_kwargs = fused_kwargs or {}
        self.layers = nn.ModuleList(self.make_layer(n) for n in sizes)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if init_range is not None:
            for p in self.parameters():
                nn.init.uniform_(p, -init_range, init_range)
        if tie_weights:
            if init_range is None:  # N(0, 1) embeddings as output weights would start far from uniform
                nn.init.uniform_(self.tok_emb.weight, -0.1, 0.1)
            self.head.weight = self.tok_emb.weight

    def make_layer(self, input_size: int) -> nn.Module:
        """The module that holds one layer's parameters; `cell` reads them."""
        return self.fused(input_size, self.hidden_size, batch_first=True, **self.fused_kwargs)

    def recurrent_weights(self) -> dict[str, torch.Tensor]:
        return {f"weight_hh_l{i}": layer.weight_hh_l0 for i, layer in enumerate(self.layers)}

    # --- the fast path: one fused kernel per layer, or the cell unrolled ----------------------------------
    def run_layer(self, i: int, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Layer i over a chunk: x (B, T, in), state (B, H) each -> output (B, T, H), final state."""
        layer = self.layers[i]
        if self.fused is not None:
            hx = tuple(s.unsqueeze(0) for s in state)  # (1, B, H) each: a single-layer module's state
            out, hx = layer(x, hx if len(hx) > 1 else hx[0])
            return out, tuple(s.squeeze(0) for s in (hx if isinstance(hx, tuple) else (hx,)))
        outs = []
        for x_t in x.unbind(1):
            out, state = self.cell(layer, x_t, state)
            outs.append(out)
        return torch.stack(outs, dim=1), state

    def forward_embedded_with_state(self, e: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """e (B, T, E) -> logits (B, T, V) and the final state; dropout before every layer and the head."""
        state = self.initial_state(e.shape[0], e.device) if state is None else state
        x, finals = e, []
        for i in range(len(self.layers)):
            out, final = self.run_layer(i, self.drop(x), tuple(s[i] for s in state))  # out (B, T, H)
            finals.append(final)
            x = x + out if self.residual and i > 0 else out
        return self.head(self.drop(x)), tuple(torch.stack(s) for s in zip(*finals, strict=True))

    # --- the reference path: one explicit step over the same weights ----------------------------------
    def cell(self, layer: nn.Module, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
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
