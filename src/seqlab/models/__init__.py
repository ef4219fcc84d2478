"""Every model maps token ids (B, T) to next-token logits (B, T, V), causally.

The shared interface, which the system and the gradient probe rely on:
    embed(idx) -> e (B, T, E)            token embeddings, the input the probe differentiates against
    forward_embedded(e) -> logits        everything after the embedding
    forward(idx) = forward_embedded(embed(idx))
Recurrent models (rnn, lstm, gru; see models/recurrent.py) add a carried state: `state_names`,
`initial_state(B)`, `forward_with_state(idx, state) -> (logits, state)` (the fused fast path),
`step_embedded(e_t, state) -> (out, state)` (one explicit step over the same weights), `head`, and
`step(idx_t, state) -> (logits_t, state)`. A model is recurrent iff it has `forward_with_state`,
incremental iff it has `step`.
"""

from seqlab.models.gru import GRU
from seqlab.models.lstm import LSTM
from seqlab.models.mlp_padded import PaddedMLP
from seqlab.models.mlp_window import WindowMLP
from seqlab.models.rnn import RNN
from seqlab.models.unigram import Unigram

__all__ = ["GRU", "LSTM", "RNN", "PaddedMLP", "Unigram", "WindowMLP"]
