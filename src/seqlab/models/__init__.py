"""Every model maps token ids (B, T) to next-token logits (B, T, V), causally.

The shared interface, which the system and the gradient probe rely on:
    embed(idx) -> e (B, T, E)            token embeddings, the input the probe differentiates against
    forward_embedded(e) -> logits        everything after the embedding
    forward(idx) = forward_embedded(embed(idx))
Recurrent models add `unroll(e) -> list of h_t` (an explicit loop over the same weights) and `head`.
"""

from seqlab.models.mingru import MinGRU
from seqlab.models.mlp_padded import PaddedMLP
from seqlab.models.mlp_window import WindowMLP
from seqlab.models.rnn import RNN
from seqlab.models.ssm import SSM
from seqlab.models.transformer import Transformer
from seqlab.models.unigram import Unigram

__all__ = ["RNN", "PaddedMLP", "Unigram", "WindowMLP"]
__all__ += ["SSM", "MinGRU", "Transformer"]
