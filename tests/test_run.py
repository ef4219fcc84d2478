"""End to end: configs composed as `train.py` would, trained for a few steps, outputs read back."""

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, compose_config
from helpers import scalar_tags, scalars

from seqlab.training.run import train

QUICK = ["trainer.max_steps=6", "trainer.val_check_interval=4", "model.hidden_size=32", "trainer.accelerator=cpu"]
METRIC_KEYS = {"model", "params", "best_val_loss", "best_val_ppl", "test_loss", "test_ppl", "train_tokens"}
METRIC_KEYS |= {"train_tokens_per_s", "wall_s", "status"}


@pytest.mark.slow
@pytest.mark.parametrize("data", ["shakespeare", "ptb"])
@pytest.mark.parametrize("model", ["unigram", "mlp_window", "mlp_padded", "rnn"])
def test_every_model_runs_end_to_end(model: str, data: str, tmp_path: Path):
    if not DATA_DIR.is_dir():
        pytest.skip("corpora not available")
    metrics = train(compose_config([f"model={model}", f"data={data}", *QUICK], tmp_path))
    assert metrics["status"] == "ok"
    assert metrics.keys() >= METRIC_KEYS
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics, default=str))
    assert metrics["best_val_ppl"] == pytest.approx(math.exp(metrics["best_val_loss"]))
    assert metrics["train_tokens"] == 6 * metrics["hparams"]["batch_size"] * metrics["hparams"]["context_length"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert {"val/ppl", "val/loss", "test/ppl", "params"} <= scalar_tags(tmp_path)


@pytest.mark.slow
def test_unigram_matches_count_entropy(shakespeare_text: str, tmp_path: Path):
    """The trained unigram's test perplexity is exp(H), H = cross-entropy of the test chars under train counts."""
    n = len(shakespeare_text)
    train_text = shakespeare_text[: int(0.9 * n)]
    test_text = shakespeare_text[int(0.95 * n) : int(0.95 * n) + int(0.05 * n)]
    counts, total = Counter(train_text), int(0.9 * n)
    scored = test_text[1:]  # the first token of a split has no prediction
    entropy = -sum(math.log(counts[c] / total) for c in scored) / len(scored)  # every test char occurs in train

    overrides = ["model=unigram", "optim.lr=0.05", "trainer.max_steps=400", "trainer.val_check_interval=200"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["test_ppl"] == pytest.approx(math.exp(entropy), rel=0.01)


@pytest.mark.slow
def test_cli_subprocess_on_a_text_file(tiny_text: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", "data=text_file", f"data.path={tiny_text}", *QUICK, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["model"] == "rnn"
    assert math.isfinite(metrics["test_ppl"]) and metrics["train_tokens_per_s"] > 0
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert metrics["code"]["commit"] == (head or None)  # the code this run ran, for its results page
    # validated after steps 4 (val_check_interval) and 6 (the end); Lightning logs them at 0-based steps 3 and 5
    assert scalars(run_dir)["val/ppl"] == [3, 5]
    assert json.loads((run_dir / "vocab.json").read_text())["level"] == "char"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    # the console: Lightning's per-run noise is gone, the bar counts the step budget
    console = done.stdout + done.stderr
    for noise in ("weights_only", "litlogger", "GPU available", "TPU available", "srun", "LeafSpec"):
        assert noise not in console, noise
    assert "steps: 100%" in console and "6/6" in console
    # train.log keeps every validation and the test table
    log = (run_dir / "train.log").read_text()
    assert "step 4: val/loss" in log and "step 6: val/loss" in log and "val/ppl" in log
    assert "test:\n  test/loss " in log and "  test/ppl " in log
