"""The model interface. Every seqlab model maps token ids (B, T) to next-token logits (B, T, V), causally, and says
what it is once, in its class: the training system, sampling, the gradient profile, the health callback, probe,
properties, compare and the tests read these declarations (and find models from conf/model/*.yaml), never
`hasattr` probes or lists of names.

    SequenceModel                      every model
      embed(idx) -> e (B, T, E)        the input the gradient profile differentiates against
      forward_embedded(e) -> logits    everything after the embedding
      forward(idx) = forward_embedded(embed(idx))
      max_context                      tokens the prediction at t reads, t's own included; None: unbounded
    RecurrentModel(SequenceModel)      a state of fixed size carries the whole history
      initial_state(B) -> state        one tensor per name in state_names
      step_embedded(e_t, state) -> (out, state), head(out) -> logits_t     one step, the reference
      forward_embedded_with_state(e, state) -> (logits, state)   the fast path; by default the step loop
      forward_with_state(idx, state), step(idx_t, state), prefill(idx), state_bytes(B, length)

A recurrent model writes `step_embedded` (and `head`); a faster `forward_embedded_with_state` is optional, and
then tests/test_models.py holds it to the step loop in float64.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

State = tuple[torch.Tensor, ...]
FAMILIES = (
    "feedforward",
    "RNN",
    "State-Space",
    "Transformer",
)  # the properties table's columns, and the models before them


class SequenceModel(nn.Module):
    family: ClassVar[str] = "feedforward"  # its column in the properties table, one of FAMILIES
    recurrent: ClassVar[bool] = False  # carries a fixed-size state: the RecurrentModel methods
    incremental: ClassVar[bool] = False  # `prefill` and `step` generate token by token (recurrent, or a KV cache)
    state_names: ClassVar[tuple[str, ...]] = ()
    gate_names: ClassVar[tuple[str, ...]] = ()  # a gated cell's weight blocks, in order (health: per-gate spectra)
    sigmoid_gates: ClassVar[tuple[str, ...]] = ()  # those in (0, 1), whose saturation the health callback counts

    tok_emb: nn.Embedding

    @property
    def max_context(self) -> int | None:
        """The most tokens the prediction at a position reads, its own included; None: every earlier token."""
        return None

    @property
    def gated(self) -> bool:
        return bool(self.sigmoid_gates)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(idx)  # (B, T, E)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed(idx))  # (B, T, V)

    def state_bytes(self, batch_size: int = 1, length: int | None = None) -> int:
        """What the model holds between tokens to continue a stream `length` tokens long (None: a full window):
        here the ids of the window it re-reads (int64); a recurrent state is fixed, a KV cache grows with length."""
        bound = self.max_context  # None: it reads every earlier token
        reach = bound if length is None else length if bound is None else min(length, bound)
        return batch_size * (reach or 0) * 8

    def recurrent_weights(self) -> dict[str, torch.Tensor]:
        """{label: the matrix (or diagonal) that multiplies the previous state}, for the health callback's
        σ_max; empty where there is none."""
        return {}


class RecurrentModel(SequenceModel):
    family = "RNN"
    recurrent = incremental = True
    state_names = ("h",)

    num_layers: int
    hidden_size: int
    head: nn.Module

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Zeros, one (num_layers, B, hidden_size) tensor per state name; override for other shapes."""
        w = self.head.weight
        shape = (self.num_layers, batch_size, self.hidden_size)
        return tuple(torch.zeros(shape, device=device or w.device, dtype=w.dtype) for _ in self.state_names)

    def state_bytes(self, batch_size: int = 1, length: int | None = None) -> int:
        """What the model holds between tokens, from its own initial_state (float32 unless trained otherwise); the
        same after any number of tokens, so `length` changes nothing."""
        return sum(s.nelement() * s.element_size() for s in self.initial_state(batch_size, torch.device("cpu")))

    def step_embedded(self, e_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """e_t (B, E) -> what the head reads (B, H) and the next state."""
        raise NotImplementedError

    def forward_embedded_with_state(self, e: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """e (B, T, E) -> logits (B, T, V) and the final state: the step loop, unless a subclass has a faster way."""
        state = self.initial_state(e.shape[0], e.device) if state is None else state
        outs = []
        for e_t in e.unbind(1):
            out, state = self.step_embedded(e_t, state)
            outs.append(out)
        return self.head(torch.stack(outs, dim=1)), state

    def forward_with_state(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self.forward_embedded_with_state(self.embed(idx), state)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded_with_state(e)[0]

    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self.forward_with_state(idx)

    def step(self, idx_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        out, state = self.step_embedded(self.embed(idx_t), state)  # idx_t (B,) -> out (B, H)
        return self.head(out), state  # (B, V)
