"""seqlab's models, one file each, behind the interface in models/base.py. A model is found from its
conf/model/<name>.yaml (`_target_`), so adding one is its file and its yaml (see models/catalog.py)."""

from seqlab.models.gru import GRU
from seqlab.models.lstm import LSTM
from seqlab.models.mingru import MinGRU
from seqlab.models.mlp_padded import PaddedMLP
from seqlab.models.mlp_window import WindowMLP
from seqlab.models.rnn import RNN
from seqlab.models.ssm import SSM
from seqlab.models.transformer import Transformer
from seqlab.models.unigram import Unigram

__all__ = ["GRU", "LSTM", "RNN", "SSM", "MinGRU", "PaddedMLP", "Transformer", "Unigram", "WindowMLP"]
