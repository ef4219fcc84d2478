from seqlab.data.base import TokenDataModule
from seqlab.data.batches import IGNORE
from seqlab.data.datamodule import TextDataModule
from seqlab.data.vocab import Vocab, tokenize

__all__ = ["IGNORE", "TextDataModule", "TokenDataModule", "Vocab", "tokenize"]
