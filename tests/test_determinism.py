"""The same config and seed give the same numbers, bit for bit, on CPU; another seed gives others."""

from pathlib import Path

from conftest import compose_config

from seqlab.training.run import train

TINY = ["data.context_length=32", "data.batch_size=16", "model.hidden_size=32", "model.emb_dim=16"]
TINY += ["trainer.accelerator=cpu", "trainer.max_steps=12", "trainer.val_check_interval=6", "callbacks.progress=null"]


def val_and_test_ppl(tiny_text: Path, out_dir: Path, seed: int) -> tuple[float, float]:
    overrides = ["data=text_file", f"data.path={tiny_text}", "model=rnn", f"seed={seed}", *TINY]
    metrics = train(compose_config(overrides, out_dir))
    return metrics["best_val_ppl"], metrics["test_ppl"]


def test_same_seed_same_val_perplexity(tiny_text: Path, tmp_path: Path):
    first = val_and_test_ppl(tiny_text, tmp_path / "a", seed=7)
    again = val_and_test_ppl(tiny_text, tmp_path / "b", seed=7)
    other = val_and_test_ppl(tiny_text, tmp_path / "c", seed=8)
    assert first == again  # exact: same init, same batches, deterministic CPU kernels
    assert other[0] != first[0]  # the seed reaches the init and the batch order, so the check can fail
