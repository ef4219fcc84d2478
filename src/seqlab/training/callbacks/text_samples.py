"""A short text from a fixed prompt at every validation, in the Text tab: see the model learn to write."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from seqlab.training.sampling import sample_text


class TextSamples(L.Callback):
    """The same prompt and seed at every validation, so the samples differ only by what the model learnt."""

    def __init__(self, prompt: str = "", length: int = 200, temperature: float = 0.8, seed: int = 0) -> None:
        super().__init__()
        self.prompt, self.length, self.temperature, self.seed = prompt, length, temperature, seed

    def sample(self, pl_module: L.LightningModule) -> str:
        text, unknown = sample_text(pl_module, self.prompt, self.length, self.temperature, self.seed)
        if unknown:
            rank_zero_warn(f"samples: prompt tokens {unknown} are not in the vocabulary; they read as <unk>")
        return text

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or pl_module.vocab is None:
            return
        text = self.sample(pl_module)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # markdown: a code block keeps line breaks and spaces
                header = f"temperature {self.temperature}, prompt {self.prompt!r}\n\n"
                logger.experiment.add_text("samples", header + "```\n" + text + "\n```", trainer.global_step)
