"""The progress bar counts steps of the budget across epochs; Lightning's per-run noise is filtered precisely."""

import logging
import warnings
from pathlib import Path

import lightning as L

from seqlab.data import TextDataModule
from seqlab.training.callbacks import BudgetProgressBar
from seqlab.training.callbacks.progress import quiet_lightning
from seqlab.training.system import LanguageModel


def test_bar_counts_the_step_budget_across_epochs(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("to be, or not to be: that is the question.\n" * 30)
    dm = TextDataModule("text_file", path=str(tmp_path / "tiny.txt"), context_length=16, batch_size=4)
    dm.setup("fit")
    system = LanguageModel(
        model={"_target_": "seqlab.models.RNN", "hidden_size": 8, "emb_dim": 4},
        optim={"_target_": "torch.optim.AdamW", "lr": 1e-3},
        vocab_size=dm.vocab_size,
        context_length=16,
    )
    bar = BudgetProgressBar(refresh_rate=1)
    trainer = L.Trainer(
        max_steps=25, max_epochs=-1, logger=False, callbacks=[bar], enable_checkpointing=False, limit_val_batches=0
    )
    trainer.fit(system, datamodule=dm)
    assert trainer.current_epoch >= 2  # the budget spans several epochs of this text
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (25, 25)
    assert bar.train_progress_bar.desc.startswith("steps")


def test_quiet_lightning_drops_only_the_known_noise(caplog) -> None:
    quiet_lightning()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero.info("GPU available: True (cuda), used: True")  # says something: kept
        rank_zero.info("`Trainer.fit` stopped: `max_steps=6` reached.")
    assert [r.getMessage() for r in caplog.records] == [
        "GPU available: True (cuda), used: True",
        "`Trainer.fit` stopped: `max_steps=6` reached.",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()  # catch_warnings restores the filters on exit, so set them inside
        warnings.warn(
            "The `srun` command is available on your system but is not used. HINT: ...", UserWarning, stacklevel=1
        )
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", UserWarning, stacklevel=1
        )  # not a deprecation
        warnings.warn("The dataloader does not have many workers", UserWarning, stacklevel=1)
    assert [str(w.message)[:12] for w in caught] == ["`isinstance(", "The dataload"]
