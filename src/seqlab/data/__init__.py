from seqlab.data.datamodule import IGNORE, TextDataModule
from seqlab.data.vocab import Vocab, tokenize

__all__ = ["IGNORE", "TextDataModule", "Vocab", "tokenize"]
